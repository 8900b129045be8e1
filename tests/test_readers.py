"""The shared pieces every room reads through: the run-directory readers, the poll helper, the answers scorer,
the RMSE, the tag spelling and the one base error the CLIs catch."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fold0123.common import rundir
from fold0123.common.errors import Fold0123Error, LayoutError, error_line
from fold0123.common.poll import wait_until
from fold0123.data.answers import score_answers
from fold0123.data.metrics import rmse
from fold0123.data.tags import tag_token, token_lists

METRICS = {"epoch": 1, "task": "target", "split": "3fold0", "n": 4, "primary": "rmse", "lower_is_better": True,
           "views": {"mean": {"rmse": 0.5}, "identity": {"rmse": 0.6}}}


def test_wait_until_returns_the_value_and_names_what_timed_out():
    calls = []
    assert wait_until(lambda: calls.append(1) or (len(calls) >= 3 and "ready"), 5, 0.01, "three calls") == "ready"
    start = time.monotonic()
    with pytest.raises(TimeoutError, match=r"timed out after 0.2 s waiting for the moon"):
        wait_until(lambda: False, 0.2, 0.05, "the moon")
    assert time.monotonic() - start < 2
    assert wait_until(lambda: True, 0, what="an immediate yes")  # always looked at once, even with no time


def test_evaluated_epochs_and_read_metrics(tmp_path: Path):
    run = tmp_path / "exp_3fold0"
    assert rundir.evaluated_epochs(run) == []  # no run directory yet: nothing evaluated
    rundir.eval_dir(run).mkdir(parents=True)
    for epoch in (10, 2):
        rundir.metrics_path(run, rundir.epoch_tag(epoch)).write_text(json.dumps(dict(METRICS, epoch=epoch)))
        rundir.eval_npz_path(run, rundir.epoch_tag(epoch), "oof").write_bytes(b"")
    (rundir.eval_dir(run) / "epoch3_metrics.json.tmp.99").write_text("{")  # mid-write: not an epoch
    rundir.metrics_path(run, "soup2").write_text(json.dumps(METRICS))       # a soup is not an epoch
    assert rundir.evaluated_epochs(run) == [2, 10] and rundir.evaluated_epochs(run, "oof") == [2, 10]
    assert rundir.evaluated_epochs(run, "test") == []
    assert rundir.read_metrics(run, "epoch10")["epoch"] == 10
    with pytest.raises(rundir.RunError, match=r"epoch7_metrics.json: metrics file missing"):
        rundir.read_metrics(run, "epoch7")
    rundir.metrics_path(run, "epoch2").write_text(json.dumps({k: v for k, v in METRICS.items() if k != "task"}))
    with pytest.raises(rundir.RunError, match=r"epoch2_metrics.json: missing key 'task'"):
        rundir.read_metrics(run, "epoch2")
    rundir.metrics_path(run, "epoch2").write_text("{")
    with pytest.raises(LayoutError, match=r"epoch2_metrics.json: not a readable metrics JSON"):
        rundir.read_metrics(run, "epoch2")


def test_the_scorer_names_every_id_problem_in_one_line(tmp_path: Path):
    answers = tmp_path / "answers.csv"
    answers.write_text("object_id,target\na,0\nb,3\nc,1\nNA,2\n")
    assert score_answers(["NA", "c", "b", "a"], [2, 1, 3, 0], answers) == {"rmse": 0.0, "n": 4}
    assert score_answers(["a", "b", "c", "NA"], [1, 3, 1, 0], answers)["rmse"] == pytest.approx(np.sqrt(5 / 4))
    with pytest.raises(LayoutError) as info:
        score_answers(["a", "a", "c", "zz"], [0, 0, 1, 1], answers, source="stack")
    message = str(info.value)
    assert "\n" not in message and message.startswith("stack: ")
    for part in ("missing 2 of 4 object_ids", "first 'b'", "row 3: duplicate object_id 'a'",
                 "1 object_ids not in", "first 'zz'"):
        assert part in message, message
    with pytest.raises(LayoutError, match=r"row 4: prediction nan for object_id 'c' is not a finite number"):
        score_answers(["a", "b", "c", "NA"], [0, 3, np.nan, 2], answers)


def test_rmse_is_float64():
    assert rmse([0, 1, 2], np.array([0, 1, 4], np.float32)) == pytest.approx(np.sqrt(4 / 3))
    assert isinstance(rmse([1], [1]), float)


def test_one_spelling_of_a_tag_in_both_tables(tmp_path: Path):
    """A name in both tables (pencil) is two tokens, a name in one table stays as it is (NA is a tag, not missing)."""
    assert tag_token("pencil", "materials", shared=True) == "pencil (material)"
    assert tag_token("pencil", "techniques", shared=True) == "pencil (technique)"
    assert tag_token("oil", "materials", shared=False) == "oil"
    tables = {"materials": pd.DataFrame({"object_id": ["a", "a", "b"], "name": ["pencil", "paper", "NA"]}),
              "techniques": pd.DataFrame({"object_id": ["a", "b"], "name": ["pencil", "etching"]})}
    words = {t for tokens in token_lists(tables, ["a", "b"]).values() for t in tokens}
    assert words == {"NA", "paper", "pencil (material)", "etching", "pencil (technique)"}


def test_every_project_error_is_one_base_the_clis_catch():
    from fold0123.common.config import ConfigError
    from fold0123.launcher.layout import LaunchError
    from fold0123.models.backbones import BackboneError
    from fold0123.models.checkpoints import CheckpointError
    from fold0123.common.build import BuildError
    from fold0123.preprocessing.emoji import EmojiDataError
    from fold0123.preprocessing.npm import PackageError
    from fold0123.stacking.runs import RunError

    for error in (ConfigError, LayoutError, CheckpointError, LaunchError, BackboneError, RunError, BuildError,
                  EmojiDataError, PackageError):
        assert issubclass(error, Fold0123Error), error
    assert not issubclass(KeyError, Fold0123Error)  # a KeyError is a bug: the CLIs let its traceback through
    assert error_line(LayoutError("a.csv:\n  row 2:   bad")) == "error: a.csv: row 2: bad"
