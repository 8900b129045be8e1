"""Photos kept encoded, for a competition whose decoded cache would not fit on the disk (issue 23): 100k photos at
448 px are 60 GB as uint8, a fraction of that as PNG.

`image_cache: png` makes the same images as the decoded cache (the one decode and resize recipe, data.images),
stores each as a lossless PNG in one blob file, and decodes the rows a reader asks for, in the DataLoader worker
that asks: the pixels are the decoded cache's exactly, so the views, the augmentation and a run's weights are
bit-identical to a run on the decoded cache (tests/test_eval_forms.py checks one epoch). JPEG would be smaller
and lossy; it would change the pixels, and with them every result, so it is not offered as the same thing.

The blob: the PNGs one after another, then the n + 1 offsets (int64 little-endian), n (int64) and MAGIC. It is
written under a temporary name and renamed into place, so a half-written blob is never read; the trailer says
whether an existing file is whole.
"""
from __future__ import annotations

import io
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from fold0123.common.io import atomic_path, exclusive_lock, make_dir, remove_orphaned_temporaries
from fold0123.data.images import WHITE, ImageCache, Size, _decode_chunk, cache_path, height_width
from fold0123.data.layout import photo_paths

MAGIC = b"F0123PNG"
TRAILER = 16  # n (int64) + MAGIC


class EncodedImages:
    """An array-like `[n, h, w, 3]` uint8 over a blob of PNGs: indexing (an int, a slice, an array of rows)
    decodes the rows asked for, so a reader holds a batch, never the set."""

    def __init__(self, path: Path, size: Size):
        self.path = Path(path)
        self.dtype, self.ndim = np.dtype(np.uint8), 4
        self._open()
        self.shape = (len(self.offsets) - 1, *height_width(size), 3)

    def _open(self) -> None:
        self.blob = np.memmap(self.path, np.uint8, mode="r")
        n = int(np.frombuffer(self.blob[-TRAILER:-len(MAGIC)].tobytes(), "<i8")[0])
        start = len(self.blob) - TRAILER - 8 * (n + 1)
        self.offsets = np.frombuffer(self.blob[start:len(self.blob) - TRAILER].tobytes(), "<i8")

    def __getstate__(self) -> dict:  # a spawned DataLoader worker maps the file again, it does not copy it
        return {k: v for k, v in self.__dict__.items() if k not in ("blob", "offsets")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._open()

    def __len__(self) -> int:
        return self.shape[0]

    def decode(self, row: int) -> np.ndarray:
        data = self.blob[self.offsets[row]:self.offsets[row + 1]].tobytes()
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            return self.decode(int(index) % len(self))
        rows = np.arange(len(self))[index]
        out = np.empty((len(rows), *self.shape[1:]), np.uint8)
        for j, row in enumerate(rows):
            out[j] = self.decode(int(row))
        return out


def is_whole(path: Path, n: int) -> bool:
    """The blob at `path` ends with a trailer for `n` images."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            if f.tell() < TRAILER + 8 * (n + 1):
                return False
            f.seek(-TRAILER, 2)
            tail = f.read(TRAILER)
    except OSError:
        return False
    return tail[8:] == MAGIC and int(np.frombuffer(tail[:8], "<i8")[0]) == n


def _encode_chunk(args) -> list[bytes]:
    """The decoded cache's images of a chunk (data.images._decode_chunk), each as PNG bytes."""
    out = []
    for image in _decode_chunk(args):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG", compress_level=1)  # fast; lossless at any level
        out.append(buffer.getvalue())
    return out


def build_encoded_cache(dataroot: str | Path, object_ids: Sequence[str], size: Size, cache_dir: str | Path,
                        fit: str = "pad", workers: int = 1, chunk: int = 64) -> ImageCache:
    """data.images.build_image_cache's images, kept as PNGs in `cache_dir/images_{size}_{hash}.png.blob` (reused
    when whole; built under the lock beside it, so runs started together encode once)."""
    object_ids = [str(i) for i in object_ids]
    if len(set(object_ids)) != len(object_ids):
        raise ValueError("build_encoded_cache: duplicate object ids")
    path = cache_path(dataroot, object_ids, size, cache_dir, fit).with_suffix(".png.blob")
    paths = [str(p) for p in photo_paths(dataroot, object_ids)]
    jobs = [(paths[i:i + chunk], size, fit, WHITE) for i in range(0, len(paths), chunk)]
    make_dir(path.parent)
    remove_orphaned_temporaries(path.parent)
    decoded = 0
    if not is_whole(path, len(object_ids)):
        with exclusive_lock(path.with_name(path.name + ".lock"), wait=True):
            if not is_whole(path, len(object_ids)):
                _write_blob(path, jobs, workers)
                decoded = len(object_ids)
    return ImageCache(object_ids, EncodedImages(path, size), path, decoded=decoded)


def _write_blob(path: Path, jobs: list, workers: int) -> None:
    offsets = [0]
    with atomic_path(path) as tmp, open(tmp, "wb") as f, ExitStack() as stack:
        blocks = map(_encode_chunk, jobs)
        if workers > 1 and len(jobs) > 1:
            blocks = stack.enter_context(ProcessPoolExecutor(
                min(workers, len(jobs)), mp_context=multiprocessing.get_context("fork"))).map(_encode_chunk, jobs)
        for block in blocks:
            for png in block:
                f.write(png)
                offsets.append(offsets[-1] + len(png))
        f.write(np.asarray(offsets, "<i8").tobytes())
        f.write(np.asarray([len(offsets) - 1], "<i8").tobytes() + MAGIC)
