"""Step-based control for long epochs (issue 21): max_steps, step checkpoints the watcher evaluates, a resume
part-way through an epoch that ends as the uninterrupted run, and the two resets of Chinese-CLIP's resume."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fold0123.common import rundir
from fold0123.engine import evaluator
from fold0123.engine.trainer import train
from fold0123.engine.watch import watch_run
from fold0123.models.checkpoints import read_checkpoint
from tests.conftest import Interrupt, make_recipe_root, tiny_config

SPLIT = "3fold1"
# the options that draw from every generator a part-way resume must put back: crops, jitter, erasing, mixing
DRAWS = ("augmentation.crop_scale=[0.5,1.0]", "augmentation.color_jitter=0.3", "augmentation.erasing=0.5",
         "mixup.mixup_alpha=0.4", "mixup.cutmix_alpha=1.0")


@pytest.fixture(scope="module")
def dataroot(tmp_path_factory):
    return make_recipe_root(tmp_path_factory.mktemp("steps") / "data")


def config(dataroot, runs, *overrides):
    return tiny_config("onehot", dataroot, runs, "transfer_from=null", *overrides)


def logged_steps(run) -> list[tuple[int, int]]:
    """(epoch, step) of every loss.log line."""
    return [(int(f[0]), int(f[1])) for f in (line.split() for line in
                                             rundir.loss_log_path(run).read_text().splitlines()[1:])]


def steps_per_epoch(run) -> int:
    return max(step for epoch, step in logged_steps(run) if epoch == 1)


def interrupted_at(monkeypatch, step: int) -> None:
    """A kill right after global step `step`'s log line (before its step checkpoint: the resume state is the
    previous step's)."""
    from fold0123.engine import trainer

    write = trainer.LossLog.write

    def log_then_die(self, epoch, at, *rest):
        write(self, epoch, at, *rest)
        if at == step:
            raise Interrupt
    monkeypatch.setattr(trainer.LossLog, "write", log_then_die)


def test_max_steps_trains_that_many_steps_and_a_resume_extends_it(tmp_path, dataroot):
    cfg = config(dataroot, tmp_path, "epochs=1", "max_steps=4")
    run = train(cfg, SPLIT, "cpu", progress=False)
    spe = steps_per_epoch(run)
    assert 2 <= spe < 4  # the fixture: the 4 steps end part-way through epoch 2
    assert [step for _, step in logged_steps(run)] == [1, 2, 3, 4]
    assert rundir.read_run_config(run).epochs == 2  # what max_steps took, for the watcher and the evaluator
    assert [e for e, _ in rundir.list_checkpoints(run)] == [1, 2] and rundir.done_path(run).is_file()
    lrs = [float(line.split()[3]) for line in rundir.loss_log_path(run).read_text().splitlines()[1:]]
    assert lrs[-1] < 0.05 * max(lrs)  # the cosine spans the 4 steps, not the epochs
    state = torch.load(rundir.resume_path(run), weights_only=True)
    assert state["global_step"] == 4
    # a DONE run asked for more steps goes on from step 4, whole epochs until it has them
    extended = train(config(dataroot, tmp_path, "epochs=1", "max_steps=7"), SPLIT, "cpu", resume=True,
                     progress=False)
    assert [step for _, step in logged_steps(extended)] == list(range(1, 8))
    assert rundir.done_path(extended).is_file()


@pytest.mark.integration
def test_a_run_stopped_part_way_through_an_epoch_resumes_from_its_step_bit_exact(tmp_path, dataroot, monkeypatch,
                                                                                 capsys):
    overrides = ("epochs=2", "save_every_steps=1", *DRAWS)
    full = train(config(dataroot, tmp_path / "full", *overrides), SPLIT, "cpu", progress=False)
    spe = steps_per_epoch(full)
    cut_cfg = config(dataroot, tmp_path / "cut", *overrides)
    with monkeypatch.context() as patch:
        interrupted_at(patch, spe + 2)  # epoch 2's second step: resume.pth is at its first
        with pytest.raises(Interrupt):
            train(cut_cfg, SPLIT, "cpu", progress=False)
    cut = rundir.run_dir(cut_cfg, SPLIT)
    state = torch.load(rundir.resume_path(cut), weights_only=True)
    assert (state["epoch"], state["global_step"], state["batch"]) == (1, spe + 1, 2)  # 2 micro-batches a step
    assert [s for s, _ in rundir.list_step_checkpoints(cut)] == [spe + 1]  # older resume points pruned
    capsys.readouterr()
    train(cut_cfg, SPLIT, "cpu", resume=True, progress=False)
    assert "part-way through epoch 2 (after its micro-batch 2)" in capsys.readouterr().err
    for epoch in (1, 2):
        a, b = (read_checkpoint(rundir.checkpoint_path(r, epoch))["model"] for r in (full, cut))
        assert all(torch.equal(a[key], b[key]) for key in a), epoch
    assert logged_steps(cut) == logged_steps(full)  # the killed step's line replaced, none twice
    assert not rundir.list_step_checkpoints(cut) and not rundir.list_step_checkpoints(full)  # resume points only

    # the resets: the epoch restarts from its first batch (so it takes spe more steps), the optimiser's moments
    # start afresh (AdamW's step count restarts at the resume)
    reset_cfg = config(dataroot, tmp_path / "reset", *overrides)
    with monkeypatch.context() as patch:
        interrupted_at(patch, spe + 2)
        with pytest.raises(Interrupt):
            train(reset_cfg, SPLIT, "cpu", progress=False)
    reset = train(config(dataroot, tmp_path / "reset", *overrides, "reset_data_offset=true",
                         "reset_optimizer=true"), SPLIT, "cpu", resume=True, progress=False)
    assert [step for _, step in logged_steps(reset)] == list(range(1, 2 * spe + 2))
    moments = torch.load(rundir.resume_path(reset), weights_only=True)["optimizer"]["state"]
    assert {int(s["step"]) for s in moments.values()} == {spe}
    a, b = (read_checkpoint(rundir.checkpoint_path(r, 2))["model"] for r in (full, reset))
    assert not torch.equal(a["head.weight"], b["head.weight"])


def test_the_watcher_evaluates_step_checkpoints_and_epoch_picks_never_see_them(tmp_path, dataroot):
    run = train(config(dataroot, tmp_path, "epochs=2", "eval_every_steps=1"), SPLIT, "cpu", progress=False)
    spe = steps_per_epoch(run)
    kept = [s for s, _ in rundir.list_step_checkpoints(run)]
    assert kept == [s for s in range(1, 2 * spe + 1) if s % spe]  # an epoch's last step is its epoch checkpoint
    assert read_checkpoint(rundir.step_checkpoint_path(run, 1))["step"] == 1

    def epoch(run, e):
        return evaluator.evaluate_epoch(run, e)

    def step(run, s):
        return evaluator.evaluate_step(run, s)
    result = watch_run(run, epoch, evaluate_step=step, timeout_s=300)
    assert result.exit_code == 0 and result.evaluated == [1, 2] and result.steps == kept
    metrics = rundir.read_metrics(run, rundir.step_tag(kept[0]))
    assert metrics["step"] == kept[0] and metrics["checkpoint"] == f"step{kept[0]}.pth"
    assert rundir.evaluated_epochs(run) == [1, 2]  # what the stack picks from
    first, last = (np.load(rundir.eval_npz_path(run, rundir.step_tag(s), "oof"))["outputs"]
                   for s in (kept[0], kept[-1]))
    assert first.shape == last.shape and not np.array_equal(first, last)  # each step's own weights
    # a second watcher has nothing left to do
    again = watch_run(run, epoch, evaluate_step=step, timeout_s=60)
    assert again.exit_code == 0 and not again.evaluated and not again.steps
