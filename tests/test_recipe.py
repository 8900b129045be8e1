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

from tests.engine_fixtures import tiny_recipe

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration


@pytest.fixture
def recipe_conf(tmp_path: Path) -> Path:
    return tiny_recipe(tmp_path)  # every stage without test tags, as atmaCup #11


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
        assert (tmp_path / "data" / "materialstechniques_w2v20.csv").is_file()
        assert "submission RMSE on the held-out answers:" in first
        assert "stack (out-of-fold)" in first and "CPU busy" in first
        assert len(list((tmp_path / "submissions").glob("*_ids.csv"))) == 1

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
