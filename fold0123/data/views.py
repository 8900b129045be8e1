"""The 8 dihedral views of a square image, as paired augment / de-augment tensor ops (the ttach shape).

The original solution wrote 8 copies of every photo to disk (`photos, _h, _v, _hv, _r, _hr, _vr, _hvr`) with
ImageMagick; here a view is a flip and/or a 90° rotation applied to a batch on the fly, so it costs one strided
copy on the device and no disk at all. View `k` (0..7) is: horizontal flip if bit 0, vertical flip if bit 1,
then a 90° clockwise rotation (ImageMagick's `-rotate 90`, as the original's `_r` files) if bit 2. These are
the 8 distinct elements of the dihedral group D4, so training on random views and averaging the 8 views at test
time covers every symmetry of the square exactly once.

All functions act on the last two dimensions (`[..., H, W]`), so they work for CHW images, NCHW batches and
dense maps alike. Rotated views swap H and W, so a rectangular input (the paddy notebooks' 320x224) trains on the
4 flips only, and its rotated views are evaluated as batches of their own (`view_outputs`).
"""
from __future__ import annotations

import torch

from fold0123.common.rundir import VIEWS as VIEW_NAMES  # the run directory's view axis names them

N_VIEWS = len(VIEW_NAMES)


def apply_view(x: torch.Tensor, k: int) -> torch.Tensor:
    """View `k` of `x` (`[..., H, W]`): flips first, then a 90° clockwise rotation for k >= 4."""
    k = int(k)
    if not 0 <= k < N_VIEWS:
        raise ValueError(f"view index {k} outside 0..{N_VIEWS - 1}")
    dims = ([-1] if k & 1 else []) + ([-2] if k & 2 else [])
    if dims:
        x = torch.flip(x, dims)
    if k & 4:
        x = torch.rot90(x, -1, dims=(-2, -1))
    return x


def all_views(x: torch.Tensor) -> torch.Tensor:
    """All 8 views of a batch `[B, ..., H, W]` as one batch `[B * 8, ..., H, W]`, sample-major.

    Row `b * 8 + k` is view `k` of sample `b`, so a model's outputs `[B * 8, d]` reshape to the run directory's
    `[B, 8, d]` (views in `VIEW_NAMES` order) with `.view(B, 8, d)`; see `split_views`.
    """
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"all_views needs square images, got {tuple(x.shape[-2:])} (rotations swap H and W)")
    stacked = torch.stack([apply_view(x, k) for k in range(N_VIEWS)], dim=1)
    return stacked.reshape(x.shape[0] * N_VIEWS, *x.shape[1:])


def split_views(outputs: torch.Tensor) -> torch.Tensor:
    """Outputs of `all_views` inputs, `[B * 8, ...]` -> `[B, 8, ...]` (the merge step is then a mean over dim 1)."""
    if outputs.shape[0] % N_VIEWS:
        raise ValueError(f"first dimension {outputs.shape[0]} is not a multiple of {N_VIEWS} views")
    return outputs.reshape(outputs.shape[0] // N_VIEWS, N_VIEWS, *outputs.shape[1:])


def view_outputs(fn, x: torch.Tensor) -> torch.Tensor:
    """`fn` of all 8 views of a batch `[B, C, H, W]` as `[B, 8, ...]`: one batch of `B * 8` for a square input; for
    a rectangular one, one call per view (a rotated view has another shape than the flips, a CNN takes both)."""
    if x.shape[-1] == x.shape[-2]:
        return split_views(fn(all_views(x)))
    return torch.stack([fn(apply_view(x, k)) for k in range(N_VIEWS)], dim=1)


def random_view_ids(batch_size: int, generator: torch.Generator | None = None, n_views: int = N_VIEWS) -> torch.Tensor:
    return torch.randint(0, n_views, (batch_size,), generator=generator)


def random_views(x: torch.Tensor, generator: torch.Generator | None = None,
                 views: torch.Tensor | None = None) -> torch.Tensor:
    """Each sample of `x` (`[B, ..., H, W]`) in a random dihedral view: the training augmentation; a rectangular
    batch draws among the 4 flips only (views 0..3), which keep its shape.

    One op per view kind over the samples that drew it (8 ops a batch, not B). `generator` is a CPU
    `torch.Generator` (deterministic shuffling on resume); `views` fixes the per-sample view ids instead.
    """
    square = x.shape[-1] == x.shape[-2]
    if views is None:
        views = random_view_ids(x.shape[0], generator, N_VIEWS if square else 4)
    elif not square and bool((views >= 4).any()):
        raise ValueError(f"a rotated view of a rectangular batch {tuple(x.shape[-2:])} changes its shape")
    views = views.to(x.device)
    out = torch.empty_like(x)
    for k in range(N_VIEWS):
        mask = views == k
        if bool(mask.any()):
            out[mask] = apply_view(x[mask], k)
    return out
