"""At most N CPU trainers at once on this machine (`cpu_slots`), the others waiting their turn.

The launchers start every split of a task side by side, one pane each: on GPUs each has its own device, on a
2-core CPU six one-thread trainers share two cores. Oversubscribed, the cores lose more than the time slices:
with bf16 autocast on AMX six side by side train 0.68x the images per second of two (BENCHMARKS.md, "CPU runs at
once"), so the same runs finish sooner taken two at a time. A slot is an advisory `flock` on one of N files in a
per-user folder of the temp directory: the kernel drops it when its holder exits or is killed, so a SIGKILLed
trainer never keeps a slot, and a waiting trainer takes the first one freed (it polls).
"""
from __future__ import annotations

import fcntl
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fold0123.common.io import make_dir


def slots_dir() -> Path:
    """The machine's slot files (per user: another user's trainers are not this one's to queue)."""
    return Path(tempfile.gettempdir()) / f"fold0123-cpu-slots-{os.getuid()}"


def slot_count(setting: int | str, threads: int) -> int:
    """`cpu_slots` as a number of trainers: `auto` is the cores this process may use over each run's threads
    (0 threads: torch's default, all of them, so one at a time); 0 means no limit."""
    if setting != "auto":
        return int(setting)
    cores = len(os.sched_getaffinity(0))
    return max(1, cores // (threads or cores))


def _take_free(directory: Path, n: int) -> int | None:
    """The fd of a slot file this process now holds, or None when all n are held."""
    for i in range(n):
        fd = os.open(directory / f"slot{i}", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return fd
    return None


@contextmanager
def cpu_slot(n: int, who: str, directory: Path | None = None, poll_s: float = 0.5) -> Iterator[None]:
    """Hold one of `n` slots while the block runs, waiting for one first (saying so once, naming `who`);
    n <= 0: no limit."""
    if n <= 0:
        yield
        return
    directory = make_dir(directory or slots_dir())
    fd = _take_free(directory, n)
    if fd is None:
        print(f"{who}: waiting for a CPU slot ({n} trainers at once: cpu_slots)", file=sys.stderr, flush=True)
    while fd is None:
        time.sleep(poll_s)
        fd = _take_free(directory, n)
    try:
        yield
    finally:
        os.close(fd)
