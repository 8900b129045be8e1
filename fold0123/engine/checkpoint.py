"""Save and load epoch checkpoints the way timm's checkpoint_saver does: atomically, optionally keeping only
the last N, with everything needed to resume.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads with
`torch.load(weights_only=True)`: RNG states are stored as tensors and lists, never as numpy objects or
pickled classes. Writes go through fold0123.common.io.atomic_path (temp name, fsync, os.replace), so a reader sees a whole
checkpoint or none, and a crash mid-write leaves the previous epoch as the last complete one.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from fold0123.common.io import atomic_path
from fold0123.common.rundir import checkpoint_path, list_checkpoints
from fold0123.models.checkpoints import CheckpointError, read_checkpoint  # one reader for the whole project

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "prune_checkpoints", "last_complete_checkpoint",
           "rng_state", "set_rng_state"]


def save_checkpoint(path: str | Path, state: dict) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load with weights_only=True; a missing, truncated or corrupt file raises CheckpointError naming it."""
    return read_checkpoint(path, map_location)


def prune_checkpoints(run: Path, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` epoch checkpoints (0 keeps all); returns what was deleted."""
    if keep_last <= 0:
        return []
    removed = []
    for _, path in list_checkpoints(run)[:-keep_last]:
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def last_complete_checkpoint(run: Path) -> tuple[int, dict] | None:
    """The newest checkpoint that loads, as (epoch, state); older ones are tried if the newest is unreadable."""
    errors = []
    for epoch, path in reversed(list_checkpoints(run)):
        try:
            return epoch, load_checkpoint(path)
        except CheckpointError as err:
            errors.append(str(err))
    if errors:
        raise CheckpointError(f"{checkpoint_path(run, 1).parent}: no readable checkpoint ({errors[0]})")
    return None


def rng_state() -> dict:
    """torch, numpy and python RNG states in weights_only-loadable types."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
