"""One way to wait: poll a predicate until it holds or a deadline passes.

What the pipeline waits for lives in other processes (a trainer in another pane, a tmux server, a Slurm job, a
file another process renames into place), so it polls. Doing that in one place gives every wait the same
behaviour: a monotonic deadline, a last look at the deadline (a condition that came true during the final sleep
is not missed), and a timeout that says what was waited for instead of a bare False.
"""
from __future__ import annotations

import math
import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float | None, interval: float = 0.2,
               what: str = "a condition", quiet: bool = False) -> T:
    """Call `predicate()` every `interval` seconds until it returns something truthy, and return that value.

    `timeout` in seconds, None to wait for ever. When it passes, raise TimeoutError("timed out after {timeout} s
    waiting for {what}"), or with `quiet` return the predicate's last (falsy) value. The predicate may do work on
    each call (redraw a frame, collect finished jobs); it is called at least once, even with a zero timeout.
    """
    deadline = time.monotonic() + (math.inf if timeout is None else timeout)
    while True:
        result = predicate()
        if result:
            return result
        left = deadline - time.monotonic()
        if left <= 0:
            if quiet:
                return result
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(min(interval, left))
