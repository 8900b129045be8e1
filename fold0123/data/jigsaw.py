"""Jigsaw pretext (Noroozi & Favaro 2016), as the original atmaCup #11 solution trained it, made on the fly.

The original cut each photo into 3x3 tiles with ImageMagick and wrote, per photo, the identity plus 7 random
non-identity shuffles to disk; the label said where each tile went. Here the same batch is made from a batch
of tensors with 9 batched row gathers (one per tile position, not per image), about two passes over the
output bytes, with no files or subprocesses (bench/jigsaw_bench.py measures it).

Conventions (one module per method, the lightly shape):
- a permutation `perm` of the `g*g` tiles says where each tile goes: tile `t` (row-major) lands at position
  `perm[t]`. The label of a shuffled image is its permutation: `labels[i, t] = perm[t]`.
- the model predicts `g*g` x `g*g` logits, reshaped `[N, tiles, positions]`; the loss is the mean of the `g*g`
  `g*g`-way cross-entropies (one per tile), not an MSE on a one-hot.
"""
from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import torch
import torch.nn.functional as F

GRID = 3
ENUMERATE_LIMIT = 362_880  # 9!: every permutation of a 3x3 grid is enumerated; larger grids are sampled


@functools.lru_cache(maxsize=2)
def _all_permutations(tiles: int) -> np.ndarray:
    return np.array(list(itertools.permutations(range(tiles))), dtype=np.int8)


@functools.lru_cache(maxsize=16)
def _permutation_set(n: int, grid: int, kind: str, seed: int) -> np.ndarray:
    tiles = grid * grid
    rng = np.random.default_rng(seed)
    total = math.factorial(tiles)
    if n > total:
        raise ValueError(f"asked for {n} permutations of {tiles} tiles; only {total} exist")
    identity = np.arange(tiles)
    if kind == "random":
        chosen = {tuple(identity)}
        rows = [identity]
        while len(rows) < n:
            p = rng.permutation(tiles)
            if tuple(p) not in chosen:
                chosen.add(tuple(p))
                rows.append(p)
        return np.stack(rows)
    if kind != "hamming":
        raise ValueError(f"unknown permutation set kind {kind!r}; expected 'hamming' or 'random'")
    if total <= ENUMERATE_LIMIT:
        candidates = _all_permutations(tiles)
    else:  # 16! and up cannot be enumerated: greedy max-min over a large random pool instead
        candidates = np.stack([rng.permutation(tiles) for _ in range(max(20 * n, 50_000))]).astype(np.int8)
        candidates[0] = identity
    # Greedy max-min Hamming selection (Noroozi & Favaro, VISSL): start from the identity, then repeatedly add
    # the candidate farthest (in its minimum distance) from everything chosen so far; ties broken at random.
    min_dist = np.full(len(candidates), tiles + 1, dtype=np.int16)
    rows = [identity]
    for _ in range(n - 1):
        np.minimum(min_dist, (candidates != rows[-1]).sum(1, dtype=np.int16), out=min_dist)
        best = np.flatnonzero(min_dist == min_dist.max())
        rows.append(candidates[rng.choice(best)].astype(np.int64))
    return np.stack(rows)


def permutation_set(n: int, grid: int = GRID, kind: str = "hamming", seed: int = 0) -> torch.Tensor:
    """A fixed set of `n` permutations `[n, grid*grid]`, row 0 the identity.

    `hamming`: maximal minimum Hamming distance (greedy), the paper's choice: distinct shuffles are easy to
    tell apart, so the net must learn shapes, not pixel trivia. `random`: uniformly random distinct permutations.
    """
    if n < 2:
        raise ValueError(f"a permutation set needs at least 2 rows (identity + one shuffle), got {n}")
    return torch.from_numpy(_permutation_set(int(n), int(grid), kind, int(seed)).copy())


def _random_shuffles(batch: int, count: int, tiles: int, permutations: torch.Tensor | None,
                     generator: torch.Generator | None) -> torch.Tensor:
    """`[batch, count, tiles]` non-identity permutations: from the set (without repeats per image when it can)
    or uniformly among all (re-drawing the rare identity)."""
    if permutations is not None:
        pool = permutations.shape[0] - 1  # row 0 is the identity
        if pool < 1:
            raise ValueError("the permutation set has no non-identity row")
        if pool >= count:
            rows = torch.rand(batch, pool, generator=generator).argsort(1)[:, :count] + 1
        else:
            rows = torch.randint(1, pool + 1, (batch, count), generator=generator)
        return permutations[rows]
    perms = torch.rand(batch, count, tiles, generator=generator).argsort(-1)
    identity = torch.arange(tiles)
    while True:
        same = (perms == identity).all(-1)
        if not bool(same.any()):
            return perms
        perms[same] = torch.rand(int(same.sum()), tiles, generator=generator).argsort(-1)


def crop_to_grid(images: torch.Tensor, grid: int = GRID) -> torch.Tensor:
    """Centre-crop H and W to multiples of `grid` so the tiles are equal (224 -> 222 for a 3x3 grid)."""
    h, w = images.shape[-2:]
    th, tw = h // grid * grid, w // grid * grid
    if th == 0 or tw == 0:
        raise ValueError(f"image of {h}x{w} px is smaller than a {grid}x{grid} grid")
    top, left = (h - th) // 2, (w - tw) // 2
    return images[..., top:top + th, left:left + tw]


def shuffle_tiles(images: torch.Tensor, perms: torch.Tensor, grid: int = GRID,
                  sources: torch.Tensor | None = None) -> torch.Tensor:
    """Images with their tiles moved by `perms` `[N, grid*grid]` (tile t -> position perms[n, t]).

    Output row n is image `sources[n]` of `images` `[B, C, H, W]` shuffled by `perms[n]` (`sources` defaults to
    0..N-1), so one source image is shuffled several ways without first being repeated. The tiles of the B
    sources are made contiguous once, then each of the grid*grid output positions is filled for the whole
    batch by one row gather: two passes over the output bytes whatever N (a plain copy is one).
    """
    images = crop_to_grid(images, grid)
    b, c, h, w = images.shape
    th, tw = h // grid, w // grid
    n = perms.shape[0]
    if sources is None:
        if n != b:
            raise ValueError(f"{n} permutations for {b} images")
        sources = torch.arange(n)
    device = images.device
    tiles = images.reshape(b, c, grid, th, grid, tw).permute(0, 2, 4, 1, 3, 5).reshape(b * grid * grid, c, th, tw)
    position_source = perms.to(device).argsort(-1)  # [n, p] = the tile that lands at position p
    rows = sources.to(device)[:, None] * (grid * grid) + position_source  # row of `tiles` shown at (n, p)
    out = torch.empty((n, c, h, w), dtype=images.dtype, device=device)
    grid_view = out.view(n, c, grid, th, grid, tw)
    for p in range(grid * grid):
        grid_view[:, :, p // grid, :, p % grid, :] = tiles.index_select(0, rows[:, p])
    return out


def jigsaw_batch(images: torch.Tensor, perms_per_image: int = 8, permutations: torch.Tensor | None = None,
                 generator: torch.Generator | None = None, grid: int = GRID) -> tuple[torch.Tensor, torch.Tensor]:
    """A jigsaw training batch from `images` `[B, C, H, W]` (any dtype; uint8 is cheapest).

    Per source image: the identity plus `perms_per_image - 1` random non-identity shuffles (the original's
    1 + 7), drawn from `permutations` (a `permutation_set`, row 0 the identity) or uniformly when None.
    Returns `(shuffled [B * perms_per_image, C, H', W'], labels [B * perms_per_image, grid*grid])`, image-major
    (rows `b * perms_per_image + j`, j = 0 the identity), with H', W' cropped to multiples of `grid`.
    `generator` is a CPU generator; the labels live on the images' device.
    """
    if images.dim() != 4:
        raise ValueError(f"jigsaw_batch expects [B, C, H, W], got shape {tuple(images.shape)}")
    if perms_per_image < 1:
        raise ValueError(f"perms_per_image must be >= 1, got {perms_per_image}")
    tiles = grid * grid
    if permutations is not None and permutations.shape[1] != tiles:
        raise ValueError(f"permutations have {permutations.shape[1]} tiles; a {grid}x{grid} grid has {tiles}")
    b = images.shape[0]
    identity = torch.arange(tiles).expand(b, 1, tiles)
    shuffles = _random_shuffles(b, perms_per_image - 1, tiles, permutations, generator)
    labels = torch.cat([identity, shuffles.long()], 1).reshape(b * perms_per_image, tiles).to(images.device)
    sources = torch.arange(b).repeat_interleave(perms_per_image)
    return shuffle_tiles(images, labels, grid, sources), labels


def jigsaw_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean of the per-tile cross-entropies: logits `[N, tiles*tiles]` read as `[N, tile, position]`."""
    tiles = labels.shape[-1]
    return F.cross_entropy(logits.float().reshape(-1, tiles), labels.reshape(-1).long())

