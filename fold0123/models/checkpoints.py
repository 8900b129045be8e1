"""Reading checkpoints safely: `weights_only=True` always, and one clear error naming a bad file.

A checkpoint is a dict with at least `model` (a state dict), `epoch` and `config` (train.py adds optimizer,
scheduler, scaler, RNG and task state). Wrappers' prefixes (`module.` from DataParallel/DDP, `_orig_mod.`
from torch.compile) are stripped on read so every consumer sees the plain `Network` keys.
"""
from __future__ import annotations

from pathlib import Path

import torch

from fold0123.common.errors import Fold0123Error

WRAPPER_PREFIXES = ("module.", "_orig_mod.")


class CheckpointError(Fold0123Error):
    """A checkpoint that is missing, truncated, corrupt or does not fit the model; the message names the file."""


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # RuntimeError, UnpicklingError, EOFError, BadZipFile, ... all mean a bad file
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({reason[:200]})") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        raise CheckpointError(f"{path}: not a checkpoint (expected a dict with a 'model' state dict)")
    checkpoint["model"] = strip_prefixes(checkpoint["model"])
    return checkpoint


def strip_prefixes(state_dict: dict) -> dict:
    out = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        out[key] = value
    return out
