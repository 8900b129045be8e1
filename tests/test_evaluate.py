"""evaluate.py and engine.evaluator: 8-view npz files per part, metrics.json per the contract, soups, errors."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from fold0123.common import rundir
from fold0123.common.schema import RunConfig
from fold0123.data.views import N_VIEWS, apply_view
from fold0123.engine.evaluator import evaluate_checkpoint, evaluate_soup
from tests.conftest import run_script, session_runs

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return session_runs(tmp_path_factory)


@pytest.fixture
def target_run(runs, tmp_path):
    """A private copy of the transferred target run (tests write eval/ into it)."""
    return shutil.copytree(runs["target"], tmp_path / runs["target"].name)


def load_npz(path):
    with np.load(path, allow_pickle=False) as z:
        return z["ids"], z["outputs"]


def test_epoch_evaluation_writes_8_view_predictions_and_metrics(runs, target_run):
    metrics = evaluate_checkpoint(target_run, 2, device="cpu")
    dataroot = runs["dataroot"]
    held_out = pd.read_csv(dataroot / "3fold0_test.csv", dtype={"object_id": str})
    test = pd.read_csv(dataroot / "test.csv", dtype={"object_id": str})
    ids, oof = load_npz(rundir.eval_npz_path(target_run, "epoch2", "oof"))
    assert ids.dtype.kind == "U" and list(ids) == list(held_out["object_id"])
    assert oof.dtype == np.float32 and oof.shape == (len(held_out), N_VIEWS, 1)
    test_ids, test_out = load_npz(rundir.eval_npz_path(target_run, "epoch2", "test"))
    assert list(test_ids) == list(test["object_id"]) and test_out.shape == (len(test), N_VIEWS, 1)
    assert not rundir.eval_npz_path(target_run, "epoch2", "train").exists()  # not in eval.train_epochs
    assert np.isfinite(oof).all() and oof.std(axis=1).max() > 0  # the views really differ

    written = json.loads(rundir.metrics_path(target_run, "epoch2").read_text())
    assert written == metrics
    assert set(written) == {"epoch", "task", "split", "n", "primary", "lower_is_better", "views", "test_tables"}
    assert written["test_tables"] == rundir.test_tables_digest(dataroot)  # what it read
    assert (written["epoch"], written["task"], written["split"], written["n"]) == (2, "target", "3fold0",
                                                                                   len(held_out))
    assert written["primary"] == "rmse" and written["lower_is_better"] is True
    y = held_out["target"].to_numpy(float)
    assert written["views"]["mean"]["rmse"] == pytest.approx(np.sqrt(np.mean((oof.mean(1)[:, 0] - y) ** 2)))
    assert written["views"]["identity"]["rmse"] == pytest.approx(np.sqrt(np.mean((oof[:, 0, 0] - y) ** 2)))


def test_view_k_of_the_npz_is_the_model_on_view_k_of_the_image(runs, target_run):
    """The views are in VIEW_NAMES order and use the same cached, normalised image as training."""
    from fold0123.data.datasets import normalize
    from fold0123.data.photos import photo_cache
    from fold0123.models.checkpoints import read_checkpoint
    from fold0123.models.network import build_model
    from fold0123.models.tasks import get_task

    evaluate_checkpoint(target_run, 1, parts=["oof"], device="cpu")
    ids, outputs = load_npz(rundir.eval_npz_path(target_run, "epoch1", "oof"))
    cfg = rundir.read_run_config(target_run)
    model = build_model(cfg, get_task("target"))
    model.load_state_dict(read_checkpoint(rundir.checkpoint_path(target_run, 1))["model"])
    model.eval()
    cache = photo_cache(cfg)
    image = torch.from_numpy(np.array(cache.array[cache.index[ids[3]]])).permute(2, 0, 1)[None]
    with torch.no_grad():
        for k in (0, 5):
            expected = model(normalize(apply_view(image, k)))[0, 0].item()
            assert outputs[3, k, 0] == pytest.approx(expected, abs=1e-4)


def test_train_part_at_configured_epochs_and_on_request(target_run):
    evaluate_checkpoint(target_run, 1, parts=["train"], device="cpu")
    ids, out = load_npz(rundir.eval_npz_path(target_run, "epoch1", "train"))
    assert out.shape == (len(ids), N_VIEWS, 1) and len(ids) > 0
    assert not rundir.metrics_path(target_run, "epoch1").exists()  # metrics need oof
    with pytest.raises(ValueError, match="unknown part"):
        evaluate_checkpoint(target_run, 1, parts=["valid"], device="cpu")


def test_split_all_has_test_only_and_an_empty_metrics_file(runs, tmp_path):
    run = shutil.copytree(runs["jigsaw"], tmp_path / "jigsaw_all")
    metrics = evaluate_checkpoint(run, 2, device="cpu")
    assert metrics["n"] == 0 and metrics["views"] == {"mean": {}, "identity": {}} and metrics["split"] == "all"
    assert json.loads(rundir.metrics_path(run, "epoch2").read_text()) == metrics
    assert not rundir.eval_npz_path(run, "epoch2", "oof").exists()
    ids, out = load_npz(rundir.eval_npz_path(run, "epoch2", "test"))
    assert out.shape == (len(ids), N_VIEWS, 81)  # per-tile position probabilities
    assert np.allclose(out.reshape(len(ids), N_VIEWS, 9, 9).sum(-1), 1, atol=1e-4)


@pytest.mark.integration
def test_cli_epoch_several_runs_and_corrupt_checkpoint(target_run, tmp_path, capsys):
    import evaluate

    other = shutil.copytree(target_run, tmp_path / "other" / target_run.name)  # the same weights elsewhere
    result = run_script("evaluate.py", "--run", str(target_run), str(other), "--epoch", "2", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("rmse") == 2  # one summary per run, in one process
    assert all(rundir.metrics_path(run, "epoch2").is_file() for run in (target_run, other))
    np.testing.assert_array_equal(load_npz(rundir.eval_npz_path(target_run, "epoch2", "oof"))[1],
                                  load_npz(rundir.eval_npz_path(other, "epoch2", "oof"))[1])
    path = rundir.checkpoint_path(target_run, 1)
    path.write_bytes(path.read_bytes()[:4096])
    result = run_script("evaluate.py", "--run", str(other), str(target_run), "--epoch", "1", "--device", "cpu")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1
    assert lines[0].startswith(f"error: {path}: corrupt or truncated checkpoint")
    assert rundir.metrics_path(other, "epoch1").is_file()  # the runs before it are evaluated
    assert not rundir.metrics_path(target_run, "epoch1").exists()
    with pytest.raises(SystemExit) as exit_:
        evaluate.main(["--run", str(target_run), "--epoch", "9", "--device", "cpu"])
    assert "9.pth: checkpoint not found" in str(exit_.value)
    with pytest.raises(SystemExit) as exit_:  # a watcher per run: the panes' way
        evaluate.main(["--run", str(target_run), str(other), "--watch"])
    assert exit_.value.code == 2 and "--watch takes one --run, not 2" in capsys.readouterr().err


def test_soup_of_the_last_epochs(target_run):
    metrics = evaluate_soup(target_run, 2, device="cpu")
    assert rundir.soup_path(target_run, 2).is_file()
    ids, out = load_npz(rundir.eval_npz_path(target_run, "soup2", "oof"))
    assert out.shape[1:] == (N_VIEWS, 1)
    assert metrics["epoch"] == 2 and metrics["checkpoint"] == "soup2.pth"
    assert json.loads(rundir.metrics_path(target_run, "soup2").read_text()) == metrics
    assert [e for e, _ in rundir.list_checkpoints(target_run)] == [1, 2]  # the soup is not an epoch
    # a soup of one checkpoint predicts exactly what the checkpoint does
    evaluate_soup(target_run, 1, parts=["oof"], device="cpu")
    evaluate_checkpoint(target_run, 2, parts=["oof"], device="cpu")
    np.testing.assert_allclose(load_npz(rundir.eval_npz_path(target_run, "soup1", "oof"))[1],
                               load_npz(rundir.eval_npz_path(target_run, "epoch2", "oof"))[1], atol=1e-5)
    with pytest.raises(ValueError, match="needs 5 epoch checkpoints"):
        evaluate_soup(target_run, 5, device="cpu")
    with pytest.raises(ValueError, match="--soup 0: a soup averages the last N >= 1"):  # not "every epoch"
        evaluate_soup(target_run, 0, device="cpu")


def test_train_part_only_for_fold_splits_at_the_configured_epochs():
    from fold0123.engine.evaluator import default_parts

    def cfg(split):
        return RunConfig(exp="t", split=split, eval={"parts": ["oof", "test"], "train_epochs": [3]})

    assert default_parts(cfg("3fold1"), 3) == ["oof", "test", "train"]
    assert default_parts(cfg("3fold1"), 2) == ["oof", "test"]
    assert default_parts(cfg("all"), 3) == ["oof", "test"]  # nothing reads all's in-fold rows
    assert default_parts(cfg("all_pseudo1"), 3) == ["oof", "test"]
