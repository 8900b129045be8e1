"""Fault injection (issue 12, "The suite"): real train.py / evaluate.py / fold0123 processes killed with SIGKILL,
and a real full disk; the runs must come back bit-identical, with nothing half-written and nothing left behind.

`make test` runs a small slice (FAULT_KILLS=5 train.py kills, FAULT_EVAL_KILLS=2 evaluator kills, the disk-full
case as root); `make faults` runs the full counts (20 and 12) and the fold0123 row kill in tmux, and writes the
figures to FAULT_SUMMARY (docs/reliability.md quotes them). The schedule of kill moments is seeded
(FAULT_SEED); see tests/faults_harness.py for how a moment is chosen and observed.
"""
from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from fold0123.common import rundir
from fold0123.common.poll import wait_until
from fold0123.models.checkpoints import read_checkpoint, read_resume
from tests import faults_harness as fh
from tests.conftest import make_recipe_root

pytestmark = pytest.mark.faults
needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run every killed one is compared with, and its evaluation (eval/ of a linked copy)."""
    started = time.monotonic()
    base = tmp_path_factory.mktemp("faults")
    dataroot = make_recipe_root(base / "data", tags=False)
    result = fh.run(fh.train_argv(dataroot, base / "reference"))
    assert result.returncode == 0, result.stderr
    run = base / "reference" / f"{fh.EXP}_{fh.SPLIT}"
    window = rundir.done_path(run).stat().st_mtime - rundir.config_path(run).stat().st_mtime

    evaluated = fh.link_run(run, base / "reference_eval" / run.name)
    result = fh.run(fh.evaluate_argv(evaluated, "--watch", "--timeout", "120"))
    assert result.returncode == 0, result.stderr
    metrics = [rundir.metrics_path(evaluated, rundir.epoch_tag(e)) for e in range(1, fh.EPOCHS + 1)]
    assert all(m.is_file() for m in metrics)
    eval_window = max(m.stat().st_mtime for m in metrics) - rundir.eval_lock_path(evaluated).stat().st_mtime
    fh.record("reference", {"wall_s": round(time.monotonic() - started, 1)})
    return SimpleNamespace(base=base, dataroot=dataroot, run=run, window_s=window, evaluated=evaluated,
                           eval_window_s=eval_window)


def in_parallel(trials, work):
    """Run `work(trial)` for every trial, FAULT_JOBS at a time; a trial that raised is recorded, not lost."""
    def guarded(trial):
        try:
            trial.outcome.update(work(trial))
        except Exception as err:  # noqa: BLE001 - reported in the assertions with the others
            trial.outcome["error"] = f"{type(err).__name__}: {err}"
        return trial
    with ThreadPoolExecutor(fh.fault_jobs()) as pool:
        return list(pool.map(guarded, trials))


def test_a_moment_trial_whose_child_ends_first_tries_again_earlier_and_only_a_moment_trial(tmp_path):
    """kill_landed on a real child that lives 1.2 s: a `moment` of 3.2 s misses it twice (3.2, 1.6), lands at
    0.8 s, each try in a fresh folder; a `write` trial whose trigger never fires gets one try and reports the
    miss; a `moment` that keeps missing gives up after its tries."""
    child = ["sleep", "1.2"]
    folder, starts = tmp_path / "trial", []

    def attempt(trial):
        assert not folder.exists()  # the failed try's folder was removed before this one
        folder.mkdir()
        starts.append(time.monotonic())
        return fh.start(child, folder / "killed.log"), lambda: time.monotonic() - starts[-1] > trial.delay_s

    moment = fh.Trial(0, "moment", delay_s=3.2)
    assert fh.kill_landed(moment, lambda: attempt(moment), folder)
    assert len(starts) == 3 and moment.delay_s == 0.8

    shutil.rmtree(folder)
    starts.clear()
    write = fh.Trial(1, "write", k=3, delay_s=9.0)
    assert not fh.kill_landed(write, lambda: attempt(write), folder)
    assert len(starts) == 1

    shutil.rmtree(folder)
    starts.clear()
    late = fh.Trial(2, "moment", delay_s=80.0)
    assert not fh.kill_landed(late, lambda: attempt(late), folder, tries=3)
    assert len(starts) == 3 and late.delay_s == 20.0


# ---------------------------------------------------------------------------------------------------- train.py

def train_trial(ref, trial: fh.Trial) -> dict:
    """One kill of train.py at the trial's moment, then `--resume` to DONE; what the run dir held at each step."""
    folder = ref.base / f"train_trial{trial.index}"
    runs = folder / "runs"
    run = runs / f"{fh.EXP}_{fh.SPLIT}"

    def attempt():
        if trial.kind == "write":
            trigger = fh.during_write(run, fh.is_pth, trial.k)
        else:  # startup, moment: seconds after config.yml, the first thing the run writes
            trigger = fh.after_appears(rundir.config_path(run), trial.delay_s)
        return fh.start(fh.train_argv(ref.dataroot, runs), folder / "killed.log"), trigger
    started = time.monotonic()
    out = {"killed": fh.kill_landed(trial, attempt, folder), "kill_s": round(time.monotonic() - started, 2)}
    at_kill = fh.temporaries(runs)
    out.update(temps_at_kill=at_kill, mid_write=any(".pth.tmp." in t for t in at_kill),
               partial_finals=fh.partial_finals(run) if run.is_dir() else [],
               resume_from=(torch.load(rundir.resume_path(run), weights_only=True)["epoch"]
                            if rundir.resume_path(run).is_file() else 0))
    started = time.monotonic()
    result = fh.run(fh.train_argv(ref.dataroot, runs, resume=True))
    out["resume_s"] = round(time.monotonic() - started, 2)
    out["resumed"] = result.returncode == 0 and rundir.done_path(run).is_file()
    if not out["resumed"]:
        out["resume_stderr"] = result.stderr.strip().splitlines()[-3:]
        return out
    out["differences"] = fh.weight_differences(ref.run, run)[:5]
    same_log = ([line.split()[:2] for line in rundir.loss_log_path(ref.run).read_text().splitlines()]
                == [line.split()[:2] for line in rundir.loss_log_path(run).read_text().splitlines()])
    out["identical"] = not out["differences"] and same_log
    out["orphans_after"] = fh.temporaries(runs)
    shutil.rmtree(folder)  # 225 MB a trial
    return out


def test_train_py_killed_at_random_moments_resumes_bit_identically(reference):
    """SIGKILL train.py (FAULT_KILLS times, most during a checkpoint write), `--resume` to DONE: every final-named
    file at every kill point reads back whole, every resumed run ends with the uninterrupted run's weights, loss
    steps and optimiser state, and nothing named `*.tmp.*` is left anywhere under checkpoints_dir."""
    started, n = time.monotonic(), fh.fault_count("FAULT_KILLS", 5)
    trials = in_parallel(fh.train_schedule(n, fh.fault_seed(), reference.window_s),
                         lambda t: train_trial(reference, t))
    outcomes = [t.outcome for t in trials]
    fh.record("train_kills", {
        "trials": n, "seed": fh.fault_seed(), "window_s": round(reference.window_s, 2),
        **fh.tally(outcomes, ("killed", "mid_write", "resumed", "identical"),
                   ("partial_finals", "temps_at_kill", "orphans_after")),
        "wall_s": round(time.monotonic() - started, 1), "jobs": fh.fault_jobs(), "schedule": fh.trial_rows(trials)})
    for t in trials:
        o = t.outcome
        where = f"trial {t.index} ({t.describe()}): {o}"
        assert "error" not in o and o["killed"], where
        assert not o["partial_finals"], where
        assert o["resumed"], where
        assert o["identical"], where
        assert not o["orphans_after"], where
    # the schedule really aimed at checkpoint writes: at least one kill left a half-written .pth behind
    assert n < 3 or any(o["mid_write"] for o in outcomes), [t.describe() for t in trials]


# ---------------------------------------------------------------------------------------------------- evaluate.py

def eval_trial(ref, trial: fh.Trial) -> dict:
    """One kill of `evaluate.py --watch` on a copy of the finished run, then a restarted watcher to its end."""
    folder = ref.base / f"eval_trial{trial.index}"
    run = folder / ref.run.name
    every = lambda name: True  # noqa: E731 - every eval file (npz parts and metrics.json)

    def attempt():
        fh.link_run(ref.run, run)
        if trial.kind == "file":
            counter = fh.WriteCounter(rundir.eval_dir(run), every)

            def trigger():
                counter.poll()
                return counter.completed >= trial.k
        elif trial.kind == "temp":
            trigger = fh.during_write(rundir.eval_dir(run), every, trial.k)
        else:
            trigger = fh.after_appears(rundir.eval_lock_path(run), trial.delay_s)
        return fh.start(fh.evaluate_argv(run, "--watch", "--timeout", "120"), folder / "killed.log"), trigger
    out = {"killed": fh.kill_landed(trial, attempt, folder)}
    at_kill = fh.temporaries(run)
    out.update(temps_at_kill=at_kill, mid_write=bool(at_kill), partial_finals=fh.partial_finals(run),
               evaluated_at_kill=len(rundir.evaluated_epochs(run)))
    result = fh.run(fh.evaluate_argv(run, "--watch", "--timeout", "120"))
    out["restarted"] = result.returncode == 0
    if not out["restarted"]:
        out["restart_stderr"] = result.stderr.strip().splitlines()[-3:]
        return out
    out["differences"] = fh.eval_differences(ref.evaluated, run)
    out["identical"] = not out["differences"]
    out["orphans_after"] = fh.temporaries(run)
    shutil.rmtree(folder)
    return out


def test_evaluate_watch_killed_and_restarted_writes_identical_arrays(reference):
    """SIGKILL `evaluate.py --watch` (FAULT_EVAL_KILLS times: right after one of its files landed, during a
    write, at a random moment) and start it again: eval/ ends identical to an uninterrupted evaluation (arrays
    bit for bit, metrics as data), no half-written file under a final name, no temporary file left."""
    started, n = time.monotonic(), fh.fault_count("FAULT_EVAL_KILLS", 2)
    trials = in_parallel(fh.eval_schedule(n, fh.fault_seed(), reference.eval_window_s),
                         lambda t: eval_trial(reference, t))
    outcomes = [t.outcome for t in trials]
    fh.record("eval_kills", {
        "trials": n, "seed": fh.fault_seed(), "window_s": round(reference.eval_window_s, 2),
        **fh.tally(outcomes, ("killed", "mid_write", "restarted", "identical"), ("partial_finals", "orphans_after")),
        "wall_s": round(time.monotonic() - started, 1), "jobs": fh.fault_jobs(), "schedule": fh.trial_rows(trials)})
    for t in trials:
        o = t.outcome
        where = f"trial {t.index} ({t.describe()}): {o}"
        assert "error" not in o and o["killed"], where
        assert not o["partial_finals"] and o["restarted"] and o["identical"], where
        assert not o["orphans_after"], where


# ---------------------------------------------------------------------------------------------------- full disk

@pytest.fixture
def tmpfs(tmp_path):
    """mount(size_bytes) / remount(size_bytes) a tmpfs at tmp_path/disk; unmounted in teardown. Root only."""
    if os.geteuid() != 0:
        fh.record("disk_full", {"skipped": "not root: mounting a small tmpfs needs root"})
        pytest.skip("not root: the full-disk probe mounts a small tmpfs as checkpoints_dir (needs root)")
    point = tmp_path / "disk"
    point.mkdir()
    mounted = []

    def mount(size: int, remount: bool = False) -> None:
        opts = f"size={max(1, size // 1024)}k"
        argv = (["mount", "-o", f"remount,{opts}", str(point)] if remount
                else ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(point)])
        result = subprocess.run(argv, capture_output=True, text=True)
        if result.returncode and not mounted:
            fh.record("disk_full", {"skipped": f"cannot mount a tmpfs: {result.stderr.strip()}"})
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
        assert result.returncode == 0, result.stderr
        mounted.append(point)

    yield SimpleNamespace(path=point, mount=mount)
    if mounted and subprocess.run(["umount", str(point)], capture_output=True).returncode:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def fill(folder: Path) -> Path:
    """Write zeros into folder/filler until the file system refuses a single byte more."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:
        for chunk in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError as err:
                assert err.errno == errno.ENOSPC, err
    return filler


def test_a_full_disk_is_one_line_and_a_failed_marker_and_the_run_resumes(reference, tmpfs):
    """checkpoints_dir on a tmpfs with room for epoch 1's files and half of epoch 2's weights: train.py stops
    with one `error:` line naming 2.pth and the space (no traceback), exit 1, FAILED written, epoch 1's weights
    and resume state whole; after the tmpfs grows, `--resume` ends bit-identical to the uninterrupted run. Then
    `evaluate.py --epoch 3` on a disk filled to the last byte: one line naming the npz, nothing half-written;
    after freeing the space the same command writes the reference's arrays."""
    started = time.monotonic()
    weights = rundir.checkpoint_path(reference.run, 1).stat().st_size
    state = rundir.resume_path(reference.run).stat().st_size
    disk = tmpfs.path
    tmpfs.mount(weights + state + weights // 2 + (512 << 10))  # + the image cache, logs and config (~0.3 MB)
    run = disk / f"{fh.EXP}_{fh.SPLIT}"
    result = fh.run(fh.train_argv(reference.dataroot, disk))
    ok, line = fh.one_error_line(result.stderr)
    failed = rundir.failed_path(run)
    found = read_resume(run)  # the previous checkpoint: epoch 1's weights and resume state, whole
    summary = {"train_exit": result.returncode, "train_line": line, "train_no_traceback": "Traceback" not in
               result.stderr, "train_error_lines": result.stderr.count("error:"), "failed_written": failed.is_file(),
               "previous_intact": found is not None and found[1]["epoch"] == 1 and found[0]["epoch"] == 1}
    fh.record("disk_full", summary)
    assert result.returncode == 1 and ok, result.stderr
    assert "2.pth" in line and "no space left" in line and "MB free" in line, line
    assert failed.is_file() and failed.read_text().startswith("DiskFullError: "), failed.read_text()
    assert summary["previous_intact"] and read_checkpoint(rundir.checkpoint_path(run, 1))["epoch"] == 1
    assert not fh.temporaries(disk) and not fh.partial_finals(run) and not rundir.done_path(run).exists()

    tmpfs.mount(3 * weights + 2 * state + (8 << 20), remount=True)  # freeing space: the tmpfs grows
    result = fh.run(fh.train_argv(reference.dataroot, disk, resume=True))
    summary["resume_ok"] = result.returncode == 0 and rundir.done_path(run).is_file()
    summary["resume_identical"] = summary["resume_ok"] and not fh.weight_differences(reference.run, run)
    fh.record("disk_full", summary)
    assert summary["resume_ok"], result.stderr
    assert summary["resume_identical"] and not failed.exists() and not fh.temporaries(disk)

    filler = fill(disk)
    result = fh.run(fh.evaluate_argv(run, "--epoch", "3"))
    ok, line = fh.one_error_line(result.stderr)
    summary.update(eval_exit=result.returncode, eval_line=line, eval_no_traceback="Traceback" not in result.stderr,
                   eval_error_lines=result.stderr.count("error:"))
    fh.record("disk_full", summary)
    assert result.returncode == 1 and ok, result.stderr
    assert "epoch3_" in line and ".npz" in line and "no space left" in line, line
    assert not fh.temporaries(disk) and not fh.partial_finals(run)
    filler.unlink()
    result = fh.run(fh.evaluate_argv(run, "--epoch", "3"))
    epoch3 = [p.name for p in rundir.eval_dir(reference.evaluated).iterdir() if p.name.startswith("epoch3_")]
    summary["eval_rerun_identical"] = result.returncode == 0 and not fh.eval_differences(
        reference.evaluated, run, epoch3)
    summary["wall_s"] = round(time.monotonic() - started, 1)
    fh.record("disk_full", summary)
    assert summary["eval_rerun_identical"], result.stderr


def test_a_disk_too_full_for_the_image_cache_is_one_line_not_a_bus_error(reference, tmpfs):
    """A fresh run on a tmpfs with room for its config but not for the decoded-image cache (a memmap): one
    `error:` line naming the cache file and the bytes it needs beside the bytes free (checked before any write),
    FAILED written, no temporary file left. (It was a SIGBUS: no message, no marker, the half-built cache left
    behind for good.)"""
    tmpfs.mount(100 << 10)
    run = tmpfs.path / f"{fh.EXP}_{fh.SPLIT}"
    result = fh.run(fh.train_argv(reference.dataroot, tmpfs.path))
    ok, line = fh.one_error_line(result.stderr)
    summary = {"exit": result.returncode, "line": line, "no_traceback": "Traceback" not in result.stderr,
               "failed_written": rundir.failed_path(run).is_file(), "orphans": fh.temporaries(tmpfs.path)}
    fh.record("disk_full_cache", summary)
    assert result.returncode == 1 and ok, (result.returncode, result.stderr)
    assert "/cache/images_32_" in line and ".npy: the image cache of " in line and " MB free" in line, line
    assert summary["failed_written"] and not summary["orphans"]


# ---------------------------------------------------------------------------------------------------- fold0123

def train_pid(conf: Path, split: str) -> int | None:
    """The PID of the train.py a pane runs for `split` of the experiment `conf` (read from /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in argv]
        if "train.py" in args and str(conf) in " ".join(args) and split in args:
            return int(entry.name)
    return None


@needs_tmux
@pytest.mark.skipif(not os.environ.get("FAULT_FULL"), reason="the fold0123 row kill (about a minute of four "
                    "tmux rows on this machine) runs in `make faults` (FAULT_FULL=1)")
def test_fold0123_row_killed_in_tmux_resumes_only_that_row_bit_identically(tmp_path, tmux_socket):
    """fold0123 in a real tmux server: SIGKILL one row's train.py while it writes epoch 2, let the other rows
    finish, relaunch. Only the killed row runs again, as a resume; it keeps the thread count it started with
    (the relaunch divides the cores over one row instead of four) in its config.yml and resume.pth, and ends
    bit-identical to an uninterrupted train.py with those threads; the finished rows are not touched."""
    from fold0123.launcher.fold0123 import LaunchOptions, launch_fold0123
    from tests.test_launcher import SPLITS, tiny_experiment

    t0 = time.monotonic()
    conf = tiny_experiment(tmp_path, epochs=fh.EPOCHS)
    runs, victim_split = tmp_path / "runs", "3fold1"
    victim = runs / f"tiny_{victim_split}"
    launcher = fh.start([sys.executable, "launch.py", "fold0123", "--conf", str(conf), "--devices", "cpu",
                         "--socket", tmux_socket, "--wait"], tmp_path / "launch.log")
    try:
        pid = wait_until(lambda: train_pid(conf, victim_split), 120, 0.05, what="the row's train.py")
        trigger = fh.during_write(victim, fh.is_pth, 3)  # 1.pth, resume.pth, then 2.pth: kill during that one
        wait_until(trigger, 300, 0.001, what="the row's third checkpoint write")
        os.kill(pid, signal.SIGKILL)
        killed_at = fh.temporaries(victim)
        launcher.wait(timeout=600)
    finally:
        if launcher.poll() is None:
            fh.sigkill(launcher)
    log = (tmp_path / "launch.log").read_text()
    assert launcher.returncode != 0 and f"failed runs: {victim_split}" in log, log[-2000:]
    others = [s for s in SPLITS if s != victim_split]
    finished = {s: rundir.checkpoint_path(runs / f"tiny_{s}", fh.EPOCHS).stat().st_mtime_ns for s in others}
    for split in others:
        assert rundir.done_path(runs / f"tiny_{split}").is_file()
        assert rundir.is_evaluated(runs / f"tiny_{split}", fh.EPOCHS)
    assert rundir.failed_path(victim).is_file() and not rundir.done_path(victim).exists()
    started = yaml.safe_load(rundir.config_path(victim).read_text())["threads"]

    relaunch = launch_fold0123(conf, LaunchOptions(devices="cpu", socket_name=tmux_socket, linger_s=0, verbose=False))
    states = {o.split: o.state for o in relaunch.outcomes}
    rows = relaunch.plan.rows
    kept = yaml.safe_load(rundir.config_path(victim).read_text())["threads"]
    resumed_threads = torch.load(rundir.resume_path(victim), weights_only=True)["threads"]

    reference = fh.run([sys.executable, "train.py", "--conf", str(conf), "--split", victim_split, "--device", "cpu",
                        "--no-progress", "--set", f"checkpoints_dir={tmp_path / 'reference'}",
                        "--set", f"threads={started}"], threads=started)
    assert reference.returncode == 0, reference.stderr
    differences = fh.weight_differences(tmp_path / "reference" / victim.name, victim)
    fh.record("row_kill", {
        "relaunched_rows": [r.split for r in rows], "resumed": [r.split for r in rows if r.resume],
        "others": sorted({states[s] for s in others}), "temps_at_kill": killed_at,
        "identical": not differences, "threads_started": started, "threads_asked": rows[0].threads if rows else None,
        "threads_kept": kept, "orphans_after": fh.temporaries(runs), "wall_s": round(time.monotonic() - t0, 1)})
    assert states == {**{s: "skipped" for s in others}, victim_split: "done"}, relaunch.summary()
    assert [r.split for r in rows] == [victim_split] and rows[0].resume
    assert kept == started == resumed_threads, (started, kept, resumed_threads)
    assert not differences, differences[:5]
    for split in others:  # the finished rows' files were not rewritten
        assert rundir.checkpoint_path(runs / f"tiny_{split}", fh.EPOCHS).stat().st_mtime_ns == finished[split]
    assert not fh.temporaries(runs)
    assert read_checkpoint(rundir.checkpoint_path(victim, fh.EPOCHS))["epoch"] == fh.EPOCHS
