"""What a stack leaves for a person: `markdown` (submission CSVs, the md/json report, plots) and `html` (the
self-contained HTML report, and the page pieces the ablation report uses). No torch."""
