"""Decode every photo once into a uint8 memory-mapped array, so epochs never touch a JPEG again.

The cache is a plain `.npy` file `[n, size, size, 3]` (HWC, RGB) opened with `mmap_mode='r'`: the OS pages it
in and shares it between DataLoader workers, so resident memory does not grow with the dataset, and numpy can
read it without pickle. Its name carries the size and a hash of the ids (and of the dataroot, the fit mode and the
photos' names, sizes and mtimes), so a changed id list, size or photo gets its own file, and an existing file is
reused without decoding anything.

Resizing (the run config's `resize`): by default each photo is letterboxed to a square (padded with the median
colour of its border) and then resized. Artworks come in every aspect ratio, and a plain resize would squash a
tall scroll and a wide print into the same square, turning aspect ratio into texture; the 90° views also only
make sense on a square. `squish` is the plain resize and `crop` the centre square, fastai's
`Resize(method='squish')` and `Resize(method='crop')` (the paddy notebooks compare them per model).

A size is `s` (square) or `(height, width)`, as the paddy notebooks train at 320x224 (fastai's (224, 320)
order is height first too): `pad` then letterboxes and `crop` centre-crops to that aspect instead of a square.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageOps

from fold0123.common.costs import Size, cache_bytes, cache_stem, height_width, room_problem  # noqa: F401
from fold0123.common.fingerprint import stat_digest
from fold0123.common.io import (DiskFullError, atomic_path, cpu_cores, exclusive_lock, make_dir,
                                remove_orphaned_temporaries)
from fold0123.data.layout import LayoutError, photo_paths

FITS = ("pad", "squish", "crop")
CACHE_VERSION = 2  # bump when the decode/resize recipe changes, so old caches are not reused (2: 16-bit, alpha)
WHITE = (255, 255, 255)


def to_rgb(img: Image.Image, background: tuple[int, int, int] = WHITE) -> Image.Image:
    """The one rule for every decoder (photos, the cache, pixel features, MUGE images): 16-bit and 32-bit
    greyscale (PIL modes I;16*, I: 0..65535; F: 0..1) scaled to 8 bits instead of clipped to white, and
    transparency (RGBA, LA, PA, P with a transparent colour) composited on `background` (white by default, the
    colour the hidden pixels of a transparent PNG are shown on), so a transparent pixel never keeps its hidden
    (usually black) colour."""
    if img.mode.startswith("I;16") or img.mode == "I":  # 16-bit PNGs open as I;16 (Pillow >= 10) or I (older)
        pixels = np.clip(np.asarray(img).astype(np.int64), 0, 65535)
        img = Image.fromarray((pixels >> 8).astype(np.uint8), "L")
    elif img.mode == "F":  # floating-point TIFFs: 0..1
        img = Image.fromarray((np.clip(np.asarray(img), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return img.convert("RGB")


@dataclass
class ImageCache:
    """A decoded, resized image set: `array[index[object_id]]` is the uint8 `[height, width, 3]` image (a view
    into the memmap); `rows` looks up many ids at once."""
    ids: list[str]
    array: np.ndarray  # [n, height, width, 3] uint8, memory-mapped read-only
    path: Path
    decoded: int = 0  # how many JPEGs this build decoded (0 when an existing cache was reused)
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.index = {object_id: row for row, object_id in enumerate(self.ids)}

    def rows(self, object_ids: Sequence[str]) -> np.ndarray:
        """Row numbers of `object_ids`, with one clear error for the first id the cache lacks."""
        missing = [i for i in object_ids if i not in self.index]
        if missing:
            raise KeyError(f"{len(missing)} object_id(s) not in image cache {self.path}, e.g. {missing[0]!r}")
        return np.fromiter((self.index[i] for i in object_ids), dtype=np.int64, count=len(object_ids))


def _border_colour(pixels: np.ndarray) -> tuple[int, int, int]:
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    return tuple(int(v) for v in np.median(border, axis=0))


def _box(width: int, height: int, aspect: float, larger: bool) -> tuple[int, int]:
    """The (width, height) of the `aspect` (= w / h) box that holds (`larger`) or fits inside the photo."""
    if (width / height > aspect) == larger:
        return width, max(1, round(width / aspect))
    return max(1, round(height * aspect)), height


def load_image(path: str | Path, size: Size, fit: str = "pad", background: tuple[int, int, int] = WHITE) -> np.ndarray:
    """One photo as uint8 `[height, width, 3]` RGB (`size`: s or (h, w)); greyscale, CMYK and EXIF-rotated JPEGs
    come out upright RGB, 16-bit PNGs scaled and transparency composited on `background` (`to_rgb`)."""
    path = Path(path)
    height_width(size)
    if fit not in FITS:
        raise ValueError(f"unknown fit {fit!r}; expected one of {FITS}")
    if not path.is_file():
        raise LayoutError(f"{path}: photo not found")
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            img = to_rgb(img, background)
            img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise LayoutError(f"{path}: unreadable image ({err})") from None
    return fit_image(img, size, fit)


def fit_image(img: Image.Image, size: Size, fit: str = "pad") -> np.ndarray:
    """An RGB PIL image as uint8 `[height, width, 3]` by `fit`: the one resize recipe of every cache (photos
    here, MUGE images in data.muge_images)."""
    if fit not in FITS:
        raise ValueError(f"unknown fit {fit!r}; expected one of {FITS}")
    height, width = height_width(size)
    aspect = width / height
    if fit == "pad" and img.width * height != img.height * width:
        box = _box(img.width, img.height, aspect, larger=True)
        canvas = Image.new("RGB", box, _border_colour(np.asarray(img)))
        canvas.paste(img, ((box[0] - img.width) // 2, (box[1] - img.height) // 2))
        img = canvas
    elif fit == "crop" and img.width * height != img.height * width:
        box = _box(img.width, img.height, aspect, larger=False)
        left, top = (img.width - box[0]) // 2, (img.height - box[1]) // 2
        img = img.crop((left, top, left + box[0], top + box[1]))
    if img.size != (width, height):
        img = img.resize((width, height), Image.Resampling.BICUBIC, reducing_gap=3.0)
    return np.asarray(img, dtype=np.uint8)


def cache_path(dataroot: str | Path, object_ids: Sequence[str], size: Size, cache_dir: str | Path,
               fit: str = "pad", background: tuple[int, int, int] = WHITE) -> Path:
    digest = hashlib.sha1()
    digest.update(f"v{CACHE_VERSION}|{fit}|{Path(dataroot).resolve()}|".encode())
    if tuple(background) != WHITE:  # the default keeps its name
        digest.update(f"background{tuple(background)}|".encode())
    digest.update("\n".join(object_ids).encode())
    # a replaced photo (new size or mtime) gives a new cache instead of its old pixels (common.fingerprint)
    digest.update(stat_digest(photo_paths(dataroot, object_ids)).encode())
    return Path(cache_dir) / f"{cache_stem(size)}_{digest.hexdigest()[:16]}.npy"


def _open_existing(path: Path, n: int, size: Size) -> np.ndarray | None:
    """The cache at `path` if it is a whole array of the right shape (else None: it will be rebuilt)."""
    if not path.is_file():
        return None
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError):
        return None
    if array.shape != (n, *height_width(size), 3) or array.dtype != np.uint8:
        return None
    return array


def _decode_chunk(args: tuple[list[str], int, str, tuple[int, int, int]]) -> np.ndarray:
    paths, size, fit, background = args
    if not paths:
        return np.zeros((0, *height_width(size), 3), np.uint8)
    return np.stack([load_image(p, size, fit, background) for p in paths])


def default_workers() -> int:
    return min(8, cpu_cores())


def build_image_cache(dataroot: str | Path, object_ids: Sequence[str], size: Size, cache_dir: str | Path,
                      fit: str = "pad", workers: int | None = None, chunk: int = 64,
                      background: tuple[int, int, int] = WHITE) -> ImageCache:
    """Decode `photos/{id}.jpg` for every id once into `cache_dir/images_{size}_{hash}.npy`, or reuse that file
    (`cached_images`). `workers` (default: up to 8 CPUs) decode chunks of `chunk` photos in a process pool when
    there is more than one chunk. A missing or corrupt photo raises `LayoutError` naming the file. Transparent
    pixels are composited on `background` (`to_rgb`; another background is another cache file).
    """
    object_ids = [str(i) for i in object_ids]
    if len(set(object_ids)) != len(object_ids):
        raise ValueError("build_image_cache: duplicate object ids")
    height_width(size)
    paths = [str(p) for p in photo_paths(dataroot, object_ids)]
    background = tuple(int(c) for c in background)
    return cached_images(cache_path(dataroot, object_ids, size, cache_dir, fit, background), object_ids, size,
                         [(paths[i:i + chunk], size, fit, background) for i in range(0, len(paths), chunk)],
                         _decode_chunk,
                         default_workers() if workers is None else workers)


def cached_images(path: Path, ids: list[str], size: Size, jobs: list, decode: Callable[[object], np.ndarray],
                  workers: int = 1) -> ImageCache:
    """The one cache builder (photos here, MUGE's LMDB images in data.muge_images): the array at `path` when it
    is whole, else `decode(job)` (a block of rows, the jobs in order) written into it, in a fork process pool
    when `workers` > 1 and there is more than one job (`decode` must then pickle: a module-level function).

    The array is written under a temporary name, reserved on disk first (`_reserve`), and renamed into place,
    so a crash never leaves a half-filled cache that a later run would trust; concurrent builders of the same
    file wait for the first on the lock beside it, so runs started together (fold0123) decode once, not once
    each."""
    remove_orphaned_temporaries(path.parent)  # a build killed half way left its `.tmp.<pid>` (dead PIDs only)
    existing = _open_existing(path, len(ids), size)
    if existing is not None:
        return ImageCache(ids, existing, path, decoded=0)
    with exclusive_lock(path.with_name(path.name + ".lock"), wait=True):
        existing = _open_existing(path, len(ids), size)  # another process may have built it meanwhile
        if existing is not None:
            return ImageCache(ids, existing, path, decoded=0)
        _write_cache(path, len(ids), size, jobs, decode, workers)
    return ImageCache(ids, np.load(path, mmap_mode="r", allow_pickle=False), path, decoded=len(ids))


def _reserve(path: Path) -> None:
    """Allocate the whole (sparse) memmap file now: on a full disk a write into a mapped page that cannot be
    allocated kills the process with SIGBUS, no message and no FAILED marker (tests/test_faults.py found it);
    allocated up front, it is an ENOSPC here, which atomic_path reports as one DiskFullError line. A file system
    without fallocate (EOPNOTSUPP, EINVAL) keeps the old behaviour."""
    with open(path, "r+b") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
        except OSError as err:
            if err.errno == errno.ENOSPC:
                raise


def check_room(path: Path, n: int, size: Size) -> None:
    """DiskFullError before anything is written when the folder's disk cannot hold the cache (with the numbers)."""
    problem = room_problem(path, n, size)
    if problem:
        raise DiskFullError(problem)


def _write_cache(path: Path, n: int, size: Size, jobs: list, decode: Callable, workers: int) -> None:
    make_dir(path.parent)
    check_room(path, n, size)
    with atomic_path(path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, *height_width(size), 3))
        try:
            _reserve(tmp)
        except OSError:
            del out  # unmapped, so the unlinked temp file gives its space back at once
            raise
        row = 0
        with contextlib.ExitStack() as stack:
            blocks = map(decode, jobs)
            if workers > 1 and len(jobs) > 1:
                # fork: the children only run PIL/numpy, and need not re-import the caller's script
                blocks = stack.enter_context(ProcessPoolExecutor(
                    min(workers, len(jobs)), mp_context=multiprocessing.get_context("fork"))).map(decode, jobs)
            for block in blocks:
                out[row:row + len(block)] = block
                row += len(block)
        out.flush()
        del out
