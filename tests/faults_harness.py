"""The machinery of the fault-injection tests (tests/test_faults.py): real train.py / evaluate.py processes,
killed with a real SIGKILL at chosen moments, and the checks that tell a crash-safe run from a lucky one.

Why it is shaped this way:
- A kill moment is chosen by a seeded schedule (FAULT_SEED) and fires on something the test can observe in the
  run directory (a temporary name appearing, the k-th checkpoint write, seconds after config.yml), not on wall
  time alone: most of a tiny run's wall time is Python importing torch, and a kill there tests nothing.
- Observation is polling (`os.scandir` every millisecond), not inotify: a checkpoint write lasts tens of
  milliseconds, a poll sees it, and polling needs no library that could itself miss events.
- The children run in their own session and are killed by process group, so a kill takes down anything they
  forked, as the kernel's OOM killer or a closed terminal would.
- Every figure a trial produces goes into a summary (FAULT_SUMMARY names a JSON file; the terminal summary
  prints one line per probe), because docs/reliability.md (Faults) quotes these numbers, not adjectives.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import yaml

from fold0123.common import rundir
from fold0123.common.io import cpu_cores, is_temporary

ROOT = Path(__file__).resolve().parents[1]
# the trial run: the tiny preset for three epochs from scratch (no pretext run needed), dihedral augmentation so
# the RNG state matters for a bit-exact resume
TRAIN_OVERRIDES = ("transfer_from=null", "epochs=3", "augment=dihedral")
EPOCHS = 3
SPLIT = "3fold1"
EXP = "target"


# ---------------------------------------------------------------------------------------------------- knobs

def fault_count(name: str, default: int) -> int:
    """A trial count from the environment (`make faults` raises them; `make test` runs the defaults)."""
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def fault_seed() -> int:
    return fault_count("FAULT_SEED", 0)


def fault_jobs() -> int:
    """Trials run side by side (each child uses one thread): the cores, at most 2 unless FAULT_JOBS says."""
    return max(1, fault_count("FAULT_JOBS", min(2, cpu_cores())))


# ---------------------------------------------------------------------------------------------------- processes

def child_env(threads: int = 1) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("TMUX", "TMUX_PANE")}
    env.update(OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    return env


def train_argv(dataroot: Path, checkpoints: Path, *extra: str, resume: bool = False,
               conf: str = "parameters/tiny/target.yml", split: str = SPLIT) -> list[str]:
    argv = [sys.executable, "train.py", "--conf", str(conf), "--split", split, "--device", "cpu", "--no-progress",
            "--set", f"dataroot={dataroot}", "--set", f"checkpoints_dir={checkpoints}"]
    for override in (*TRAIN_OVERRIDES, *extra):
        argv += ["--set", override]
    return argv + (["--resume"] if resume else [])


def evaluate_argv(run: Path, *extra: str) -> list[str]:
    return [sys.executable, "evaluate.py", "--run", str(run), "--device", "cpu", *extra]


def start(argv: list[str], log: Path, threads: int = 1) -> subprocess.Popen:
    """A child in its own session (killable as a group), its stdout+stderr in `log` (a pipe nobody reads could
    fill up and stall it)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        return subprocess.Popen(argv, cwd=ROOT, env=child_env(threads), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def run(argv: list[str], timeout: float = 300, threads: int = 1) -> subprocess.CompletedProcess:
    """Run to the end; stdout and stderr kept apart (the one-line-error checks read stderr alone)."""
    return subprocess.run(argv, cwd=ROOT, env=child_env(threads), capture_output=True, text=True, timeout=timeout)


def sigkill(proc: subprocess.Popen) -> bool:
    """SIGKILL the child's process group; True when it was still running (the kill landed)."""
    if proc.poll() is not None:
        return False
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)
    return proc.returncode == -signal.SIGKILL


def kill_when(proc: subprocess.Popen, trigger: Callable[[], bool], timeout_s: float = 300,
              poll_s: float = 0.001) -> bool:
    """Poll `trigger` until it fires (then SIGKILL) or the child exits by itself; True when the kill landed."""
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None:
        if trigger():
            return sigkill(proc)
        if time.monotonic() > deadline:
            sigkill(proc)
            raise TimeoutError(f"kill trigger did not fire within {timeout_s}s: {proc.args}")
        time.sleep(poll_s)
    return False


def kill_landed(trial: "Trial", attempt: Callable[[], tuple[subprocess.Popen, Callable[[], bool]]], folder: Path,
                tries: int = 4) -> bool:
    """Start the trial's child and kill it at its trigger (`attempt()` sets `folder` up and returns both); True
    when the kill landed. A `moment` trial whose child ended before its moment tries again, afresh and at half
    the delay, up to `tries` times: its delay comes from the reference's window, timed under another load (the
    suite's neighbours come and go), and a child faster than that reference is no failure of the code under
    test. Every other kind fires on something the child itself does, so one try decides it."""
    for left in reversed(range(tries)):
        killed = kill_when(*attempt())
        if killed or trial.kind != "moment" or not left:
            return killed
        shutil.rmtree(folder)
        trial.delay_s = round(trial.delay_s / 2, 3)
    return False


# ---------------------------------------------------------------------------------------------------- triggers

def _entries(folder: Path) -> dict[str, int]:
    """{name: inode} of the files in `folder` ({} while it does not exist); an os.replace shows as a new inode."""
    try:
        with os.scandir(folder) as it:
            return {e.name: e.inode() for e in it if not e.is_dir(follow_symlinks=False)}
    except (FileNotFoundError, NotADirectoryError):
        return {}


class WriteCounter:
    """Counts the atomic writes of files matching `wanted` in `folder` as a poller sees them: a write has started
    when its temporary name is there, and is complete when its final name gets a new inode. Writes are serial
    (one writer thread), so `started`/`completed` number them in order."""

    def __init__(self, folder: Path, wanted: Callable[[str], bool]):
        self.folder, self.wanted = folder, wanted
        self.finals: dict[str, int] = {}
        self.completed = 0
        self.in_progress = False

    def poll(self) -> None:
        now = _entries(self.folder)
        temps = [n for n in now if is_temporary(n) and self.wanted(n.split(".tmp.")[0])]
        for name, inode in now.items():
            if not is_temporary(name) and self.wanted(name) and self.finals.get(name) != inode:
                self.finals[name] = inode
                self.completed += 1
        self.in_progress = bool(temps)


def during_write(folder: Path, wanted: Callable[[str], bool], k: int) -> Callable[[], bool]:
    """Fires while the k-th matching write is in progress (its temporary file is there), or, if the poller
    missed that window, right after the k-th write completed: a kill mid-write or just after it."""
    counter = WriteCounter(folder, wanted)

    def fire() -> bool:
        counter.poll()
        return (counter.in_progress and counter.completed == k - 1) or counter.completed >= k
    return fire


def after_appears(path: Path, delay_s: float) -> Callable[[], bool]:
    """Fires `delay_s` seconds after `path` (or its temporary name) is first seen."""
    seen: list[float] = []

    def fire() -> bool:
        if not seen:
            names = _entries(path.parent)
            if path.name in names or any(n.startswith(path.name + ".tmp.") for n in names):
                seen.append(time.monotonic())
            return False
        return time.monotonic() - seen[0] >= delay_s
    return fire


def is_pth(name: str) -> bool:
    return name.endswith(".pth")


# ---------------------------------------------------------------------------------------------------- checks

def temporaries(root: Path) -> list[str]:
    """Every `*.tmp.<pid>` left under `root` (recursive), relative to it."""
    root = Path(root)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if is_temporary(p))


def partial_finals(run: Path) -> list[str]:
    """Files under a final name in `run` (and its eval/) that do not read back whole: what a crash-safe writer
    must never leave. loss.log is an append-only log (a resume rewrites it) and tb/ belongs to TensorBoard."""
    problems = []
    for path in sorted([*Path(run).glob("*"), *Path(run).glob("eval/*")]):
        if not path.is_file() or is_temporary(path) or path.name == "loss.log":
            continue
        try:
            if path.suffix == ".pth":
                state = torch.load(path, map_location="cpu", weights_only=True)
                assert isinstance(state, dict) and "epoch" in state
            elif path.suffix == ".yml":
                assert isinstance(yaml.safe_load(path.read_text()), dict)
            elif path.suffix == ".json":
                assert isinstance(json.loads(path.read_text()), dict)
            elif path.suffix == ".npz":
                with np.load(path, allow_pickle=False) as z:
                    assert z["outputs"].shape[0] == z["ids"].shape[0]
            elif path.name in (rundir.DONE, rundir.FAILED):
                assert path.read_text().endswith("\n")
        except Exception as err:  # noqa: BLE001 - any failure to read back is the finding
            problems.append(f"{path.name}: {type(err).__name__}: {' '.join(str(err).split())[:120]}")
    return problems


def weight_differences(a: Path, b: Path, epochs=range(1, EPOCHS + 1)) -> list[str]:
    """Tensors that differ between two runs' epoch files (bit for bit), and the resume states' optimiser
    moments and step counts; [] when identical."""
    diffs = []
    for epoch in epochs:
        wa = torch.load(rundir.checkpoint_path(a, epoch), map_location="cpu", weights_only=True)
        wb = torch.load(rundir.checkpoint_path(b, epoch), map_location="cpu", weights_only=True)
        if wa["model"].keys() != wb["model"].keys():
            diffs.append(f"{epoch}.pth: different keys")
            continue
        diffs += [f"{epoch}.pth:{k}" for k in wa["model"] if not torch.equal(wa["model"][k], wb["model"][k])]
        if wa.get("task_state") != wb.get("task_state"):
            diffs.append(f"{epoch}.pth:task_state")
    ra, rb = (torch.load(rundir.resume_path(r), map_location="cpu", weights_only=True) for r in (a, b))
    if (ra["epoch"], ra["global_step"]) != (rb["epoch"], rb["global_step"]):
        diffs.append("resume.pth: epoch/global_step")
    for slot, state in ra["optimizer"]["state"].items():
        other = rb["optimizer"]["state"].get(slot, {})
        diffs += [f"resume.pth:optimizer.{slot}.{k}" for k, v in state.items()
                  if isinstance(v, torch.Tensor) and not (k in other and torch.equal(v, other[k]))]
    return diffs


def eval_differences(a: Path, b: Path, names: list[str] | None = None) -> list[str]:
    """Files of two eval/ folders that differ (all of them, or `names`): npz arrays compared exactly, metrics
    JSON as data."""
    names_a = sorted(p.name for p in rundir.eval_dir(a).iterdir() if names is None or p.name in names)
    names_b = sorted(p.name for p in rundir.eval_dir(b).iterdir() if names is None or p.name in names)
    if names_a != names_b or (names is not None and len(names_a) != len(names)):
        return [f"files differ: {sorted(set(names_a) ^ set(names_b))}"]
    diffs = []
    for name in names_a:
        pa, pb = rundir.eval_dir(a) / name, rundir.eval_dir(b) / name
        if name.endswith(".npz"):
            with np.load(pa, allow_pickle=False) as za, np.load(pb, allow_pickle=False) as zb:
                if set(za.files) != set(zb.files) or not all(np.array_equal(za[k], zb[k]) for k in za.files):
                    diffs.append(name)
        elif json.loads(pa.read_text()) != json.loads(pb.read_text()):
            diffs.append(name)
    return diffs


def link_run(source: Path, dest: Path, with_eval: bool = False) -> Path:
    """A copy of a finished run whose big .pth files are hard links (readers only: the evaluator never writes
    a .pth), so each evaluator trial starts from the same run without copying 225 MB."""
    dest.mkdir(parents=True)
    for path in Path(source).iterdir():
        if path.is_dir():
            if path.name != "eval" or with_eval:
                shutil.copytree(path, dest / path.name)
        elif path.suffix == ".pth":
            os.link(path, dest / path.name)
        elif path.name != "eval.lock":
            (dest / path.name).write_bytes(path.read_bytes())
    return dest


def one_error_line(stderr: str) -> tuple[bool, str]:
    """(True, the line) when stderr says what went wrong in exactly one `error:` line and shows no traceback."""
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    ok = len(errors) == 1 and "Traceback" not in stderr
    return ok, errors[0] if errors else ""


# ---------------------------------------------------------------------------------------------------- schedule

@dataclass
class Trial:
    """One planned kill: `kind` says what it waits for, `k`/`delay_s` parametrise it (seeded)."""
    index: int
    kind: str
    k: int = 0
    delay_s: float = 0.0
    outcome: dict = field(default_factory=dict)

    def describe(self) -> str:
        return {"write": f"mid checkpoint write #{self.k}", "file": f"after eval file #{self.k}",
                "temp": f"mid eval write #{self.k}", "startup": f"{self.delay_s:.2f}s after config.yml",
                "moment": f"{self.delay_s:.2f}s into the run"}.get(self.kind, self.kind)


TRAIN_KINDS = ("write", "moment", "write", "startup", "write")  # 3 of 5 aim at a checkpoint write


def train_schedule(n: int, seed: int, window_s: float) -> list[Trial]:
    """Seeded kill moments for `n` train.py trials: `write` kills while the k-th of the run's 2 x EPOCHS
    checkpoint writes is on disk (the weights, then resume.pth, per epoch), `startup` kills within the first
    0.3 s after config.yml (the config, fingerprint, image cache and model set-up), `moment` anywhere in the
    training window an uninterrupted run took (`window_s`, config.yml to DONE)."""
    rng = random.Random(seed * 7919 + 1)
    trials = []
    for i in range(n):
        kind = TRAIN_KINDS[i % len(TRAIN_KINDS)]
        trial = Trial(i, kind)
        if kind == "write":
            trial.k = rng.randint(1, 2 * EPOCHS - 1)  # the last write ends the run: nothing left to kill after it
        elif kind == "startup":
            trial.delay_s = round(rng.uniform(0.0, 0.3), 3)
        else:
            trial.delay_s = round(rng.uniform(0.0, 0.9 * window_s), 3)
        trials.append(trial)
    return trials


EVAL_KINDS = ("file", "temp", "moment")
EVAL_FILES = 3 * EPOCHS  # oof, test npz and metrics.json per epoch


def eval_schedule(n: int, seed: int, window_s: float) -> list[Trial]:
    """Seeded kill moments for `n` evaluate.py --watch trials: right after the k-th of its eval files lands (an
    epoch half evaluated), while the k-th one is being written, or anywhere in the evaluation window."""
    rng = random.Random(seed * 7919 + 2)
    trials = []
    for i in range(n):
        kind = EVAL_KINDS[i % len(EVAL_KINDS)]
        trial = Trial(i, kind)
        if kind in ("file", "temp"):
            trial.k = rng.randint(1, EVAL_FILES - 1)
        else:
            trial.delay_s = round(rng.uniform(0.0, 0.9 * window_s), 3)
        trials.append(trial)
    return trials


# ---------------------------------------------------------------------------------------------------- summary

SUMMARY: dict = {}


def record(section: str, data: dict) -> None:
    """Keep a probe's figures for the terminal summary and, with FAULT_SUMMARY=path, in that JSON file."""
    SUMMARY[section] = data
    path = os.environ.get("FAULT_SUMMARY")
    if not path:
        return
    path = Path(path)
    try:
        existing = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        existing = {}
    existing[section] = data
    existing["line"] = summary_line(existing)
    path.write_text(json.dumps(existing, indent=1, sort_keys=True, default=str) + "\n")


def summary_line(summary: dict) -> str:
    """The figures in one sentence, probe by probe (those that ran)."""
    parts = []
    if "train_kills" in summary:
        s = summary["train_kills"]
        parts.append(f"train.py kills: {s['killed']}/{s['trials']} landed ({s['mid_write']} during a checkpoint "
                     f"write), {s['resumed']}/{s['trials']} resumed to DONE, {s['identical']}/{s['trials']} "
                     f"bit-identical, {s['partial_finals']} partial files under a final name, "
                     f"{s['temps_at_kill']} temp files left by the kills, {s['orphans_after']} orphaned after "
                     f"the resume")
    if "eval_kills" in summary:
        s = summary["eval_kills"]
        parts.append(f"evaluate.py --watch kills: {s['killed']}/{s['trials']} landed ({s['mid_write']} during a "
                     f"write), {s['identical']}/{s['trials']} arrays and metrics identical, {s['orphans_after']} "
                     f"orphaned temp files after the restart")
    if "row_kill" in summary:
        s = summary["row_kill"]
        parts.append(f"fold0123 row kill: relaunch ran {s['relaunched_rows']} (others {s['others']}), "
                     f"{'bit-identical' if s['identical'] else 'NOT bit-identical'}, threads kept "
                     f"{s['threads_kept']} (relaunch asked {s['threads_asked']})")
    if "disk_full" in summary:
        s = summary["disk_full"]
        if s.get("skipped"):
            parts.append(f"disk full: skipped ({s['skipped']})")
        else:
            g = lambda key: s.get(key, "not reached")  # noqa: E731 - a failed probe stops part way
            parts.append(f"disk full: train.py exit {g('train_exit')}, {g('train_error_lines')} error line, no "
                         f"traceback: {g('train_no_traceback')}, FAILED written: {g('failed_written')}, previous "
                         f"checkpoint loadable: {g('previous_intact')}, resume OK: {g('resume_ok')} "
                         f"(bit-identical: {g('resume_identical')}); evaluate.py --epoch: exit {g('eval_exit')}, "
                         f"{g('eval_error_lines')} error line, no traceback: {g('eval_no_traceback')}, rerun "
                         f"identical: {g('eval_rerun_identical')}")
    if "disk_full_cache" in summary:
        s = summary["disk_full_cache"]
        parts.append(f"disk too full for the image cache: exit {s['exit']}, one line: {s['no_traceback']}, "
                     f"FAILED written: {s['failed_written']}, {len(s['orphans'])} temp files left")
    return "; ".join(parts)


def tally(outcomes: list[dict], flags: tuple[str, ...], lists: tuple[str, ...]) -> dict:
    """The figures of a kill probe: how many trials set each flag, and how many files each list gathered."""
    return {**{flag: sum(o.get(flag, False) for o in outcomes) for flag in flags},
            **{name: sum(len(o.get(name, [])) for o in outcomes) for name in lists}}


def trial_rows(trials: list[Trial]) -> list[dict]:
    return [{**asdict(t), "moment": t.describe()} for t in trials]
