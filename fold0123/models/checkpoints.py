"""Checkpoints: the one module that writes, reads, lists and prunes them (DESIGN.md section 3).

A run keeps two kinds of file, so that its disk use grows by the weights alone (AdamW's two moments per weight
would triple every epoch file; 134 MB instead of 45 MB per ResNet18 epoch):
- `{epoch}.pth` (rundir.checkpoint_path), one per epoch, weights only: `model` (state dict), `epoch`, `split`,
  `config`, `task_state`, and `model_ema` (the weights' moving average, models.ema) for a run with `ema.decay` > 0.
  What evaluation, transfer and soups read (transfer and soups the raw `model`; evaluation both).
- `resume.pth` (rundir.resume_path), one per run, atomically replaced every epoch: `epoch`, `global_step`,
  `optimizer`, `scheduler`, `scaler`, `rng`. What `train.py --resume` adds to the weights of its epoch (an EMA's
  state is its weights, in the epoch file, and the global step: nothing more of it goes here).

Crash ordering: the trainer writes `{E}.pth` first, then `resume.pth` for E. A crash between the two leaves
`resume.pth` at E-1, whose weights file still exists (pruning runs after both writes), so the resume redoes
epoch E and rewrites the same `{E}.pth`. `read_resume` therefore trusts the resume file's epoch, not the newest
epoch file.

Everything is a plain dict of tensors, numbers, strings, lists and dicts, so it loads with
`torch.load(weights_only=True)`: RNG states are stored as tensors and lists, never as numpy objects or pickled
classes. Writes go through fold0123.common.io.atomic_path (temp name, fsync, os.replace): a reader sees a whole
file or none. Wrappers' prefixes (`module.` from DataParallel/DDP, `_orig_mod.` from torch.compile) are
stripped on read so every consumer sees the plain `Network` keys.
"""
from __future__ import annotations

import pickle
import random
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from fold0123.common.errors import Fold0123Error
from fold0123.common import rundir
from fold0123.common.io import atomic_path

WRAPPER_PREFIXES = ("module.", "_orig_mod.")
RESUME_KEYS = ("epoch", "global_step", "optimizer", "scheduler", "scaler", "rng")
EMA_KEY = "model_ema"  # the EMA weights in `{epoch}.pth`, beside the raw weights' `model` (models.ema)


class CheckpointError(Fold0123Error):
    """A checkpoint that is missing, truncated, corrupt or does not fit the model; the message names the file."""


# ---------------------------------------------------------------------------------------------------- files

def save_checkpoint(path: str | Path, state: dict) -> Path:
    """Write `state` atomically (temp name, fsync, os.replace); a failed write leaves no file.

    Without the zip records' CRC32s: torch.load never checks them (PyTorch reads its archives without CRC
    checks), and computing them was 60% of a save's CPU time (0.06 s of 0.1 s per 90 MB resume state). The files
    load as before; only an external `unzip -t` would complain.
    """
    path = Path(path)
    crc = torch.serialization.get_crc32_options()
    torch.serialization.set_crc32_options(False)
    try:
        # through a Python file object, not the path: given a path, torch's own writer turns a full disk into a
        # bare RuntimeError and keeps the unlinked temp file open (its space held) until the error is collected;
        # given a file object, the OSError (ENOSPC) is chained to that error and the file is closed here
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            torch.save(state, f)
    finally:
        torch.serialization.set_crc32_options(crc)
    return path


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


def load_weights(module: torch.nn.Module, weights: dict, path: str | Path, what: str = "model") -> int:
    """Load `weights` into `module` only when they fit it exactly, else CheckpointError naming `path` and the
    first difference: a checkpoint of another backbone or task must not fail in a 20-line torch traceback, and a
    silent partial load would look like training from scratch. Returns the number of tensors loaded."""
    own = module.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    reshaped = [k for k in own if k in weights and tuple(weights[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or reshaped:
        problem = (f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}" if unexpected
                   else f"{reshaped[0]!r} has shape {tuple(weights[reshaped[0]].shape)}, "
                        f"the {what}'s {tuple(own[reshaped[0]].shape)}")
        raise CheckpointError(f"{path}: weights do not fit this run's {what}, made from another backbone (stem, "
                              f"width) or task? ({problem}; {len(missing)} missing, {len(unexpected)} unexpected, "
                              f"{len(reshaped)} reshaped)")
    module.load_state_dict(weights)
    return len(weights)


def _load(path: str | Path, map_location) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with warnings.catch_warnings():  # torch warns about a file's pickle protocol before refusing it
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if found:
            raise CheckpointError(f"{path}: refused: loading it would unpickle {found.group(1)}, and unpickling a "
                                  f"file can run code; only weights-only checkpoints (tensors, numbers, strings, "
                                  f"lists, dicts) are loaded") from None
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint, or not a torch checkpoint "
                              f"({_first_line(err)})") from None
    except Exception as err:  # RuntimeError, EOFError, BadZipFile, ... all mean a bad file
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({_first_line(err)})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a checkpoint (expected a dict)")
    return state


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """A weights file (`{epoch}.pth`, a soup, a transfer source); CheckpointError naming the file if it is bad."""
    checkpoint = _load(path, map_location)
    if not isinstance(checkpoint.get("model"), dict):
        raise CheckpointError(f"{path}: not a checkpoint (expected a dict with a 'model' state dict)")
    checkpoint["model"] = strip_prefixes(checkpoint["model"])
    if EMA_KEY in checkpoint:
        if not isinstance(checkpoint[EMA_KEY], dict):
            raise CheckpointError(f"{path}: its {EMA_KEY!r} is not a state dict")
        checkpoint[EMA_KEY] = strip_prefixes(checkpoint[EMA_KEY])
    return checkpoint


def read_resume(run: str | Path) -> tuple[dict, dict] | None:
    """(weights, resume state) to continue `run` from; None when the run has no finished epoch (a fresh start),
    which includes a run killed after writing 1.pth and before its first resume.pth.

    The resume file names the epoch; its weights file must exist. A run written before resume.pth existed
    carries the whole state in its newest epoch file, which then serves as both.
    """
    run = Path(run)
    path = rundir.resume_path(run)
    if path.is_file():
        state = _load(path, "cpu")
        missing = [k for k in RESUME_KEYS if k not in state]
        if missing:
            raise CheckpointError(f"{path}: not a resume state (no {missing[0]!r})")
        if state.get("batch"):  # part-way through the next epoch: the weights of its step checkpoint
            weights_path = rundir.step_checkpoint_path(run, int(state["global_step"]))
            where, held, expected = f"step {state['global_step']}", "step", int(state["global_step"])
        else:
            weights_path = rundir.checkpoint_path(run, int(state["epoch"]))
            where, held, expected = f"epoch {state['epoch']}", "epoch", int(state["epoch"])
        if not weights_path.is_file():
            raise CheckpointError(f"{weights_path}: not found, but {path.name} resumes after {where} "
                                  f"(deleted by hand? train the run afresh)")
        weights = read_checkpoint(weights_path)
        if int(weights.get(held, -1)) != expected:
            raise CheckpointError(f"{weights_path}: holds {held} {weights.get(held)}, {path.name} expects {expected}")
        return weights, state
    found = rundir.list_checkpoints(run)
    if not found:
        return None
    legacy = read_checkpoint(found[-1][1])
    if all(k in legacy for k in RESUME_KEYS):
        return legacy, legacy
    if [epoch for epoch, _ in found] == [1] and not rundir.done_path(run).is_file():
        # killed between epoch 1's weights and the run's first resume.pth: no epoch finished, so the run starts
        # again (and rewrites the same 1.pth); any later epoch has an earlier resume.pth to go back to
        return None
    raise CheckpointError(f"{path}: not found, and {found[-1][1].name} holds weights only: cannot resume "
                          f"(train the run afresh)")


def prune_checkpoints(run: Path, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` epoch checkpoints (0 keeps all); returns what was deleted.
    Call it after resume.pth is written: the epoch it names is then the newest, which is always kept."""
    if keep_last <= 0:
        return []
    removed = []
    for _, path in rundir.list_checkpoints(run)[:-keep_last]:
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def prune_step_checkpoints(run: Path, resume_step: int | None, eval_every_steps: int) -> list[Path]:
    """Delete the step checkpoints nothing needs: all but the one resume.pth continues from (`resume_step`) and
    those the watcher evaluates (multiples of `eval_every_steps`). Call it after resume.pth is written."""
    removed = []
    for step, path in rundir.list_step_checkpoints(run):
        if step != resume_step and not (eval_every_steps and step % eval_every_steps == 0):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def strip_prefixes(state_dict: dict) -> dict:
    out = {}
    for key, value in state_dict.items():
        while key.startswith(WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]  # every wrapper prefix is one dotted name
        out[key] = value
    return out


# ---------------------------------------------------------------------------------------------------- RNG

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
