"""Is a run finished, and did it succeed? Read from the run directory's markers, never from tmux.

tmux cannot report a pane's exit status (DESIGN section 6), so every launcher (tmux, tmuxinator, Slurm) decides
from files: train.py writes `DONE` last on success and `FAILED` on a crash; evaluate.py writes
`eval/epoch{E}_metrics.json` last for each epoch (and `eval/ema{E}_metrics.json` for a run with EMA). A row is
only finished when training is DONE *and* the last checkpoint's metrics exist, because closing the session at
DONE would kill the evaluator mid-epoch.

Two markers are the launcher's own, written by a pane whose command exited non-zero without leaving a marker
(killed, or failed before it could create its run directory): `FAILED` for the trainer (same meaning as
train.py's) and `EVAL_FAILED` for the evaluator. `clear` removes both before a relaunch, so a stale failure does
not end the new run's watcher at once.

CLI (what the panes run):
  python -m fold0123.launcher.status show RUN_DIR...
  python -m fold0123.launcher.status clear RUN_DIR...
  python -m fold0123.launcher.status mark-failed RUN_DIR --role train|evaluate
  python -m fold0123.launcher.status wait [--close] [--linger S] RUN_DIR...   (the session's last window)
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from fold0123.common import rundir
from fold0123.common.errors import Fold0123Error
from fold0123.common.io import write_text
from fold0123.common.poll import wait_until
from fold0123.common.rundir import FAILED

EVAL_FAILED = "EVAL_FAILED"  # the launcher's own marker: the evaluator pane exited non-zero


@dataclass(frozen=True)
class RunStatus:
    """state: pending (nothing written yet) | running | done | failed; detail: one human line."""
    run_dir: Path
    state: str
    detail: str = ""

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed")

    @property
    def name(self) -> str:
        return self.run_dir.name


def checkpoint_epochs(run_dir: str | Path) -> list[int]:
    """Epochs of the final `{epoch}.pth` names (temporary `*.tmp.<pid>` names never match)."""
    return [epoch for epoch, _ in rundir.list_checkpoints(Path(run_dir))]


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


def read_status(run_dir: str | Path) -> RunStatus:
    run_dir = Path(run_dir)
    epochs = checkpoint_epochs(run_dir)
    last = epochs[-1] if epochs else None
    failed = rundir.failed_path(run_dir)
    if failed.is_file():
        return RunStatus(run_dir, "failed", "train: " + (_last_line(failed) or "FAILED"))
    if (run_dir / EVAL_FAILED).is_file():
        return RunStatus(run_dir, "failed", "evaluate: " + (_last_line(run_dir / EVAL_FAILED) or "failed"))
    if training_done(run_dir):
        if last is None or rundir.is_fully_evaluated(run_dir, last):  # its EMA's too, where it has one
            return RunStatus(run_dir, "done", f"DONE, {last or 0} epochs evaluated")
        return RunStatus(run_dir, "running", f"training DONE, evaluating epoch {last}")
    if last is not None or rundir.loss_log_path(run_dir).is_file():
        return RunStatus(run_dir, "running", f"training, {last or 0} epochs saved")
    return RunStatus(run_dir, "pending", "not started")


def training_done(run_dir: str | Path) -> bool:
    return rundir.done_path(Path(run_dir)).is_file()


def clear_failures(run_dirs: Iterable[str | Path], extend: Iterable[str | Path] = ()) -> list[Path]:
    """Remove FAILED/EVAL_FAILED markers (a relaunch retries those runs), and DONE of the finished runs that
    are being extended to more epochs (so their evaluators wait for the new epochs instead of exiting on the old
    DONE); returns what was removed."""
    removed = []
    for run_dir in [*run_dirs, *extend]:
        markers = (FAILED, EVAL_FAILED) + ((rundir.DONE,) if run_dir in extend else ())
        for marker in markers:
            path = Path(run_dir) / marker
            if path.is_file():
                path.unlink()
                removed.append(path)
    return removed


def mark_failed(run_dir: str | Path, role: str, message: str = "", status: int | None = None) -> Path | None:
    """Record a pane's non-zero exit (its `status`, where the pane passed it) unless a marker already tells the
    story; returns the marker written."""
    run_dir = Path(run_dir)
    if role not in ("train", "evaluate"):
        raise ValueError(f"role {role!r}: expected train or evaluate")
    if rundir.failed_path(run_dir).is_file() or (role == "evaluate" and (run_dir / EVAL_FAILED).is_file()):
        return None
    if role == "train" and training_done(run_dir):
        return None
    marker = run_dir / (FAILED if role == "train" else EVAL_FAILED)
    script = "train.py" if role == "train" else "evaluate.py"
    how = "non-zero" if status is None else exit_status(status)
    text = message or f"{script} exited {how} without writing a failure marker (see its pane or job log)"
    write_text(marker, text.rstrip() + "\n")
    return marker


def shell_status(returncode: int) -> int:
    """A subprocess's returncode as a shell reports it: Python gives -N for a child killed by signal N, the shell
    128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def exit_status(status: int) -> str:
    """A shell's exit status in words: above 128 a signal killed the script (137: SIGKILL, the OOM killer's)."""
    if status > 128:
        try:
            return f"with status {status} (killed by {signal.Signals(status - 128).name})"
        except ValueError:
            pass
    return f"with status {status}"


def wait_for(run_dirs: Iterable[str | Path], poll_s: float = 1.0, timeout_s: float | None = None,
             on_finish: Callable[[RunStatus, float], None] | None = None,
             keep_going: Callable[[], bool] | None = None,
             on_change: Callable[[list[RunStatus], float], None] | None = None) -> dict[Path, tuple[RunStatus, float]]:
    """Poll until every run is done or failed; returns {run_dir: (final status, seconds until it finished)}.

    `on_change(statuses, elapsed)` hears about every change of any unfinished run's state (a new epoch saved,
    training done, ...), so a caller can show progress without repeating itself.

    Stops early (returning what is unfinished as it stands) when `timeout_s` passes or `keep_going()` turns
    False, e.g. when the tmux session the runs live in has been killed.
    """
    pending = [Path(d) for d in run_dirs]
    start = time.monotonic()
    finished: dict[Path, tuple[RunStatus, float]] = {}
    seen: list[RunStatus] = []

    def settled() -> bool:  # records each run as it finishes; True when none is left or keep_going() turned False
        nonlocal seen
        now = [read_status(d) for d in pending]
        if on_change is not None and now != seen:
            on_change(now, time.monotonic() - start)
            seen = now
        for status in now:
            if status.finished:
                elapsed = time.monotonic() - start
                finished[status.run_dir] = (status, elapsed)
                pending.remove(status.run_dir)
                if on_finish:
                    on_finish(status, elapsed)
        return not pending or (keep_going is not None and not keep_going())

    wait_until(settled, timeout_s, poll_s, what=f"{len(pending)} runs to finish", quiet=True)  # unfinished: as is
    elapsed = time.monotonic() - start
    return {**finished, **{d: (read_status(d), elapsed) for d in pending}}


def _tmux(*args: str) -> subprocess.CompletedProcess:
    """Talk to the tmux server this process runs in ($TMUX names its socket)."""
    return subprocess.run(["tmux", *args], capture_output=True, text=True)


def show_titles() -> None:
    """Pane titles (split and role) on the pane borders of this session's windows."""
    pane = os.environ.get("TMUX_PANE")
    if not pane:
        return
    session = _tmux("display-message", "-p", "-t", pane, "#{session_name}").stdout.strip()
    for window in _tmux("list-windows", "-t", session, "-F", "#{window_id}").stdout.split():
        _tmux("set-option", "-w", "-t", window, "pane-border-status", "top")
        _tmux("set-option", "-w", "-t", window, "pane-border-format", " #{pane_index}: #{pane_title} ")


def _wait_main(args: argparse.Namespace) -> int:
    """The session's conductor: report each row as it finishes, then the elapsed minutes; close on success."""
    show_titles()
    started = time.monotonic()
    names = ", ".join(Path(d).name for d in args.run_dirs)
    print(f"waiting for {len(args.run_dirs)} runs: {names}", flush=True)

    def report(status: RunStatus, elapsed: float) -> None:
        print(f"{elapsed / 60:6.1f} min  {status.name}: {status.state.upper()}  {status.detail}", flush=True)

    results = wait_for(args.run_dirs, poll_s=args.poll, on_finish=report)
    minutes = (time.monotonic() - started) / 60
    failed = [s.name for s, _ in results.values() if s.state != "done"]
    if failed:
        print(f"fold0123 finished in {minutes:.1f} min; FAILED: {', '.join(failed)}. The session stays open: "
              "read the errors in their panes.", flush=True)
        return 1
    message = f"fold0123: all {len(results)} runs DONE in {minutes:.1f} min"
    print(message, flush=True)
    pane = os.environ.get("TMUX_PANE")
    if args.close and pane:
        _tmux("display-message", "-t", pane, message)
        time.sleep(args.linger)
        _tmux("kill-session", "-t", pane)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fold0123.launcher.status", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    show = sub.add_parser("show", help="print each run's state")
    show.add_argument("run_dirs", nargs="+")
    clear = sub.add_parser("clear", help="remove FAILED/EVAL_FAILED markers before a relaunch")
    clear.add_argument("run_dirs", nargs="+")
    clear.add_argument("--extend", nargs="*", default=[], help="finished runs being extended: remove DONE too")
    mark = sub.add_parser("mark-failed", help="record a pane's non-zero exit")
    mark.add_argument("run_dir")
    mark.add_argument("--role", choices=("train", "evaluate"), required=True)
    mark.add_argument("--message", default="")
    mark.add_argument("--status", type=int, default=None, help="the script's exit status (the pane passes $?)")
    wait = sub.add_parser("wait", help="wait for every run; print elapsed minutes; --close kills the session")
    wait.add_argument("run_dirs", nargs="*")
    wait.add_argument("--close", action="store_true", help="kill this tmux session when every run is DONE")
    wait.add_argument("--linger", type=float, default=5.0, help="seconds to show the summary before closing")
    wait.add_argument("--poll", type=float, default=1.0)
    args = parser.parse_args(argv)
    if args.command == "show":
        for run_dir in args.run_dirs:
            status = read_status(run_dir)
            print(f"{status.name}\t{status.state}\t{status.detail}")
        return 0
    if args.command == "clear":
        for path in clear_failures(args.run_dirs, args.extend):
            print(f"removed stale {path}")
        return 0
    if args.command == "mark-failed":
        try:
            marker = mark_failed(args.run_dir, args.role, args.message, args.status)
        except Fold0123Error as err:  # e.g. the disk that made the run fail is still full: say so, in one line
            print(f"{Path(args.run_dir).name}: {args.role} failed; the marker could not be written ({err})")
            return 1
        print(f"{Path(args.run_dir).name}: {args.role} failed" + (f" (wrote {marker})" if marker else ""))
        return 1
    return _wait_main(args)


if __name__ == "__main__":
    sys.exit(main())
