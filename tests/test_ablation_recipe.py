"""The training-recipe rows (ablation_recipe.py, fold0123.ablation.variants): the rows and claims assembled from
synthetic run directories (a known effect is confirmed, in either metric direction), the config's checks, the
evaluations a variant's epoch asks for, and one end-to-end run of two variants over two seeds on the 32 px fixture
(every row and a verdict per claim; a rerun trains nothing)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from fold0123.ablation.variants import (base_recipe, evaluation_args, selected, variant_config, seed_recipe,
                                       write_table)
from fold0123.common import rundir
from fold0123.common.config import ConfigError, load_config
from fold0123.common.errors import UsageError
from fold0123.common.io import write_json
from fold0123.common.schema import RecipeAblationConfig
from tests.conftest import ROOT, make_class_dataroot, tiny_recipe, write

SEEDS = [0, 1]


def fake_run(run: Path, tag: str, value: float, metric: str = "rmse", lower: bool = True, epoch: int = 1) -> None:
    """A finished fold run's eval files as the evaluator leaves them (only what the readers look at)."""
    eval_dir = rundir.eval_dir(run)
    eval_dir.mkdir(parents=True, exist_ok=True)
    (eval_dir / f"{tag}_oof.npz").write_bytes(b"")
    write_json(rundir.metrics_path(run, tag), {"epoch": epoch, "task": "target", "split": run.name[-6:], "n": 10,
                                               "primary": metric, "lower_is_better": lower,
                                               "views": {"mean": {metric: value}, "identity": {metric: value}}})


def synthetic(tmp_path: Path, lower: bool) -> RecipeAblationConfig:
    """Runs of 3 variants x 2 seeds x 3 folds: `better` beats `base` by 0.05 on every fold (a little noise), `same`
    is the base plus noise; `ema` reads better's runs at their EMA tag (0.001 worse); baselines.json for each seed."""
    recipe = write(tmp_path / "recipe.yml", f"dataset: null\ndataroot: {tmp_path / 'data'}\nanswers: null\n"
                                            "word2vec: null\ndevices: cpu\npretext: null\ntasks: []\n")
    conf = write(tmp_path / "rows.yml", f"""recipe: {recipe}
runs_dir: {tmp_path / 'runs'}
out_dir: {tmp_path / 'out'}
seeds: {SEEDS}
variants:
  base: {{}}
  better: {{set: [stem=small], claim: better beats base}}
  same: {{set: [width=32]}}
  ema: {{runs: better, epoch: ema, against: better}}
""")
    cfg = load_config(conf, schema=RecipeAblationConfig)
    rng = np.random.default_rng(0)
    score = (lambda loss: loss) if lower else (lambda loss: 1 - loss)  # accuracy = 1 - a loss  # noqa: E731
    metric = "rmse" if lower else "accuracy"
    for seed in SEEDS:
        fold = np.array([0.90, 0.95, 1.00]) + 0.01 * seed
        for exp, shift in (("base", 0.0), ("better", -0.05), ("same", 0.0)):
            for k in range(3):
                loss = fold[k] + shift + 0.002 * rng.normal()
                run = tmp_path / "runs" / f"seed{seed}" / f"{exp}_3fold{k}"
                fake_run(run, "epoch1", score(loss), metric, lower)
                if exp == "better":
                    fake_run(run, "ema1", score(loss + 0.001), metric, lower)
        out = tmp_path / "out" / "baselines" / f"seed{seed}"
        scores = [score(loss + 0.2) for loss in fold]
        write_json(out / "baselines.json", {"rows": [
            {"name": "constant mean" if lower else "majority class", "fold_scores": scores, "oof": None,
             "seconds": 0.1},
            {"name": "pixel statistics LightGBM", "fold_scores": scores, "oof": None, "seconds": 2.0}]})
    write_json(tmp_path / "out" / "timings.json", {f"seed {s}: {v}": t for s in SEEDS
                                                  for v, t in (("base", 100.0), ("better", 120.0), ("same", 90.0))})
    return cfg


@pytest.mark.parametrize("lower", [True, False], ids=["rmse", "accuracy"])
def test_rows_and_claims_from_synthetic_runs(tmp_path: Path, lower: bool):
    cfg = synthetic(tmp_path, lower)
    results = write_table(cfg, {"title": "t", "preset": "rows.yml", "command": "python ablation_recipe.py"})
    rows = {r["id"]: r for r in results["rows"]}
    assert list(rows) == ["base", "better", "same", "ema", "constant", "pixel_lgbm"]
    for row in rows.values():
        assert row["seeds"] == SEEDS and len(row["folds"]) == 3 and row["seed_std"] is not None, row
    assert rows["better"]["seconds"] == 120.0 and rows["ema"]["seconds"] == 120.0 and rows["base"]["seconds"] == 100
    claims = {c["key"]: c for c in results["claims"]}
    assert list(claims) == ["better", "same", "ema", "baseline"]
    assert claims["better"]["claim"] == "better beats base" and claims["better"]["rows"] == ["better", "base"]
    assert claims["better"]["verdict"] == "confirmed" and claims["better"]["difference"] < 0
    assert claims["better"]["cost_seconds"] == 20.0 and len(claims["better"]["halves"]) == 2
    assert claims["same"]["claim"] == "same beats base" and claims["same"]["verdict"] != "confirmed"
    assert claims["ema"]["rows"] == ["ema", "better"]
    assert claims["baseline"]["rows"] == ["better", "pixel_lgbm"] and claims["baseline"]["verdict"] == "confirmed"
    assert results["metric"] == ("rmse" if lower else "accuracy") and results["lower_is_better"] is lower
    text = (tmp_path / "out" / "RESULTS.md").read_text()
    assert "| better | stem=small @ last |" in text and "**confirmed**" in text and "python ablation_recipe.py" in text
    assert ("negated score" in text) is not lower
    assert json.loads((tmp_path / "out" / "results.json").read_text())["claims"][0]["verdict"] == "confirmed"


def test_a_missing_seed_is_not_measured(tmp_path: Path):
    cfg = synthetic(tmp_path, True)
    cfg = cfg.model_copy(update={"seeds": [0, 1, 2]})
    results = write_table(cfg, {"title": "t", "preset": "p", "command": "c"})
    rows = {r["id"]: r for r in results["rows"]}
    assert rows["better"]["seeds"] == SEEDS and "measured on seeds 0, 1 of 0, 1, 2" in rows["better"]["note"]
    assert all(c["verdict"] == "not measured" for c in results["claims"])


def test_the_config_checks_names_and_keys(tmp_path: Path):
    def bad(text: str, message: str) -> None:
        with pytest.raises(ConfigError, match=message):
            load_config(write(tmp_path / "c.yml", text), schema=RecipeAblationConfig)

    bad("variants: {a: {}}\n", "base_variant 'base' is not a variant")
    bad("variants: {base: {set: [seed=3]}}\n", "seed is the ablation's own")
    bad("task_set: [checkpoints_dir=x]\n", "checkpoints_dir is the ablation's own")
    bad("variants: {base: {set: [lr]}}\n", "expected key=value")
    bad("variants: {base: {}, a: {runs: b}}\n", "must name a variant that trains")
    bad("variants: {base: {}, a: {runs: base, set: [lr=1]}}\n", "no set, pretext or clean_from of its own")
    bad("variants: {base: {}, a: {clean_from: a}}\n", "clean_from 'a' must name another variant that trains")
    bad("variants: {base: {epoch: best}}\n", "epoch")
    bad("seeds: [1, 1]\n", "each seed once")
    shipped = ROOT / "parameters" / "ablation" / "recipe" / "atmacup_cpu.yml"  # it documents every key
    assert set(yaml.safe_load(shipped.read_text())) == set(RecipeAblationConfig.model_fields) - {"exp"}
    cfg = load_config(shipped, schema=RecipeAblationConfig)
    assert selected(cfg, ["soup"]) == ["base", "soup"]  # the soup reads the base's runs: nothing else trains
    with pytest.raises(UsageError, match="unknown variant 'nope'"):
        selected(cfg, ["nope"])
    recipe = seed_recipe(cfg, 1)
    base = variant_config(cfg, "base", recipe)  # the soup reading its runs raises keep_last
    assert (base.exp, base.seed, base.keep_last, base.transfer_from) == ("base", 1, 2, None)
    assert Path(base.checkpoints_dir) == Path("runs/demo_recipe/seed1")


def test_recipe_set_moves_the_recipe_of_every_seed(tmp_path: Path):
    """A preset can pin what its rows were measured on while the demo's recipe moves on (classify_cpu.yml keeps
    3 folds under a 5-fold demo)."""
    conf = write(tmp_path / "rows.yml", f"recipe: {ROOT / 'parameters' / 'classify' / 'recipe.yml'}\n"
                                        "recipe_set: {folds: 4, fold_batch_size: 16}\n")
    cfg = load_config(conf, schema=RecipeAblationConfig)
    for recipe in (base_recipe(cfg), seed_recipe(cfg, 1)):
        assert (recipe.folds, recipe.fold_batch_size) == (4, 16)
    assert seed_recipe(cfg, 1).seed == 1
    shipped = load_config(ROOT / "parameters" / "ablation" / "recipe" / "classify_cpu.yml", schema=RecipeAblationConfig)
    assert base_recipe(shipped).folds == 3


def test_the_evaluations_a_variant_epoch_asks_for(tmp_path: Path):
    run, other = tmp_path / "v_3fold0", tmp_path / "v_3fold1"
    fake_run(run, "epoch2", 1.0, epoch=2)
    assert evaluation_args([run], "last", "cpu") == [] and evaluation_args([run], 2, "cpu") == []
    assert evaluation_args([run], 1, "cpu") == [["evaluate.py", "--run", str(run), "--epoch", "1", "--device", "cpu"]]
    assert evaluation_args([run], "ema2", "cpu")[0][-3] == "2"
    assert evaluation_args([run], "soup2", "cpu") == [["evaluate.py", "--run", str(run), "--soup", "2", "--device",
                                                       "cpu"]]
    fake_run(other, "epoch2", 1.0, epoch=2)  # runs with the same need: one process for both
    assert evaluation_args([run, other], 1, "cpu") == [["evaluate.py", "--run", str(run), str(other), "--epoch", "1",
                                                        "--device", "cpu"]]


@pytest.mark.integration
def test_two_variants_over_two_seeds_end_to_end(tmp_path: Path):
    """Two variants over two seeds through the real CLIs: base (1 epoch, with an EMA of its weights) trained on
    the fixture's 3 folds, and `ema` scored on the same runs' EMA weights (one launch per seed keeps it short:
    the launches, not the training, are what cost here); then a rerun that trains nothing."""
    recipe = tiny_recipe(tmp_path, ("target",))
    conf = write(tmp_path / "rows.yml", f"""recipe: {recipe}
task: {tmp_path / 'target.yml'}
task_set: [transfer_from=null, ema.decay=0.5, "eval.parts=[oof]"]
runs_dir: {tmp_path / 'rows'}
out_dir: {tmp_path / 'results'}
seeds: {SEEDS}
variants:
  base: {{}}
  ema: {{runs: base, epoch: ema}}
""")
    env = {**os.environ, "TMUX_TMPDIR": str(tmp_path)}  # a private tmux server
    env.pop("TMUX", None)

    def run() -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "ablation_recipe.py", "--conf", conf], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done

    run()
    results = json.loads((tmp_path / "results" / "results.json").read_text())
    rows = {r["id"]: r for r in results["rows"]}
    assert list(rows) == ["base", "ema", "constant", "pixel_lgbm"]
    for row in rows.values():
        assert row["seeds"] == SEEDS and len(row["folds"]) == 3 and all(math.isfinite(v) for v in row["folds"]), row
        assert row["seconds"] is not None, row
    assert [c["key"] for c in results["claims"]] == ["ema", "baseline"]
    assert all(c["verdict"] in ("confirmed", "refuted", "not significant", "unstable") for c in results["claims"])
    assert rows["ema"]["folds"] != rows["base"]["folds"] and rows["ema"]["seconds"] == rows["base"]["seconds"]
    for seed in SEEDS:  # each seed's runs in its own folder, the fold splits only
        assert sorted(p.name for p in (tmp_path / "rows" / f"seed{seed}").iterdir()) == [
            "base_3fold0", "base_3fold1", "base_3fold2", "cache"]
        assert (tmp_path / "rows" / f"seed{seed}" / "base_3fold2" / "eval" / "ema1_metrics.json").is_file()
    assert "| base (base) |" in (tmp_path / "results" / "RESULTS.md").read_text()

    checkpoints = {p: p.stat().st_mtime_ns for p in (tmp_path / "rows").rglob("*.pth")}
    timings = (tmp_path / "results" / "timings.json").read_text()
    again = run()
    assert "launch.py" not in again.stdout and "fold0123.baselines" not in again.stdout, again.stdout[-2000:]
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "rows").rglob("*.pth")} == checkpoints
    assert (tmp_path / "results" / "timings.json").read_text() == timings
    assert json.loads((tmp_path / "results" / "results.json").read_text())["claims"] == results["claims"]


@pytest.mark.integration
def test_a_pretext_variant_and_a_cleaned_labels_variant_end_to_end(tmp_path: Path):
    """Issue 21's rows through the real CLIs on a tiny K = 4 classification dataroot, one seed: `jigsaw` trains its
    own jigsaw pretext on split all and transfers from it; `clean` trains on the splits stack.py clean made from
    base's out-of-fold probabilities, with the held-out rows (and so the scored rows) of base."""
    root = make_class_dataroot(tmp_path / "data", k=4, n_train=48, n_test=16)
    tiny = ROOT / "parameters" / "tiny"
    task = write(tmp_path / "classify.yml", f"base: {tiny / 'onehot.yml'}\ntask: classify\nepochs: 1\n")
    base = ROOT / "parameters" / "demo" / "three_folds_all" / "recipe.yml"
    recipe = write(tmp_path / "recipe.yml", f"""base: {base}
dataset: null
dataroot: {root}
answers: null
fold_batch_size: 0
word2vec: null
devices: cpu
pretext: null
tasks: [{task}]
""")
    conf = write(tmp_path / "rows.yml", f"""recipe: {recipe}
task: {task}
task_set: [transfer_from=null, "eval.parts=[oof]"]
runs_dir: {tmp_path / 'rows'}
out_dir: {tmp_path / 'results'}
seeds: [0]
baselines: false
variants:
  base: {{}}
  jigsaw:
    pretext: {tiny / 'jigsaw.yml'}
    pretext_set: [epochs=1]
    claim: the jigsaw pretext helps
  clean:
    clean_from: base
    claim: cleaning helps
""")
    env = {**os.environ, "TMUX_TMPDIR": str(tmp_path)}
    env.pop("TMUX", None)
    done = subprocess.run([sys.executable, "ablation_recipe.py", "--conf", conf], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    seed = tmp_path / "rows" / "seed0"
    assert rundir.done_path(seed / "jigsaw_pretext_all").is_file()
    assert rundir.read_run_config(seed / "jigsaw_3fold0").transfer_from == "jigsaw_pretext_all"
    issues = pd.read_csv(tmp_path / "results" / "clean" / "seed0" / "label_issues.csv", dtype={"object_id": str})
    for k in range(3):
        cleaned_train, cleaned_held = (root / f"3fold{k}_clean_base0_{part}.csv" for part in ("train", "test"))
        assert cleaned_held.read_bytes() == (root / f"3fold{k}_test.csv").read_bytes()
        kept = pd.read_csv(cleaned_train, dtype={"object_id": str})["object_id"]
        given = pd.read_csv(root / f"3fold{k}_train.csv", dtype={"object_id": str})["object_id"]
        assert set(kept) == set(given) - set(issues["object_id"])
        assert rundir.done_path(seed / f"clean_3fold{k}_clean_base0").is_file()
    results = json.loads((tmp_path / "results" / "results.json").read_text())
    rows = {r["id"]: r for r in results["rows"]}
    assert all(len(rows[name]["folds"]) == 3 for name in ("base", "jigsaw", "clean")), rows
    assert {c["key"] for c in results["claims"]} >= {"jigsaw", "clean"}
