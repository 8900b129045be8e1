"""How training and evaluation reach a MUGE dataroot's images: decoded once from the packed LMDB into the same
uint8 memory-mapped cache the photos use (data.images.ImageCache), read by data.datasets.ImageDataset as the
photos are.

Why a cache and not the LMDB in every epoch: an epoch of a small-image run decodes each PNG/JPEG again from the
LMDB (base64, then the codec, then the resize), which on 2 CPU cores costs more than the model's step
(BENCHMARKS.md: LMDB reader vs TSV vs memmap cache); decoded once at the run's `image_size`, every epoch,
the evaluator's 8 views and the prediction step slice the same memmap, exactly as the atmaCup tasks do, so the run
directory contract and `evaluate.py --watch` need nothing new. The cache file's name carries the ids, the size and
the LMDB files' names, sizes and mtimes, so a repacked split gets a new cache. `LmdbPairs` reads the LMDB
directly, opened lazily per worker (data.muge_lmdb), for data too large to cache (`clip.reader: lmdb`).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from fold0123.common import muge
from fold0123.common.fingerprint import stat_digest
from fold0123.data.images import CACHE_VERSION, ImageCache, cached_images, fit_image
from fold0123.data.muge import decode_base64, open_image
from fold0123.data.muge_lmdb import LmdbSplit


def decode_image(b64: bytes | str, size: int, where: str) -> np.ndarray:
    """One base64 image as uint8 `[size, size, 3]` (the photos' resize recipe)."""
    return fit_image(open_image(decode_base64(b64, where), where), size)


def muge_cache(root: str | Path, splits: Sequence[str], size: int, cache_dir: str | Path) -> ImageCache:
    """Every image of `splits` (from their LMDB) decoded at `size` into `cache_dir/muge_{size}_{hash}.npy`, or
    that file reused (data.images.cached_images). Ids are the image ids as strings; an image id in two splits
    is one row."""
    root = Path(root)
    readers = [LmdbSplit(root, s) for s in splits]
    owner: dict[str, LmdbSplit] = {}
    for reader in readers:
        for image_id in reader.image_ids():
            owner.setdefault(str(image_id), reader)
    ids = list(owner)
    digest = hashlib.sha1(f"v{CACHE_VERSION}|muge|{root.resolve()}|{','.join(splits)}|".encode())
    digest.update("\n".join(ids).encode())
    digest.update(stat_digest(muge.lmdb_images(root, s) / "data.mdb" for s in splits).encode())

    def decode(image_id: str) -> np.ndarray:
        where = f"{owner[image_id].images_path}: image_id {image_id}"
        return decode_image(owner[image_id].image_b64(int(image_id)), size, where)[None]

    try:
        return cached_images(Path(cache_dir) / f"muge_{size}_{digest.hexdigest()[:16]}.npy", ids, size, ids, decode)
    finally:
        for reader in readers:
            reader.close()


class LmdbPairs(Dataset):
    """The samples of the cached `ImageDataset` of a split's pairs, `(image uint8 [3, S, S], target int64 [1 + L])`,
    read straight from the LMDB (decoded per access), opened lazily in each worker."""

    def __init__(self, root: str | Path, split: str, targets: np.ndarray, size: int):
        self.reader, self.size = LmdbSplit(root, split), size
        self.targets = np.asarray(targets, dtype=np.int64)
        self.image_ids = [pair[0] for pair in self.reader.pairs()]
        self.reader.close()

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, i: int):
        image_id = self.image_ids[i]
        pixels = decode_image(self.reader.image_b64(image_id), self.size, f"{self.reader.images_path}: {image_id}")
        return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))), torch.from_numpy(self.targets[i])
