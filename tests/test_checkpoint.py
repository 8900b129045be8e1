"""Checkpoint files and run-directory names: atomic writes, weights_only loading, clear errors, pruning, and which
(weights, resume state) pair a resume starts from."""
import os
import random

import numpy as np
import pytest
import torch

from fold0123.common.schema import RunConfig
from fold0123.common import rundir
from fold0123.models.checkpoints import (CheckpointError, prune_checkpoints, read_checkpoint, read_resume, rng_state,
                                         save_checkpoint, set_rng_state)


def small_state(epoch: int) -> dict:
    torch.manual_seed(epoch)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    return {"epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(), "rng": rng_state(),
            "config": {"lr": 1e-3, "eval": {"parts": ["oof", "test"]}, "transfer_from": None}}


def test_save_load_roundtrip_with_weights_only(tmp_path):
    state = small_state(1)
    path = save_checkpoint(tmp_path / "1.pth", state)
    assert [p.name for p in tmp_path.iterdir()] == ["1.pth"]  # no temp file left behind
    loaded = read_checkpoint(path)
    for k, v in state["model"].items():
        assert torch.equal(loaded["model"][k], v)
    assert loaded["config"] == state["config"]
    assert loaded["optimizer"]["state"][0]["exp_avg"].shape == (2, 4)


def test_rng_state_restores_every_generator(tmp_path):
    save_checkpoint(tmp_path / "1.pth", {"model": {}, "rng": rng_state()})
    before = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    set_rng_state(read_checkpoint(tmp_path / "1.pth")["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == before


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_checkpoint_gives_one_line_naming_the_file(tmp_path, damage):
    path = save_checkpoint(tmp_path / "3.pth", small_state(3))
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"not a checkpoint" * 10, "empty": b""}[damage])
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and "corrupt or truncated" in message and "\n" not in message


def test_missing_checkpoint_and_foreign_pickle_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "7.pth")

    from fractions import Fraction  # any class outside torch's allowlist needs pickle: weights_only refuses it
    torch.save({"model": {}, "x": Fraction(1, 3)}, tmp_path / "8.pth")
    with pytest.raises(CheckpointError, match="8.pth: refused: loading it would unpickle fractions.Fraction, and "
                                              "unpickling a file can run code") as info:
        read_checkpoint(tmp_path / "8.pth")
    assert "\n" not in str(info.value) and "corrupt" not in str(info.value)


def test_failed_write_leaves_no_file(tmp_path):
    class Unsaveable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")
    with pytest.raises(RuntimeError):
        save_checkpoint(tmp_path / "2.pth", {"model": {}, "x": Unsaveable()})
    assert list(tmp_path.iterdir()) == []


def test_run_dir_names_and_listing(tmp_path):
    run = rundir.run_dir(RunConfig(checkpoints_dir=str(tmp_path), exp="target"), "3fold0")
    assert run == tmp_path / "target_3fold0"
    run.mkdir()
    for name in ["1.pth", "10.pth", "2.pth", "2.pth.tmp.123", "soup3.pth", "0.pth", "02.pth", "x.pth", "resume.pth"]:
        (run / name).write_bytes(b"")
    assert [e for e, _ in rundir.list_checkpoints(run)] == [1, 2, 10]
    assert rundir.checkpoint_epoch("5.pth.tmp.99") is None
    assert rundir.eval_npz_path(run, "epoch3", "oof") == run / "eval" / "epoch3_oof.npz"
    with pytest.raises(ValueError):
        rundir.eval_npz_path(run, "epoch3", "valid")


def split_state(epoch: int) -> tuple[dict, dict]:
    full = small_state(epoch)
    weights = {k: full[k] for k in ("epoch", "model", "config")}
    resume = {k: full[k] for k in ("epoch", "optimizer", "rng")}
    return weights, dict(resume, global_step=10 * epoch, scheduler={}, scaler={})


def test_read_resume_trusts_the_resume_files_epoch(tmp_path):
    assert read_resume(tmp_path / "nothing") is None
    assert read_resume(tmp_path) is None
    for e in (1, 2):
        save_checkpoint(rundir.checkpoint_path(tmp_path, e), split_state(e)[0])
    save_checkpoint(rundir.resume_path(tmp_path), split_state(1)[1])  # died after 2.pth, before resume.pth for 2
    weights, state = read_resume(tmp_path)
    assert weights["epoch"] == 1 and state["epoch"] == 1 and state["global_step"] == 10
    assert torch.equal(weights["model"]["weight"], small_state(1)["model"]["weight"])
    save_checkpoint(rundir.resume_path(tmp_path), split_state(2)[1])
    assert read_resume(tmp_path)[0]["epoch"] == 2


def test_read_resume_starts_afresh_when_killed_before_the_first_resume_state(tmp_path):
    """A kill between 1.pth and the run's first resume.pth (found by tests/test_faults.py) left a run that
    `--resume` refused forever: no epoch finished, so it starts again. A finished run keeps refusing."""
    save_checkpoint(rundir.checkpoint_path(tmp_path, 1), split_state(1)[0])
    assert read_resume(tmp_path) is None
    rundir.done_path(tmp_path).write_text("2026-01-01\n")
    with pytest.raises(CheckpointError, match="resume.pth: not found, and 1.pth holds weights only"):
        read_resume(tmp_path)


def test_read_resume_refuses_what_it_cannot_continue(tmp_path):
    for epoch in (1, 2):
        save_checkpoint(rundir.checkpoint_path(tmp_path, epoch), split_state(epoch)[0])
    with pytest.raises(CheckpointError, match="resume.pth: not found, and 2.pth holds weights only"):
        read_resume(tmp_path)
    rundir.checkpoint_path(tmp_path, 2).unlink()
    save_checkpoint(rundir.resume_path(tmp_path), split_state(2)[1])
    with pytest.raises(CheckpointError, match="2.pth: not found, but resume.pth resumes after epoch 2"):
        read_resume(tmp_path)
    rundir.resume_path(tmp_path).write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="resume.pth: corrupt or truncated"):
        read_resume(tmp_path)
    save_checkpoint(rundir.resume_path(tmp_path), {"epoch": 1, "model": {}})
    with pytest.raises(CheckpointError, match="resume.pth: not a resume state"):
        read_resume(tmp_path)


def test_read_resume_accepts_a_run_from_before_resume_pth(tmp_path):
    """Old runs kept optimiser, scheduler and RNG in every epoch file: the newest serves as both halves."""
    for e in (1, 2):
        save_checkpoint(rundir.checkpoint_path(tmp_path, e), dict(small_state(e), global_step=e, scheduler={},
                                                                  scaler={}))
    weights, state = read_resume(tmp_path)
    assert weights is state and state["epoch"] == 2


def test_prune_keeps_the_newest(tmp_path):
    for e in range(1, 6):
        save_checkpoint(tmp_path / f"{e}.pth", {"model": {}})
    assert prune_checkpoints(tmp_path, 0) == []
    prune_checkpoints(tmp_path, 2)
    assert sorted(os.listdir(tmp_path)) == ["4.pth", "5.pth"]


def test_background_saver_writes_a_snapshot_in_order_and_reports_errors(tmp_path, monkeypatch):
    from fold0123.engine import saver as saver_module
    from fold0123.engine.saver import BackgroundSaver

    weights = {"model": {"w": torch.zeros(3)}, "epoch": 1}
    order = []
    real_save = saver_module.save_checkpoint
    monkeypatch.setattr(saver_module, "save_checkpoint", lambda p, s: (order.append(p.name), real_save(p, s)))
    saver = BackgroundSaver()
    saver.save([(tmp_path / "1.pth", weights), (tmp_path / "resume.pth", {"epoch": 1, "model": {}})],
               then=lambda: order.append("then"))
    weights["model"]["w"].add_(1)  # training goes on updating the live tensors in place
    saver.wait()
    assert order == ["1.pth", "resume.pth", "then"]
    assert torch.equal(read_checkpoint(tmp_path / "1.pth")["model"]["w"], torch.zeros(3))

    def fail():
        raise OSError("disk full")
    saver.save([], then=fail)
    with pytest.raises(OSError, match="disk full"):
        saver.wait()
    saver.wait()  # reported once
    saver.save([(tmp_path / "2.pth", {"model": {}, "epoch": 2})], background=False)  # the last epoch: written here
    assert read_checkpoint(tmp_path / "2.pth")["epoch"] == 2
