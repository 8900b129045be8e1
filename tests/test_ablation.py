"""`make ablation` on the 32 px fixture: ablation.py runs the recipe, the target variants, a soup, the stacks and
a pseudo-label round through the real CLIs for two seeds, and writes a table with every row present and finite
for both seeds (the numbers belong in RESULTS.md, not here), and a verdict for every claim. The verdicts'
statistics and the seeds' layout: tests/test_ablation_verdicts.py."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fold0123.ablation.plan import CLAIM_STEPS, steps_for, task_confs
from fold0123.ablation.table import Row, judge
from fold0123.common.config import load_config
from fold0123.common.schema import RecipeConfig
from fold0123.launcher.recipe import shared
from tests.conftest import ROOT, tiny_recipe, write


def test_judge_compares_fold_by_fold_against_the_spread():
    base = Row.scored("b", "base", "run", [1.0, 1.1, 0.9])
    clearly = Row.scored("a", "better", "run", [0.8, 0.92, 0.71])
    noisy = Row.scored("n", "noisy", "run", [0.7, 1.3, 0.9])
    assert judge("a beats b", clearly, base).verdict == "confirmed"
    assert judge("b beats a", base, clearly).verdict == "refuted"
    assert judge("n beats b", noisy, base).verdict == "not significant"
    assert judge("missing", None, base).verdict == "not measured"


def test_the_recipe_checkpoints_dir_moves_every_run_the_stack_and_the_table(tmp_path: Path):
    """One recipe key puts a second dataset's (or seed's) runs beside the first's: the runs and the stack get it
    (`shared`), and the table reads the runs where they are (`task_confs`)."""
    recipe = tiny_recipe(tmp_path, ("target",))
    own = load_config(recipe, schema=RecipeConfig)
    ((_, target),) = task_confs(own).values()
    assert own.checkpoints_dir is None and "checkpoints_dir" not in " ".join(shared(own))
    moved = load_config(recipe, [f"checkpoints_dir={tmp_path / 'tags'}"], schema=RecipeConfig)
    ((_, target_moved),) = task_confs(moved).values()
    assert Path(target_moved.checkpoints_dir) == tmp_path / "tags" != Path(target.checkpoints_dir)
    assert shared(moved)[-2:] == ["--set", f"checkpoints_dir={tmp_path / 'tags'}"]


# `make test` runs the ablation end to end for one seed and one claim, the baseline one (its rows: the baselines,
# the stacks, the post-processing, on the target task's runs: about 1.5 min); `make test-ablation` runs every row
# over two seeds (about 8 min), which adds the variants' runs, the second seed's layout and the halves (the
# verdict rule itself, and the driver's choice of steps per claim: tests/test_ablation_verdicts.py)
SEEDS = [int(s) for s in os.environ.get("ABLATION_TEST_SEEDS", "0").split(",")]
CLAIMS_ASKED = os.environ.get("ABLATION_TEST_CLAIMS", "baseline")  # `all`, or plan.CLAIMS keys split by commas
CLAIMS = [] if CLAIMS_ASKED == "all" else CLAIMS_ASKED.split(",")
EVERY_ROW = {"1", "2", "3", "4", "4-identity", "5-none", "5-layer34", "6-target", "6-onehot", "6-onehot-direct",
             "7-soup", "7-last", "8", "8-infold", "9", "10", "11", "12"}


# the baseline claim's rows stack one task's runs as well as two (row 6-onehot wants a onehot task)
TASKS = ("target",) if CLAIMS == ["baseline"] else ("target", "onehot")


@pytest.fixture
def ablation_conf(tmp_path: Path) -> str:
    """The recipe of tests/test_recipe.py with TASKS of 2 epochs, and an ablation of it over SEEDS."""
    recipe = tiny_recipe(tmp_path, TASKS, "epochs: 2\n")  # no train rows: the ablation evaluates
    # them itself for row 8-infold, as for the demo's presets
    return write(tmp_path / "ablation.yml", f"recipe: {recipe}\nout_dir: {tmp_path / 'results'}\n"
                                            "freeze_modes: [none, layer34]\nsoup: 2\npseudo: true\n"
                                            f"seeds: {SEEDS}\n")


@pytest.mark.integration
def test_ablation_end_to_end_judges_the_claims_whose_rows_ran(ablation_conf: str, tmp_path: Path):
    env = {**os.environ, "TMUX_TMPDIR": str(tmp_path)}  # a private tmux server
    env.pop("TMUX", None)
    claims_args = ["--claims", *CLAIMS] if CLAIMS else []
    done = subprocess.run([sys.executable, "ablation.py", "--conf", ablation_conf, *claims_args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "results" / "results.json").read_text())
    rows = {r["id"]: r for r in results["rows"]}
    measured = {id_ for id_, row in rows.items() if row["folds"]}
    if CLAIMS == ["baseline"]:  # its steps: the baselines, the stacks, post-processed; no variant is trained
        assert {"1", "2", "8", "8-infold", "9", "10"} <= measured, measured
        assert not measured & {"3", "5-layer34", "7-soup", "7-last", "11"}, measured
    elif not CLAIMS:
        assert EVERY_ROW - {"12"} <= measured, EVERY_ROW - measured
        assert rows["12"]["note"].startswith("skipped")  # the tag row: the fixture's test objects have no tags
    for id_ in measured:
        row = rows[id_]
        assert len(row["folds"]) == 3 and all(math.isfinite(v) for v in row["folds"]), row
        assert row["seeds"] == SEEDS and (row["seed_std"] is not None) == (len(SEEDS) > 1), row
        assert math.isfinite(row["oof"]) and math.isfinite(row["answers"]), row
    assert len(results["claims"]) == 8
    judged = {c["key"] for c in results["claims"] if c["verdict"] != "not measured"}
    ran = steps_for(CLAIMS or None)
    assert judged == {key for key, steps in CLAIM_STEPS.items() if steps <= ran}, judged  # and only those
    assert all(c["verdict"] in ("confirmed", "refuted", "not significant", "unstable")
               for c in results["claims"] if c["key"] in judged)
    assert all(c["seeds"] == SEEDS and len(c["halves"]) == (2 if len(SEEDS) > 1 else 0)
               for c in results["claims"] if c["key"] in judged)
    for seed in SEEDS[1:]:  # a further seed's runs beside the first's
        assert (tmp_path / "runs" / f"seed{seed}" / "target_3fold0").is_dir()
    assert "| 10 | 9 + tuned post-processing" in (tmp_path / "results" / "RESULTS.md").read_text()
    assert (tmp_path / "runs" / f"{TASKS[-1]}_3fold2" / "eval" / "epoch2_train.npz").is_file()  # row 8-infold's
