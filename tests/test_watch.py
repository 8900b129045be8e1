"""evaluate.py --watch (engine.watch): reacts to renames only, in epoch order, restart-safe, exits on DONE."""
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest
import torch

from fold0123.common import rundir
from fold0123.engine.evaluator import evaluate_checkpoint
from fold0123.engine.watch import watch_run
from fold0123.models.checkpoints import read_checkpoint
from tests.conftest import ROOT, session_runs, tiny_config

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return session_runs(tmp_path_factory)


def empty_run(source, dest):
    """A run directory that has its config but no checkpoints yet (train.py writes config.yml first)."""
    dest.mkdir(parents=True)
    shutil.copy(rundir.config_path(source), rundir.config_path(dest))
    return dest


class Recorder:
    """The real evaluator, plus a note of what the checkpoint file looked like when evaluation began."""

    def __init__(self, expected_sizes=None):
        self.expected_sizes = expected_sizes or {}
        self.calls = []

    def __call__(self, run, epoch):
        path = rundir.checkpoint_path(run, epoch)
        self.calls.append((epoch, path.stat().st_size))
        read_checkpoint(path)  # raises if the file is partial
        return evaluate_checkpoint(run, epoch, device="cpu")


def start_watch(run, evaluate, **kw):
    out = {}
    thread = threading.Thread(target=lambda: out.setdefault("result", watch_run(run, evaluate, log=lambda m: None,
                                                                                timeout_s=120, **kw)))
    thread.start()
    return thread, out


def slow_write(source, dest, chunks=20, pause=0.02):
    """Write `source`'s bytes under a temp name in chunks, fsync, then rename: what train.py does, slowly."""
    data = source.read_bytes()
    tmp = dest.with_name(f"{dest.name}.tmp.{os.getpid()}")
    step = max(1, len(data) // chunks)
    with open(tmp, "wb") as f:
        for i in range(0, len(data), step):
            f.write(data[i:i + step])
            f.flush()
            time.sleep(pause)
        os.fsync(f.fileno())
    os.replace(tmp, dest)


def test_watcher_never_opens_a_partial_checkpoint(runs, tmp_path):
    source = runs["target"]
    run = empty_run(source, tmp_path / source.name)
    recorder = Recorder()
    thread, out = start_watch(run, recorder)
    time.sleep(0.5)
    for epoch in (1, 2):
        slow_write(rundir.checkpoint_path(source, epoch), rundir.checkpoint_path(run, epoch))
    (run / "DONE.tmp.1").write_text("x")
    os.replace(run / "DONE.tmp.1", rundir.done_path(run))
    thread.join(120)
    result = out["result"]
    assert result.exit_code == 0 and result.errors == []
    assert result.evaluated == [1, 2]
    sizes = {e: rundir.checkpoint_path(source, e).stat().st_size for e in (1, 2)}
    assert recorder.calls == [(1, sizes[1]), (2, sizes[2])]
    assert all(rundir.is_evaluated(run, e) for e in (1, 2))


def test_a_checkpoint_pruned_while_it_is_evaluated_is_skipped_and_a_failure_on_one_still_there_is_not(runs, tmp_path):
    """keep_last: the trainer may delete an epoch between its weights' tag and its EMA's, which read the file
    once each; the watcher then skips it (exit 0). The same failure with the file in place stays an error."""
    run = shutil.copytree(runs["target"], tmp_path / runs["target"].name)  # 1.pth, 2.pth and DONE exist

    def pruned_under_it(run, epoch):
        if epoch == 1:
            rundir.checkpoint_path(run, 1).unlink()  # the trainer's prune, mid-evaluation
            read_checkpoint(rundir.checkpoint_path(run, 1))  # the EMA tag's read: CheckpointError, not found
        return evaluate_checkpoint(run, epoch, device="cpu")

    result = watch_run(run, pruned_under_it, log=lambda m: None, timeout_s=120)
    assert result.errors == [] and result.exit_code == 0 and result.evaluated == [2]

    def broken(run, epoch):
        raise RuntimeError("out of memory")

    again = watch_run(shutil.copytree(runs["target"], tmp_path / "again"), broken, log=lambda m: None,
                      timeout_s=120)
    assert again.exit_code == 1 and len(again.errors) == 2 and "1.pth: RuntimeError: out of memory" in again.errors[0]


def test_restart_evaluates_what_appeared_while_down_and_skips_what_is_done(runs, tmp_path):
    run = shutil.copytree(runs["target"], tmp_path / runs["target"].name)  # 1.pth, 2.pth and DONE exist
    evaluate_checkpoint(run, 1, device="cpu")
    before = rundir.metrics_path(run, "epoch1").stat().st_mtime_ns
    recorder = Recorder()
    result = watch_run(run, recorder, log=lambda m: None, timeout_s=120)
    assert result.evaluated == [2] and result.skipped == [1] and result.exit_code == 0
    assert rundir.metrics_path(run, "epoch1").stat().st_mtime_ns == before
    # a second restart has nothing left to do and exits at once
    again = watch_run(run, recorder, log=lambda m: None, timeout_s=120)
    assert again.evaluated == [] and again.skipped == [1, 2]


def test_every_n_keeps_the_last_epoch(runs, tmp_path):
    run = empty_run(runs["target"], tmp_path / "target_3fold0")
    for epoch in (1, 2, 3):  # the config says 2 epochs; a third appeared: DONE makes the newest the last
        shutil.copy(rundir.checkpoint_path(runs["target"], min(epoch, 2)), rundir.checkpoint_path(run, epoch))
    rundir.done_path(run).write_text("")
    calls = []
    result = watch_run(run, lambda r, e: calls.append(e), every=2, log=lambda m: None, timeout_s=60)
    assert calls == [2, 3] and result.exit_code == 0


def test_corrupt_checkpoint_is_reported_and_failed_run_exits_nonzero(runs, tmp_path):
    run = empty_run(runs["target"], tmp_path / "target_3fold0")
    shutil.copy(rundir.checkpoint_path(runs["target"], 1), rundir.checkpoint_path(run, 1))
    rundir.checkpoint_path(run, 2).write_bytes(b"\x00" * 512)
    rundir.failed_path(run).write_text("RuntimeError: out of memory\n")
    messages = []
    result = watch_run(run, Recorder(), log=messages.append, timeout_s=120)
    assert result.evaluated == [1] and result.failed_run and result.exit_code == 1
    assert len(result.errors) == 1 and "2.pth: corrupt or truncated checkpoint" in result.errors[0]
    assert any("FAILED" in m for m in messages)


@pytest.mark.integration
def test_cli_waits_for_the_run_directory_and_exits_after_done(runs, tmp_path):
    run = tmp_path / "later" / runs["target"].name
    watcher = subprocess.Popen([sys.executable, "evaluate.py", "--run", str(run), "--watch", "--device", "cpu",
                                "--timeout", "120"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    try:
        time.sleep(2)
        assert watcher.poll() is None  # still waiting
        empty_run(runs["target"], run)
        slow_write(rundir.checkpoint_path(runs["target"], 1), rundir.checkpoint_path(run, 1), chunks=5)
        rundir.done_path(run).write_text("")
        out, err = watcher.communicate(timeout=120)
    finally:
        if watcher.poll() is None:
            watcher.kill()
    assert watcher.returncode == 0, err
    assert rundir.is_evaluated(run, 1) and '"epoch": 1' in out


@pytest.mark.integration
def test_a_watcher_started_after_an_extension_evaluates_the_new_epochs(runs, tmp_path):
    """`train.py --resume --set epochs=4` on a DONE 2-epoch run removes DONE first, so a watcher started once the
    extension is under way waits for epochs 3 and 4 instead of exiting on the old DONE."""
    from fold0123.engine.trainer import train

    # its own 2-epoch run without transfer (the session's target run transferred from jigsaw_all: extending it
    # with transfer_from=null would be a changed config, which train.py refuses as stale)
    run = train(tiny_config("target", runs["dataroot"], tmp_path / "runs", "transfer_from=null"), "3fold0",
                device="cpu", progress=False)
    for epoch in (1, 2):  # evaluated while the first 2 epochs ran
        rundir.metrics_path(run, rundir.epoch_tag(epoch)).parent.mkdir(exist_ok=True)
        rundir.metrics_path(run, rundir.epoch_tag(epoch)).write_text("{}")
    assert rundir.done_path(run).is_file()
    extend = subprocess.Popen([sys.executable, "train.py", "--conf", "parameters/tiny/target.yml", "--split", "3fold0",
                               "--resume", "--device", "cpu", "--no-progress", "--set", "transfer_from=null",
                               "--set", "epochs=4", "--set", f"dataroot={runs['dataroot']}",
                               "--set", f"checkpoints_dir={tmp_path / 'runs'}"],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    try:
        while rundir.done_path(run).is_file() and extend.poll() is None:
            time.sleep(0.05)
        recorder = Recorder()
        result = watch_run(run, recorder, log=lambda m: None, timeout_s=300)
        _, err = extend.communicate(timeout=300)
    finally:
        if extend.poll() is None:
            extend.kill()
    assert extend.returncode == 0, err
    assert "extending it to 4 epochs" in err
    assert result.exit_code == 0 and result.skipped == [1, 2] and result.evaluated == [3, 4]
    assert [e for e, _ in recorder.calls] == [3, 4] and rundir.is_evaluated(run, 4)


def test_one_watcher_per_run_a_second_is_refused_naming_the_first_or_waits(runs, tmp_path):
    import os
    import threading

    from fold0123.common.io import LockedError, exclusive_lock

    run = shutil.copytree(runs["target"], tmp_path / runs["target"].name)  # DONE, 2 epochs
    with exclusive_lock(rundir.eval_lock_path(run)):
        with pytest.raises(LockedError, match=rf"eval.lock: another evaluate.py --watch .*\(pid {os.getpid()}\)"):
            watch_run(run, Recorder(), log=lambda m: None, timeout_s=60)
    held, release = threading.Event(), threading.Event()

    def first_watcher():  # holds the lock until told to go
        with exclusive_lock(rundir.eval_lock_path(run)):
            held.set()
            release.wait(10)

    holder = threading.Thread(target=first_watcher)
    holder.start()
    held.wait(10)
    threading.Timer(0.5, release.set).start()
    recorder = Recorder()
    result = watch_run(run, recorder, log=lambda m: None, timeout_s=60, wait_lock=True)
    holder.join()
    assert result.exit_code == 0 and [e for e, _ in recorder.calls] == [1, 2]
