"""`make ablation` in one place: `plan` (what runs and where, from the config alone), `run` (the steps, each one
of the project's CLIs, as the launcher runs them), `table` (rows, claims, RESULTS.md, results.json and the HTML
report, read back from what the steps wrote; no torch)."""
