"""The main job end to end on the 32 px fixture: recipe.py runs the real CLIs (folds, word2vec, the jigsaw
pretext and a task's four rows in real tmux, stacking) on a dataroot taken as it is (`dataset: null`, as a
competition's data would be, with tags for the train objects only), then a second run skips everything already
done."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, tiny_recipe

pytestmark = pytest.mark.integration


@pytest.fixture
def recipe_conf(tmp_path: Path) -> Path:
    conf = tiny_recipe(tmp_path)  # every stage without test tags, as atmaCup #11
    conf.write_text(conf.read_text() + "run_set: [log_every=2]\n")  # what every run takes after its own file
    return conf


def run_recipe(conf: Path, tmux_dir: Path, *args: str, ok: bool = True) -> str:
    env = {**os.environ, "TMUX_TMPDIR": str(tmux_dir)}  # a private tmux server for this test
    env.pop("TMUX", None)
    done = subprocess.run([sys.executable, "recipe.py", "--conf", str(conf), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert (done.returncode == 0) == ok, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout if ok else done.stderr


def test_recipe_runs_the_whole_job_and_then_reuses_it(recipe_conf: Path, tmp_path: Path):
    tmux_dir = tmp_path / "tmux"
    tmux_dir.mkdir()
    try:
        first = run_recipe(recipe_conf, tmux_dir)
        for split in ("3fold0", "3fold1", "3fold2", "all"):
            assert (tmp_path / "runs" / f"target_{split}" / "DONE").is_file()
        assert (tmp_path / "runs" / "jigsaw_all" / "DONE").is_file()
        assert yaml.safe_load((tmp_path / "runs" / "target_3fold0" / "config.yml").read_text())["log_every"] == 2
        assert (tmp_path / "data" / "materialstechniques_w2v20.csv").is_file()
        assert "submission RMSE on the held-out answers:" in first
        assert "stack (out-of-fold)" in first and "CPU busy" in first
        assert len(list((tmp_path / "submissions").glob("*_ids.csv"))) == 1
        (report,) = [line.split()[1] for line in first.splitlines() if line.startswith("report ")]
        assert (ROOT / report).is_file() and report.endswith("_report.html")  # not cut at the score's dot

        second = run_recipe(recipe_conf, tmux_dir)
        assert second.count("exist and are up to date: skipped") == 2  # folds, tag vectors
        assert second.count("skipped: already DONE and evaluated") == 5  # jigsaw + four target rows

        # another seed: the folds (and so every run) are stale; the recipe stops naming why, writing nothing
        before = sorted(p.name for p in (tmp_path / "data").iterdir())
        stale = run_recipe(recipe_conf, tmux_dir, "--set", "seed=1", ok=False)
        assert stale.strip().count("\n") == 0 and "is stale (seed: 0 -> 1)" in stale and "--redo-stale" in stale
        assert sorted(p.name for p in (tmp_path / "data").iterdir()) == before
    finally:
        subprocess.run(["tmux", "kill-server"], env={**os.environ, "TMUX_TMPDIR": str(tmux_dir)},
                       capture_output=True)


def test_a_stack_reading_a_run_no_task_trains_stops_the_recipe_before_any_training(tmp_path: Path):
    """The demo's recipe trains three tasks and its stack drops the fourth (`_delete_`); a stack left naming a run
    that nothing trains would fail only after every run had trained, so the recipe refuses it first, in one line
    naming the stack file, key and run. A run an earlier recipe left in the folder may be stacked."""
    from fold0123.common.config import ConfigError, load_config
    from fold0123.common.schema import RecipeConfig
    from fold0123.launcher.recipe import check_stacked_runs

    conf = tiny_recipe(tmp_path)  # trains and stacks target
    stack = tmp_path / "stack.yml"
    stack.write_text(stack.read_text().replace("runs:\n", "runs:\n  onehot: last\n", 1))
    tmux_dir = tmp_path / "tmux"
    tmux_dir.mkdir()
    err = run_recipe(conf, tmux_dir, ok=False)
    assert f"{stack}: key 'runs' names onehot, which no task of the recipe trains (target)" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()  # nothing trained
    (tmp_path / "runs" / "onehot_3fold0").mkdir(parents=True)  # e.g. left by an earlier recipe's onehot task
    check_stacked_runs(load_config(conf, schema=RecipeConfig))
    with pytest.raises(ConfigError, match="names onehot"):
        check_stacked_runs(load_config(conf, [f"checkpoints_dir={tmp_path / 'other'}"], schema=RecipeConfig))


def test_a_classification_recipe_ensembles_two_architectures_and_scores_by_accuracy(tmp_path: Path):
    """demo-classify's shape on a K = 7 fixture: no tag vectors, no pretext, a ResNet and a ConvNeXt through
    fold0123 in tmux on the fold splits only (the demo's members are two ResNet seeds; two architectures are the
    paddy notebooks' way), the ensemble of the fold runs' test predictions as the submission, accuracy on the
    answers, the baselines beside it."""
    from fold0123.common.config import dump_config, load_config
    from fold0123.common.schema import StackConfig
    from tests.conftest import make_class_dataroot, write

    dataroot = make_class_dataroot(tmp_path / "data", k=7)
    runs, tiny = tmp_path / "runs", ROOT / "parameters" / "tiny"
    confs = [write(tmp_path / f"{name}.yml", f"base: {tiny / 'onehot.yml'}\ntask: classify\nexp: {name}\n"
                   f"backbone: {backbone}\nwidth: {width}\ncheckpoints_dir: {runs}\ntransfer_from: null\nepochs: 1\n")
             for name, backbone, width in (("resnet", "resnet18", 16), ("convnext", "convnext_atto", 64))]
    stack = load_config(ROOT / "parameters" / "classify" / "stack.yml",
                        [f"checkpoints_dir={runs}", f"out_dir={tmp_path / 'submissions'}",
                         "ensemble.runs={resnet: last, convnext: last}"], schema=StackConfig)
    conf = write(tmp_path / "recipe.yml", f"""base: {ROOT / 'parameters' / 'classify' / 'recipe.yml'}
dataset: null
dataroot: {dataroot}
answers: {tmp_path / 'answers.csv'}
fold_batch_size: 8
folds: 3
devices: cpu
tasks: [{', '.join(confs)}]
stack: {write(tmp_path / 'stack.yml', dump_config(stack))}
""")
    tmux_dir = tmp_path / "tmux"
    tmux_dir.mkdir()
    try:
        out = run_recipe(Path(conf), tmux_dir)
    finally:
        subprocess.run(["tmux", "kill-server"], env={**os.environ, "TMUX_TMPDIR": str(tmux_dir)},
                       capture_output=True)
    assert "no tag vectors (word2vec: null)" in out and "pretext" not in out.split("=== fold0123")[0]
    for name in ("resnet", "convnext"):  # the stack predicts test with the fold runs' mean: no `all` run
        assert all((runs / f"{name}_3fold{i}" / "DONE").is_file() for i in range(3))
        assert not (runs / f"{name}_all").exists()
    assert "resnet alone" in out and "convnext alone" in out and "weighted ensemble (argmax)" in out
    assert "pixels alone" in out  # ensemble.pixel_stats: the pixel-feature LightGBM is a member
    assert "submission accuracy on the held-out answers:" in out
    assert "| pixel statistics LightGBM |" in out and "| majority class |" in out
    (pixel_row,) = [line for line in out.splitlines() if line.startswith("| pixel statistics LightGBM |")]
    assert pixel_row.endswith("(cached) |")  # the ensemble's pixel member is the same model: fit once
    assert len(list((tmp_path / "submissions").glob("ensemble_*_submission.csv"))) == 1
