"""Torch Datasets over the decoded image cache: a sample is a uint8 CHW tensor and the task's target row.

Workers only slice the memory-mapped cache: normalisation, the dihedral views and jigsaw shuffling run on the
whole batch on the device (`normalize`, `data.views`, `data.jigsaw`), where they cost one pass over the bytes,
instead of per sample in Python where they would dominate a CPU-bound loader.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from fold0123.data.images import ImageCache

HALF = (0.5, 0.5, 0.5)


class ImageDataset(Dataset):
    """`(image uint8 [3, S, S], target [d])` for each id (an id may repeat: the clip task's (image, text) pairs,
    whose int64 targets are the text's key and token ids); the target is `tensor(-1.)` without targets."""

    def __init__(self, cache: ImageCache, ids: Sequence, targets: np.ndarray | None = None, dtype=np.float32):
        self.cache = cache
        self.ids = [str(i) for i in ids]
        self.rows = cache.rows(self.ids)
        if targets is not None:
            targets = np.asarray(targets, dtype=dtype)
            if targets.ndim == 1:
                targets = targets[:, None]
            if len(targets) != len(self.ids):
                raise ValueError(f"{len(targets)} target rows for {len(self.ids)} ids")
        self.targets = targets

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        # a copy out of the read-only memmap (HWC -> CHW), so the tensor owns writable memory
        image = torch.from_numpy(np.array(self.cache.array[self.rows[i]].transpose(2, 0, 1), order="C"))
        target = torch.tensor(self.targets[i]) if self.targets is not None else torch.tensor(-1.0)
        return image, target


def normalize(batch: torch.Tensor, mean: Sequence[float] = HALF, std: Sequence[float] = HALF,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 `[B, 3, H, W]` (on any device) -> float `(x / 255 - mean) / std`, in one fused pass per batch."""
    if batch.dim() != 4 or batch.shape[1] != len(mean):
        raise ValueError(f"normalize expects [B, {len(mean)}, H, W], got {tuple(batch.shape)}")
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], device=batch.device, dtype=dtype).view(1, -1, 1, 1)
    shift = torch.tensor([m / s for m, s in zip(mean, std)], device=batch.device, dtype=dtype).view(1, -1, 1, 1)
    return batch.to(dtype) * scale - shift
