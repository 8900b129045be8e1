"""Uniform soups as stacking and ensemble inputs: `runs: {target: soup2}` resolves to each run's eval/soup2_* files
(evaluate.py --soup 2), fails in one line when a fold lacks its soup or souped other epochs, reaches the stack's
report and the probability ensemble, and the recipe makes the soups its stack names (skipping current ones)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import stack
from fold0123.common import rundir
from fold0123.common.config import load_config
from fold0123.common.schema import RecipeConfig, StackConfig
from fold0123.ensemble import ensemble_probabilities
from fold0123.launcher import recipe
from fold0123.stacking.features import build_features
from fold0123.stacking.runs import RunError, load_outputs, resolve_epoch, run_dir
from tests.conftest import ROOT, assert_epoch_spec_taken, make_runs, make_synthetic_dataroot, save_npz

FOLDS = [f"3fold{i}" for i in range(3)]
SPLITS = FOLDS + ["all"]


def fake_soup(run: Path, n: int, last: int) -> None:
    """What evaluate.py --soup n writes, with outputs of its own: the mean of the souped epochs' outputs (a real
    soup's predictions are not any one epoch's), metrics of epoch `last`'s with the soup's checkpoint named."""
    epochs = range(last - n + 1, last + 1)
    for part in rundir.PARTS:
        paths = [rundir.eval_npz_path(run, rundir.epoch_tag(e), part) for e in epochs]
        if all(p.is_file() for p in paths):
            outs = [load_outputs(run, e, part) for e in epochs]
            save_npz(rundir.eval_npz_path(run, f"soup{n}", part), outs[-1].ids,
                               np.mean([o.outputs for o in outs], axis=0).astype(np.float32))
    metrics = json.loads(rundir.metrics_path(run, rundir.epoch_tag(last)).read_text())
    metrics["checkpoint"] = f"soup{n}.pth"
    rundir.metrics_path(run, f"soup{n}").write_text(json.dumps(metrics))


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("soups")
    root = make_synthetic_dataroot(tmp / "data", n_train=90, n_test=30)
    make_runs(tmp / "runs", root, tasks=("target", "onehot"), epochs=3, train_epochs=())
    for task in ("target", "onehot"):
        for split in SPLITS:
            fake_soup(run_dir(tmp / "runs", task, split), 2, 3)
    return tmp, root, tmp / "runs"


def test_the_epoch_spec_takes_soup_n():
    assert_epoch_spec_taken(["runs={target: soup5, onehot: best}", "ensemble.runs={onehot: soup3}"],
                            {"runs": {"target": "soup5", "onehot": "best"}, "ensemble.runs": {"onehot": "soup3"}},
                            ["soup0", "soupx", "soup"], "soup")


def test_a_soup_spec_resolves_to_the_soups_outputs(synth):
    _, root, runs = synth
    assert resolve_epoch(runs, "target", FOLDS, "soup2") == "soup2"
    fs = build_features(root, runs, {"target": "soup2", "onehot": "last"}, aggregations="mean")
    assert [(c.exp, c.epoch) for c in fs.runs] == [("target", "soup2"), ("onehot", 3)]
    oid, fold = fs.train.index[4], int(fs.folds[4])
    soup = load_outputs(run_dir(runs, "target", f"3fold{fold}"), "soup2", "oof")
    last = load_outputs(run_dir(runs, "target", f"3fold{fold}"), 3, "oof")
    row = list(soup.ids).index(oid)
    assert fs.train.loc[oid, "target_mean_0"] == pytest.approx(soup.outputs[row, :, 0].mean())
    assert fs.train.loc[oid, "target_mean_0"] != pytest.approx(last.outputs[row, :, 0].mean())  # not epoch 3's
    tid = fs.test["all"].index[0]
    test = load_outputs(run_dir(runs, "target", "all"), "soup2", "test")
    assert fs.test["all"].loc[tid, "target_mean_0"] == pytest.approx(test.outputs[list(test.ids).index(tid)].mean())


def test_a_missing_or_lagging_soup_is_a_one_line_error(synth, tmp_path):
    _, root, runs = synth
    copy = tmp_path / "runs"
    shutil.copytree(runs, copy)
    with pytest.raises(RunError, match=r"target_3fold0/eval/soup5_metrics.json: missing: make the soup with "
                                       r"evaluate.py --run .*target_3fold0 --soup 5"):
        resolve_epoch(copy, "target", FOLDS, "soup5")
    fake_soup(run_dir(copy, "target", "3fold1"), 2, 2)  # fold 1 souped before its epoch 3 existed
    with pytest.raises(RunError, match=r"target_3fold1/eval/soup2_metrics.json: souped up to epoch 2, the other "
                                       r"folds up to 3"):
        build_features(root, copy, {"target": "soup2"})


def test_soups_reach_the_stack_report_and_the_ensemble(synth, capsys):
    tmp, root, runs = synth
    sets = [f"dataroot={root}", f"checkpoints_dir={runs}", f"out_dir={tmp / 'out'}", "answers=null",
            "runs={target: soup2, onehot: last}", "infold=false"]
    stack.main(["--conf", str(ROOT / "parameters/tiny/stack.yml"), *[a for s in sets for a in ("--set", s)]])
    assert "target [target] soup2" in capsys.readouterr().out
    (report,) = (tmp / "out").glob("*_report.json")
    facts = json.loads(report.read_text())["facts"]
    assert {"exp": "target", "task": "target", "epoch": "soup2"} in facts["runs"]
    cfg = load_config(ROOT / "parameters/tiny/stack.yml", [f"dataroot={root}", f"checkpoints_dir={runs}",
                                                            "ensemble.runs={onehot: soup2}"], schema=StackConfig)
    result = ensemble_probabilities(cfg)
    assert result.runs.loc["onehot", "epoch"] == "soup2"
    soup = [load_outputs(run_dir(runs, "onehot", s), "soup2", "oof").outputs.mean(axis=1) for s in FOLDS]
    assert result.oof.shape == (90, 4) and np.allclose(np.sort(result.oof.ravel()),
                                                        np.sort(np.concatenate(soup).ravel()))


def test_the_recipe_makes_the_soups_its_stack_names_and_skips_current_ones(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    for split in SPLITS:
        for epoch in (1, 2, 3):
            (runs / f"target_{split}").mkdir(parents=True, exist_ok=True)
            (runs / f"target_{split}" / f"{epoch}.pth").write_bytes(b"")
    conf = tmp_path / "stack.yml"
    conf.write_text(f"base: {ROOT / 'parameters/tiny/stack.yml'}\ncheckpoints_dir: {runs}\n"
                    "runs: {target: soup2, onehot: last}\nensemble: {runs: {onehot: last}}\n")
    cfg = RecipeConfig(stack=str(conf), devices="cpu")
    calls = []
    monkeypatch.setattr(recipe, "run_cli", lambda *args: calls.append(args))
    recipe.make_soups(cfg)
    assert calls == [("evaluate.py", "--run", *(str(runs / f"target_{s}") for s in SPLITS), "--soup", "2",
                      "--device", "cpu")]  # one process for the experiment's runs
    metrics = {"epoch": 3, "task": "target", "split": "x", "n": 0, "primary": "rmse", "lower_is_better": True,
               "views": {}}
    for split, epoch in (("3fold0", 3), ("3fold1", 2)):  # 3fold1's soup predates its epoch 3: made again
        (runs / f"target_{split}" / "eval").mkdir()
        rundir.metrics_path(runs / f"target_{split}", "soup2").write_text(json.dumps({**metrics, "epoch": epoch}))
    calls.clear()
    recipe.make_soups(cfg)
    assert [c[2:-4] for c in calls] == [tuple(str(runs / f"target_{s}") for s in ("3fold1", "3fold2", "all"))]


@pytest.mark.parametrize("sources, trains_all", [
    ("", True),                                                            # the defaults: the `all` run predicts test
    ("test_features: fold_mean\n", True),                                  # the ensemble still reads `all`
    ("ensemble: {test_features: fold_mean}\n", True),                      # the LightGBM stack still reads `all`
    ("test_features: fold_mean\nensemble: {test_features: fold_mean}\n", False),
])
def test_the_recipe_trains_the_all_split_only_where_its_stack_reads_it(tmp_path, monkeypatch, sources, trains_all):
    conf = tmp_path / "stack.yml"
    conf.write_text(f"base: {ROOT / 'parameters/tiny/stack.yml'}\ncheckpoints_dir: {tmp_path / 'runs'}\n"
                    f"runs: {{target: soup2}}\n{sources}")
    cfg = RecipeConfig(stack=str(conf), devices="cpu", folds=3, tasks=["a.yml"])
    folds = ["3fold0", "3fold1", "3fold2"]
    assert recipe.trained_splits(cfg) == folds + ["all"] * trains_all
    assert recipe.trained_splits(cfg, "_pseudo1") == [f"{s}_pseudo1" for s in folds + ["all"] * trains_all]
    calls = []
    monkeypatch.setattr(recipe, "run_cli", lambda *args, **kw: calls.append(args))
    recipe.fold0123(cfg)
    recipe.make_soups(cfg)
    (launch,) = [c for c in calls if c[0] == "launch.py"]
    assert launch[launch.index("--splits") + 1] == ",".join(folds + ["all"] * trains_all)
    (evaluate,) = [c for c in calls if c[0] == "evaluate.py"]  # one process for the experiment's runs
    assert list(evaluate[2:evaluate.index("--soup")]) == [str(tmp_path / "runs" / f"target_{s}")
                                                          for s in folds + ["all"] * trains_all]
