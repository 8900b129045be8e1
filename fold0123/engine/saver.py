"""Checkpoint writes off the training thread: the next epoch trains while this epoch's files are written.

Why: an epoch's weights and resume state (135 MB for a ResNet18, each file fsynced) take 0.3-0.5 s to write on a
CPU machine, time the training loop would otherwise stand still. The order of models.checkpoints still holds:
one write at a time, and within it the weights first, the resume state second, pruning last, so a crash at any
point leaves a resume state whose weights exist. The states are snapshot (copied to the CPU) before training
goes on, because the optimiser updates the live tensors in place. A failed write is raised on the training
thread at the next `save` or `wait`.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

import torch

from fold0123.models.checkpoints import save_checkpoint


def snapshot(obj):
    """A copy of nested dicts/lists/tuples whose tensors are copied to the CPU; other values as they are."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {key: snapshot(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(snapshot(value) for value in obj)
    return obj


class BackgroundSaver:
    """At most one pending write (a list of files, then an optional follow-up such as pruning) on a thread."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def save(self, files: list[tuple[Path, dict]], then: Callable[[], object] | None = None,
             background: bool = True) -> None:
        """Wait for the previous write, snapshot `files` and write them, in order, on a thread. `background=False`
        (the last epoch: nothing would overlap the write) writes them here, without the snapshot's copy."""
        self.wait()
        if not background:
            self._write(files, then)
            return
        files = [(Path(path), snapshot(state)) for path, state in files]

        def work() -> None:
            try:
                self._write(files, then)
            except BaseException as err:  # handed to the training thread by wait()
                self._error = err

        self._thread = threading.Thread(target=work, name="checkpoint-writer")
        self._thread.start()

    @staticmethod
    def _write(files: list[tuple[Path, dict]], then: Callable[[], object] | None) -> None:
        for path, state in files:
            save_checkpoint(Path(path), state)
        if then is not None:
            then()

    def wait(self) -> None:
        """Block until the pending write is in place; raise its error here."""
        self.close()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def close(self) -> None:
        """Join a pending write without raising (for when training already failed: its error matters more)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
