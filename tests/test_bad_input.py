"""The bad inputs a fault-injection run found ending in a traceback or a silent wrong result (issue 12): each now
ends in one line naming the file, key or row, and leaves nothing outside its folder."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from fold0123.common import rundir
from fold0123.common.errors import Fold0123Error, LayoutError, UsageError
from fold0123.common.io import OutputPathError, write_text
from fold0123.data.layout import read_split, read_test, read_train
from fold0123.engine.evaluator import evaluate_checkpoint
from fold0123.engine.trainer import train
from fold0123.models.checkpoints import CheckpointError
from fold0123.stacking.runs import RunError, eval_path, load_outputs
from tests.conftest import session_runs, tiny_config


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return session_runs(tmp_path_factory)


def _copy_run(runs, tmp_path: Path, exp: str) -> Path:
    """A copy of the session's target run under another experiment name, in its own checkpoints_dir (beside
    the jigsaw run it transferred from, so that it is not stale)."""
    if not (tmp_path / "jigsaw_all").exists():
        (tmp_path / "jigsaw_all").symlink_to(runs["jigsaw"])
    run = tmp_path / f"{exp}_3fold0"
    shutil.copytree(runs["target"], run)
    config = rundir.config_path(run)
    config.write_text(config.read_text().replace("exp: target", f"exp: {exp}"))
    return run


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and isinstance(err.value, Fold0123Error)
    return message


def test_checkpoints_dir_that_is_a_file_is_one_line(runs, tmp_path):
    blocker = tmp_path / "runs"
    blocker.write_text("not a folder")
    for checkpoints_dir in (blocker, blocker / "deeper"):
        cfg = tiny_config("target", runs["dataroot"], checkpoints_dir, "transfer_from=null")
        with pytest.raises(OutputPathError) as err:
            train(cfg, "3fold0", "cpu", progress=False)
        assert f"{blocker} is a file, not a folder" in _one_line(err)


def test_split_and_object_id_names_cannot_leave_their_folders(runs, tmp_path):
    cfg = tiny_config("target", runs["dataroot"], tmp_path / "runs", "transfer_from=null")
    for split in ("../../../esc", "..", "a/b"):
        with pytest.raises(UsageError, match="split name"):
            train(cfg, split, "cpu", progress=False)
        with pytest.raises(UsageError, match="split name"):
            read_split(runs["dataroot"], split)
    assert not (tmp_path / "esc_train.csv").exists() and sorted(p.name for p in tmp_path.iterdir()) == []

    root = tmp_path / "data"
    shutil.copytree(runs["dataroot"], root)
    train_frame = pd.read_csv(root / "train.csv", dtype={"object_id": str})
    train_frame.loc[3, "object_id"] = "../../outside"
    train_frame.to_csv(root / "train.csv", index=False)
    with pytest.raises(LayoutError, match=r"train.csv: row 5: object_id '\.\./\.\./outside' holds a path separator"):
        read_train(root)
    pd.DataFrame({"object_id": ["ok", ".."]}).to_csv(root / "test.csv", index=False)
    with pytest.raises(LayoutError, match=r"test.csv: row 3: object_id '\.\.' is a relative folder name"):
        read_test(root)


def test_a_checkpoint_of_another_task_or_backbone_is_refused_by_evaluate_and_resume(runs, tmp_path):
    run = _copy_run(runs, tmp_path, "foreign")
    jigsaw = runs["jigsaw"]
    weights = torch.load(run / "2.pth", weights_only=True)
    weights["model"] = torch.load(jigsaw / "2.pth", weights_only=True)["model"]  # an 81-way jigsaw head
    torch.save(weights, run / "2.pth")
    with pytest.raises(CheckpointError) as err:
        evaluate_checkpoint(run, 2, device="cpu")
    head = tuple(weights["model"]["head.weight"].shape)  # (81, the backbone's features)
    assert "2.pth: weights do not fit this run's model" in _one_line(err) and str(head) in str(err.value)
    assert not list(run.glob("eval/epoch2_*"))

    cfg = tiny_config("target", runs["dataroot"], tmp_path, "exp=foreign", "epochs=3")
    rundir.done_path(run).unlink()
    with pytest.raises(CheckpointError, match="2.pth: weights do not fit"):
        train(cfg, "3fold0", "cpu", resume=True, progress=False)

    # the right weights with another run's optimiser state: torch would only fail at the first step
    shutil.copy(runs["target"] / "2.pth", run / "2.pth")
    shutil.copy(jigsaw / rundir.RESUME, run / rundir.RESUME)
    with pytest.raises(CheckpointError) as err:
        train(cfg, "3fold0", "cpu", resume=True, progress=False)
    assert "resume.pth: does not fit this run's optimiser" in _one_line(err)


def test_a_corrupt_run_config_is_one_line(runs, tmp_path):
    run = _copy_run(runs, tmp_path, "corrupt")
    rundir.config_path(run).write_text("{{{: [\n")
    with pytest.raises(Fold0123Error) as err:
        evaluate_checkpoint(run, 2, device="cpu")
    assert "config.yml: not valid YAML" in _one_line(err)


@pytest.mark.parametrize("damage", [b"", b"PK\x03\x04 truncated", b"\x93NUMPY not a zip"])
def test_a_zero_byte_or_truncated_eval_npz_is_one_line(tmp_path, damage):
    path = eval_path(tmp_path, 1, "oof")
    path.parent.mkdir()
    path.write_bytes(damage)
    with pytest.raises(RunError) as err:
        load_outputs(tmp_path, 1, "oof")
    assert f"{path}: not a readable npz" in _one_line(err)


def test_an_out_dir_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "out").write_text("x")
    with pytest.raises(OutputPathError, match="is a file, not a folder"):
        write_text(tmp_path / "out" / "report.md", "hello")
    (tmp_path / "folder.md").mkdir()
    with pytest.raises(OutputPathError, match="folder.md: is a folder"):
        write_text(tmp_path / "folder.md", "hello")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.md", "out"]
