"""Uniform model soup (Wortsman et al. 2022): average the weights of the last N epochs of one run.

The ACCV 2022 winners souped their last 5-7 epochs. Parameters and floating-point buffers (BN running
statistics) are averaged; integer buffers (`num_batches_tracked`) are taken from the last checkpoint. The soup
is written as a checkpoint of the same structure as the last one (plus a `soup` list of its sources), atomically,
so evaluate.py reads it like any other.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from fold0123.models.checkpoints import EMA_KEY, CheckpointError, read_checkpoint, save_checkpoint


def average_state_dicts(state_dicts: Sequence[dict], names: Sequence[str] = ()) -> dict:
    """The uniform mean of float tensors (accumulated in float64), integer tensors from the last."""
    first = state_dicts[0]
    for i, sd in enumerate(state_dicts[1:], 1):
        if sd.keys() != first.keys():
            diff = sorted(set(sd) ^ set(first))
            label = names[i] if i < len(names) else f"state dict {i}"
            raise CheckpointError(f"{label}: keys differ from the first checkpoint's (e.g. {diff[0]!r})")
    for i, sd in enumerate(state_dicts[1:], 1):
        for key, tensor in sd.items():
            if tuple(tensor.shape) != tuple(first[key].shape):
                label = names[i] if i < len(names) else f"state dict {i}"
                first_label = names[0] if names else "the first"
                raise CheckpointError(f"{label}: not the architecture of {first_label}: {key!r} has shape "
                                      f"{tuple(tensor.shape)}, there {tuple(first[key].shape)}")
    out = {}
    for key, last in state_dicts[-1].items():
        if torch.is_floating_point(last) or torch.is_complex(last):
            total = sum(sd[key].to(torch.float64) for sd in state_dicts)
            out[key] = (total / len(state_dicts)).to(last.dtype)
        else:
            out[key] = last.clone()
    return out


def uniform_soup(checkpoint_paths: Sequence[str | Path], out_path: str | Path) -> Path:
    """Average `checkpoint_paths` into one checkpoint at `out_path`; returns `out_path`."""
    paths = [Path(p) for p in checkpoint_paths]
    if not paths:
        raise ValueError("uniform_soup needs at least one checkpoint")
    checkpoints = [read_checkpoint(p) for p in paths]
    soup = dict(checkpoints[-1])
    soup["model"] = average_state_dicts([c["model"] for c in checkpoints], [str(p) for p in paths])
    soup.pop(EMA_KEY, None)  # the last epoch's EMA is no part of the soup
    soup["soup"] = [str(p) for p in paths]
    return save_checkpoint(out_path, soup)



def soup_folder(folder: str | Path, out_path: str | Path, pattern: str = "*.pth") -> Path:
    """The uniform soup of every checkpoint in `folder` matching `pattern` (sorted by name; `resume.pth`, the
    output and earlier soups left out): checkpoints from anywhere (other runs, other seeds, another machine), as
    the ACCV winner's `tools/model_soup.py --model-folder` souped them. Each must hold the same architecture (one
    CheckpointError line naming the file and the first differing key otherwise)."""
    folder, out_path = Path(folder), Path(out_path)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a folder of checkpoints")
    paths = sorted(p for p in folder.glob(pattern) if p.is_file() and p.resolve() != out_path.resolve()
                   and p.name != "resume.pth" and not p.name.startswith("soup"))
    if len(paths) < 2:
        raise CheckpointError(f"{folder}: {len(paths)} checkpoint(s) matching {pattern!r}: a soup needs at least 2")
    return uniform_soup(paths, out_path)
