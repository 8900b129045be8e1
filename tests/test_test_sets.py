"""Several test sets (issue 21: ACCV 2022's test A, then test B): test_b.csv and photos_test_b/ beside test.csv;
every set is predicted, pseudo-labelled and submitted, and adding one re-evaluates runs without retraining them."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from fold0123.common import rundir
from fold0123.common.config import load_config
from fold0123.common.errors import LayoutError
from fold0123.common.fingerprint import run_staleness
from fold0123.common.schema import StackConfig
from fold0123.data.folds import write_folds
from fold0123.data.layout import photo_path, read_test
from fold0123.engine.evaluator import evaluate_epoch
from fold0123.engine.trainer import train
from fold0123.engine.watch import watch_run
from tests.conftest import (ROOT, make_class_dataroot, make_dataroot, make_runs, make_synthetic_dataroot,
                            tiny_config)


def add_test_b(root, n: int = 4) -> list[str]:
    """Stage B: `n` new objects (copies of test photos under new ids) in test_b.csv and photos_test_b/."""
    first = read_test(root)["object_id"].tolist()[:n]
    new = [f"b{i:011d}" for i in range(n)]
    (root / "photos_test_b").mkdir()
    for old, object_id in zip(first, new):
        if photo_path(root, old).is_file():  # a synthetic dataroot (runs of made-up outputs) has no photos
            shutil.copy(photo_path(root, old), root / "photos_test_b" / f"{object_id}.jpg")
    pd.DataFrame({"object_id": new}).to_csv(root / "test_b.csv", index=False)
    return new


def test_later_test_sets_follow_test_csv_with_their_name_and_photos(tmp_path):
    root = make_dataroot(tmp_path / "data")
    before = read_test(root)
    assert set(before["test_set"]) == {"test"}
    new = add_test_b(root)
    both = read_test(root)
    assert both["object_id"].tolist() == before["object_id"].tolist() + new
    assert both["test_set"].tolist() == ["test"] * len(before) + ["test_b"] * len(new)
    assert photo_path(root, new[0]) == root / "photos_test_b" / f"{new[0]}.jpg"
    assert photo_path(root, before["object_id"][0]).parent == root / "photos"
    # a later set that repeats an earlier set's id, or a train id, is one line naming its file and row
    pd.DataFrame({"object_id": [new[0], before["object_id"][1]]}).to_csv(root / "test_c.csv", index=False)
    with pytest.raises(LayoutError, match=r"test_c.csv: row 2: object_id .* is also in test_b.csv"):
        read_test(root)
    train_id = pd.read_csv(root / "train.csv", dtype=str)["object_id"][0]
    pd.DataFrame({"object_id": [train_id]}).to_csv(root / "test_c.csv", index=False)
    with pytest.raises(LayoutError, match="test_c.csv: row 2: .* is also in train.csv"):
        read_test(root, pd.read_csv(root / "train.csv", dtype=str))


@pytest.mark.integration
def test_adding_test_b_re_evaluates_a_run_without_retraining_it(tmp_path, capsys):
    root = make_dataroot(tmp_path / "data")
    write_folds(root, k=3, batch_size=None, seed=0)
    all_test = (root / "all_test.csv").read_bytes()
    cfg = tiny_config("target", root, tmp_path / "runs", "transfer_from=null", "epochs=1")
    run = train(cfg, "3fold0", "cpu", progress=False)
    evaluate_epoch(run, 1)
    assert rundir.is_fully_evaluated(run, 1)
    weights = rundir.checkpoint_path(run, 1).stat().st_mtime_ns

    new = add_test_b(root)
    write_folds(root, k=3, batch_size=None, seed=0)
    assert (root / "all_test.csv").read_bytes() == all_test  # `all` holds out test.csv: its runs stay as they are
    assert run_staleness(run, cfg, "3fold0") == []  # no input of the training changed
    assert not rundir.is_fully_evaluated(run, 1)  # its test part misses test B
    result = watch_run(run, lambda r, e: evaluate_epoch(r, e, redo=False), timeout_s=120)
    assert result.evaluated == [1] and rundir.is_fully_evaluated(run, 1)
    ids = np.load(rundir.eval_npz_path(run, "epoch1", "test"))["ids"].tolist()
    assert ids == read_test(root)["object_id"].tolist() and ids[-len(new):] == new
    capsys.readouterr()
    train(cfg, "3fold0", "cpu", resume=True, progress=False)
    assert "already DONE, nothing to resume" in capsys.readouterr().out
    assert rundir.checkpoint_path(run, 1).stat().st_mtime_ns == weights


def test_the_stack_submits_each_test_set(tmp_path):
    from fold0123.stacking import pipeline

    root = make_synthetic_dataroot(tmp_path / "data", n_train=150, n_test=50)
    answers = pd.read_csv(tmp_path / "answers.csv", dtype={"object_id": str})
    first = read_test(root)["object_id"].tolist()[:6]
    new = add_test_b(root, 6)
    # the copies' answers are the originals' (the same photos)
    copies = answers.set_index("object_id").loc[first].reset_index().assign(object_id=new)
    pd.concat([answers, copies]).to_csv(tmp_path / "answers.csv", index=False)
    make_runs(tmp_path / "runs", root, epochs=2)
    cfg = load_config(ROOT / "parameters/tiny/stack.yml", [
        f"dataroot={root}", f"checkpoints_dir={tmp_path / 'runs'}", f"out_dir={tmp_path / 'out'}",
        f"answers={tmp_path / 'answers.csv'}"], schema=StackConfig)
    result = pipeline.run_stack(cfg, stamp="sets")
    whole = pd.read_csv(result.submission)
    per_set = {name: pd.read_csv(result.submission.with_name(f"{result.submission.stem}_for_{name}.csv"))
               for name in ("test", "test_b")}
    assert len(per_set["test"]) == 50 and len(per_set["test_b"]) == 6
    assert per_set["test_b"]["target"].tolist() == whole["target"].tolist()[50:]


@pytest.mark.integration
def test_stage_b_ensembles_submits_and_pseudo_labels_test_a_and_test_b(tmp_path):
    """A classification competition's stage B, end to end: runs trained in stage A are re-evaluated on both sets,
    the ensemble writes each set's submission, and the next pseudo-label round takes both sets' rows."""
    import stack

    root = make_class_dataroot(tmp_path / "data", k=4, n_train=48, n_test=16)
    write_folds(root, k=3, batch_size=None, seed=0)
    cfg = tiny_config("onehot", root, tmp_path / "runs", "exp=classify", "task=classify", "transfer_from=null",
                      "epochs=1")
    runs = [train(cfg, split, "cpu", progress=False) for split in ("3fold0", "3fold1", "3fold2", "all")]
    new = add_test_b(root, 5)
    for run in runs:  # what the watcher (or the launcher's evaluate pane) does on a run evaluated before test B
        assert evaluate_epoch(run, 1, redo=False)
    common = [f"dataroot={root}", f"checkpoints_dir={tmp_path / 'runs'}", f"out_dir={tmp_path / 'out'}",
              "ensemble.runs={classify: last}"]
    stack.main(["--conf", str(ROOT / "parameters/tiny/stack.yml"), *[a for s in common for a in ("--set", s)]])
    submission = next((tmp_path / "out").glob("ensemble_*_submission.csv"))
    for_b = pd.read_csv(submission.with_name(submission.stem + "_for_test_b.csv"), dtype={"object_id": str})
    for_a = pd.read_csv(submission.with_name(submission.stem + "_for_test.csv"), dtype={"object_id": str})
    assert for_b["object_id"].tolist() == new and len(for_a) == 16
    assert list(for_b.columns) == ["object_id", "target", "label"]
    stack.main(["pseudo", "--round", "1", "--conf", str(ROOT / "parameters/tiny/stack.yml"),
                *[a for s in [*common, "ensemble.pseudo_thr=0.0"] for a in ("--set", s)]])
    pseudo = pd.read_csv(root / "3fold0_pseudo1_train.csv", dtype={"object_id": str})
    pseudo_ids = set(pseudo.loc[pseudo["pseudo"] == 1, "object_id"])
    assert set(new) <= pseudo_ids and len(pseudo_ids) == 16 + 5
    # round 1 trains on them; the final ensemble mixes the rounds (`exp@_pseudo1`: that round's runs)
    for split in ("3fold0", "3fold1", "3fold2", "all"):
        evaluate_epoch(train(cfg, f"{split}_pseudo1", "cpu", progress=False), 1)
    stack.main(["--conf", str(ROOT / "parameters/tiny/stack.yml"),
                *[a for s in [*common[:3], "ensemble.runs={classify: last, classify@_pseudo1: last}",
                              f"out_dir={tmp_path / 'final'}"] for a in ("--set", s)]])
    report = next((tmp_path / "final").glob("ensemble_*_report.json"))
    weights = {row["exp"]: row["weight"] for row in json.loads(report.read_text())["tables"]["runs"]}
    assert set(weights) == {"classify", "classify@_pseudo1"} and all(w > 0 for w in weights.values())
