"""Evaluate a run's checkpoints as they appear (`evaluate.py --watch`), with the watchdog library.

Why it reacts the way it does (DESIGN.md, pitfalls): watchdog's `on_created` fires when a write *starts*, so a
watcher that opens files on creation reads half-written checkpoints. train.py writes `{epoch}.pth.tmp.<pid>`,
fsyncs it and `os.replace`s it to `{epoch}.pth`: the watcher reacts to the move's destination and to creations
of final names only (a final name is never written in place), and ignores temporary names. It rescans the folder
on start (and every `rescan_s` as a safety net) to catch checkpoints written while it was down, evaluates in epoch
order, skips epochs whose metrics.json exists (and their EMA's, `ema{E}`, in a run with `ema.decay` > 0: an epoch
is done when both are, common.rundir.is_fully_evaluated), and exits once DONE is there and the last epoch is
evaluated.
resume.pth (the run's resume state) is no epoch name, so it is never evaluated. Step checkpoints
(`step{S}.pth`, eval_every_steps) are evaluated after the epochs that are ready, in step order, when the caller
passes `evaluate_step`; those save_every_steps writes only to resume from are pruned by train.py before long, and
one gone before its turn is skipped quietly. A DONE run extended with
`train.py --resume --set epochs=N` loses its DONE before train.py writes anything, so a watcher started after
that waits for the new epochs; one started before it would still see the old DONE and exit.
"""
from __future__ import annotations

import logging
import os
import queue
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml
from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer

from fold0123.common import rundir
from fold0123.common.io import exclusive_lock, is_temporary, remove_orphaned_temporaries
from fold0123.common.poll import wait_until
from fold0123.models.checkpoints import CheckpointError

MARKERS = (rundir.DONE, rundir.FAILED)

# watchdog 7 logs this harmless race at error level when an observer stops right after starting (a watcher
# that finds everything already evaluated); keep it out of the user's terminal.
logging.getLogger("watchdog.observers.inotify").addFilter(
    lambda record: "called when the thread is inactive" not in record.getMessage())


class _RunEvents(FileSystemEventHandler):
    """Puts a final checkpoint name's ("epoch", E) or ("step", S) on a queue, and None for a marker (a wake-up);
    everything else (temp files, eval/) is ignored."""

    def __init__(self, events: queue.Queue):
        self.events = events

    def _note(self, path) -> None:
        path = Path(os.fsdecode(path))
        if is_temporary(path):
            return
        epoch, step = rundir.checkpoint_epoch(path), rundir.checkpoint_step(path)
        if epoch is not None:
            self.events.put(("epoch", epoch))
        elif step is not None:
            self.events.put(("step", step))
        elif path.name in MARKERS:
            self.events.put(None)

    def on_moved(self, event) -> None:
        if not event.is_directory:
            self._note(event.dest_path)

    def on_created(self, event) -> None:
        if not event.is_directory:
            self._note(event.src_path)


@dataclass
class WatchResult:
    evaluated: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # already evaluated before this watcher got to them
    steps: list[int] = field(default_factory=list)  # step checkpoints evaluated
    errors: list[str] = field(default_factory=list)
    failed_run: bool = False

    @property
    def exit_code(self) -> int:
        return 1 if self.errors or self.failed_run else 0


def _run_plan(run: Path) -> tuple[int | None, int]:
    """(planned epochs, eval.every) from the run's config.yml; (None, 1) until train.py has written it."""
    try:
        cfg = rundir.read_run_config(run)
        return cfg.epochs, cfg.eval.every
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):  # LayoutError is a ValueError
        return None, 1


def _wanted(epoch: int, every: int, last: int | None) -> bool:
    return every <= 1 or epoch % every == 0 or (last is not None and epoch >= last)


def wait_for_dir(run: Path, poll_s: float, timeout_s: float | None, log: Callable[[str], None]) -> bool:
    """True once the run directory exists (train.py may start after the watcher); False after `timeout_s`."""
    if run.is_dir():
        return True
    log(f"{run}: waiting for the run directory to appear")
    try:
        return wait_until(run.is_dir, timeout_s, poll_s, what=f"{run} to appear")
    except TimeoutError:
        return False


def watch_run(run: str | Path, evaluate: Callable[[Path, int], object], every: int | None = None,
              rescan_s: float = 10.0, poll_s: float = 0.5, timeout_s: float | None = None,
              log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True),
              wait_lock: bool = False, evaluate_step: Callable[[Path, int], object] | None = None) -> WatchResult:
    """Call `evaluate(run, epoch)` for each epoch checkpoint of `run` once it is in place, in epoch order.

    Returns after the run's DONE (or FAILED) marker once every wanted epoch is evaluated, or after `timeout_s`
    (a WatchResult with an error then). `every`: only every Nth epoch, and always the run's last (None: the run
    config's eval.every). A corrupt checkpoint is reported as one line and skipped; the watcher carries on with
    the next epoch. `evaluate_step(run, step)`: the step checkpoints too (else they are ignored). It runs under
    the run's evaluator lock: one watcher per run, so no epoch is evaluated twice
    at once; a second watcher raises LockedError naming the first's PID, or with `wait_lock` waits for it.
    """
    run = Path(run)
    if not wait_for_dir(run, poll_s, timeout_s, log):
        return WatchResult(errors=[f"{run}: run directory did not appear within {timeout_s}s"])
    with exclusive_lock(rundir.eval_lock_path(run), wait=wait_lock,
                        holder="another evaluate.py --watch on this run (--wait-lock waits for it)"):
        return _watch(run, evaluate, every, rescan_s, poll_s, timeout_s, log, evaluate_step)


def _watch(run: Path, evaluate: Callable[[Path, int], object], every: int | None, rescan_s: float, poll_s: float,
           timeout_s: float | None, log: Callable[[str], None],
           evaluate_step: Callable[[Path, int], object] | None = None) -> WatchResult:
    result = WatchResult()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    for path in remove_orphaned_temporaries(rundir.eval_dir(run)):  # a killed evaluator's half-written arrays
        log(f"{run}: removed {path.name}, left by a killed evaluator")

    events: queue.Queue = queue.Queue()
    observer = Observer()
    observer.schedule(_RunEvents(events), str(run), recursive=False)
    observer.start()
    try:
        seen: set[int] = set()
        attempted: set[int] = set()
        steps: set[int] = set()  # step checkpoints seen
        steps_attempted: set[int] = set()

        def note(event) -> None:
            if event is not None:
                (seen if event[0] == "epoch" else steps).add(event[1])

        def rescan() -> None:  # catches what happened before the observer started, and anything missed
            seen.update(e for e, _ in rundir.list_checkpoints(run))
            steps.update(s for s, _ in rundir.list_step_checkpoints(run))

        rescan()
        last_rescan = time.monotonic()
        while True:
            while not events.empty():  # drain the events that arrived (this thread is the only reader)
                note(events.get_nowait())
            finished = rundir.done_path(run).is_file()
            failed = rundir.failed_path(run).is_file()
            if finished or failed:
                rescan()
            last, config_every = _run_plan(run)
            if finished and seen:
                last = max(seen)
            step = config_every if every is None else every
            todo = sorted(e for e in seen - attempted if _wanted(e, step, last))
            if todo:
                epoch = todo[0]
                attempted.add(epoch)
                if rundir.is_fully_evaluated(run, epoch):
                    result.skipped.append(epoch)
                    continue
                if not rundir.checkpoint_path(run, epoch).is_file():
                    log(f"{rundir.checkpoint_path(run, epoch)}: gone before it was evaluated (keep_last?): skipped")
                    continue
                try:
                    evaluate(run, epoch)
                except Exception as err:  # keep watching: later epochs may still evaluate
                    _record_error(rundir.checkpoint_path(run, epoch), err, result, log)
                    continue
                result.evaluated.append(epoch)
                log(f"{run.name}: epoch {epoch} evaluated")
                continue
            step_todo = sorted(steps - steps_attempted) if evaluate_step is not None else []
            if step_todo:
                steps_attempted.add(step_todo[0])
                _evaluate_step(run, step_todo[0], evaluate_step, result, log)
                continue
            if failed:
                result.failed_run = True
                text = rundir.failed_path(run).read_text().strip()
                log(f"{run}: the run FAILED ({text}); stopping after the epochs it wrote")
                return result
            if finished:
                log(f"{run.name}: DONE; evaluated epochs {result.evaluated or 'none'}, "
                    f"already evaluated {result.skipped or 'none'}")
                return result
            if deadline is not None and time.monotonic() > deadline:
                result.errors.append(f"{run}: watch timed out after {timeout_s}s")
                return result
            wait = rescan_s - (time.monotonic() - last_rescan)
            if wait <= 0:
                rescan()
                last_rescan = time.monotonic()
                continue
            try:
                note(events.get(timeout=min(wait, poll_s * 4)))
            except queue.Empty:
                pass
    finally:
        observer.stop()
        observer.join()


def _evaluate_step(run: Path, step: int, evaluate_step: Callable[[Path, int], object], result: WatchResult,
                   log: Callable[[str], None]) -> None:
    """One step checkpoint, unless it is evaluated already or gone (pruned: a resume point only)."""
    path = rundir.step_checkpoint_path(run, step)
    if rundir.metrics_path(run, rundir.step_tag(step)).is_file() or not path.is_file():
        return
    try:
        evaluate_step(run, step)
    except Exception as err:  # one line, and the watch goes on
        _record_error(path, err, result, log)
        return
    result.steps.append(step)
    log(f"{run.name}: step {step} evaluated")


def _record_error(path: Path, err: Exception, result: WatchResult, log: Callable[[str], None]) -> None:
    """One line per failed checkpoint, naming its file once (a CheckpointError already does). A checkpoint gone
    by then was pruned while it was read, which is no error: the trainer keeps `keep_last` epochs (and step files
    while they are resume points), and an epoch's EMA tag reads the file again after its weights' tag."""
    if not path.is_file():
        log(f"{path}: pruned while it was evaluated (keep_last): its tags not evaluated yet are skipped")
        return
    line = " ".join(str(err).split()) or type(err).__name__
    if not isinstance(err, CheckpointError) and str(path) not in line:
        line = f"{path}: {type(err).__name__}: {line}"
    result.errors.append(line)
    log(f"error: {line}")
