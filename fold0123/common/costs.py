"""What a run will write before it writes it (issue 23): the decoded image cache and the evaluation outputs per
evaluated epoch, from the config and row counts alone, so a competition ten times the bundled one learns its disk
bill at the start instead of half way. Plain arithmetic on purpose: the launcher states the cache's bill (and
refuses a disk that cannot hold it) before it starts a row, reading no image; train.py adds the eval outputs'
(data.costs.run_costs, which knows the task's width); the cache builder refuses with the same numbers
(data.images.check_room)."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

from fold0123.common.rundir import VIEW_FORMS

Size = int | tuple[int, int]
ITEMSIZE = {"float32": 4, "float16": 2}


def height_width(size: Size) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if h < 1 or w < 1:
        raise ValueError(f"image size must be positive, got {size}")
    return h, w


def cache_stem(size: Size) -> str:
    """The start of every image cache's file name at `size` (data.images.cache_path adds the ids' hash)."""
    h, w = height_width(size)
    return f"images_{h if h == w else f'{h}x{w}'}"


NPY_HEADER = 128  # numpy's .npy header (format 1.0, padded to 64-byte blocks: 128 for any 4-d uint8 shape)


def cache_bytes(n: int, size: Size) -> int:
    """The file the cache of `n` photos at `size` takes: header + n x h x w x 3 bytes."""
    h, w = height_width(size)
    return NPY_HEADER + n * h * w * 3


def room_problem(path: Path, n: int, size: Size) -> str | None:
    """Why the disk of `path`'s folder cannot hold the cache of n photos at `size` (None: it can)."""
    folder = Path(path).parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    needed, free = cache_bytes(n, size), shutil.disk_usage(folder).free
    if needed <= free:
        return None
    h, w = height_width(size)
    return (f"{path}: the image cache of {n} photos at {h}x{w} needs {needed / 1e6:.1f} MB and {Path(path).parent} "
            f"has {free / 1e6:.1f} MB free: free some space, or move checkpoints_dir (the cache lives in its cache/)")


def eval_bytes(rows: int, width: int, form: str = "all", dtype: str = "float32") -> int:
    """One part's eval npz payload (outputs [rows, views kept, width] in `dtype`; the ids and zip framing are
    small)."""
    return rows * len(VIEW_FORMS[form]) * width * ITEMSIZE[dtype]


def human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def describe_costs(n_photos: int, size, part_rows: dict[str, int], width: int, evaluated_epochs: int,
                   form: str = "all", dtype: str = "float32", image_cache: str = "decoded") -> str:
    """One line: the cache, and the eval outputs per evaluated epoch (and over the run's evaluated epochs)."""
    h, w = height_width(size)
    per_epoch = sum(eval_bytes(rows, width, form, dtype) for rows in part_rows.values())
    parts = " + ".join(f"{part} {rows}" for part, rows in part_rows.items())
    views = len(VIEW_FORMS[form])
    cache = human(cache_bytes(n_photos, size))
    cache = cache if image_cache == "decoded" else f"kept as PNG (decoded: {cache})"
    return (f"image cache: {n_photos} photos at {h}x{w}: {cache}; eval outputs: "
            f"{human(per_epoch)} per evaluated epoch ({parts} rows x {views} view{'s' if views > 1 else ''} x "
            f"{width} {dtype}), "
            f"{human(per_epoch * evaluated_epochs)} over {evaluated_epochs} evaluated "
            f"epoch{'' if evaluated_epochs == 1 else 's'}")


def evaluated_epochs(epochs: int, every: int) -> int:
    """How many epochs the watcher evaluates: every `every`-th and the last."""
    return len(set(range(every, epochs + 1, every)) | {epochs}) if epochs > 0 else 0


def csv_rows(path: Path) -> int:
    """Records of a CSV file after its header (quoted newlines counted right), 0 when it is missing."""
    if not Path(path).is_file():
        return 0
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        return max(sum(1 for _ in csv.reader(f)) - 1, 0)


def cache_bill(dataroot: Path, size: Size, cache_dir: Path, image_cache: str = "decoded") -> tuple[str, str | None]:
    """(one line, the problem or None) for the launcher: the photos train.csv and test.csv list, the decoded
    cache they need in `cache_dir` (`reused` when a cache of that size is there), and whether its disk can hold
    it. A PNG cache (image_cache: png) has no size to check beforehand; its line says so."""
    n = csv_rows(Path(dataroot) / "train.csv") + csv_rows(Path(dataroot) / "test.csv")
    h, w = height_width(size)
    needed = cache_bytes(n, size)
    built = any(p.stat().st_size == needed for p in Path(cache_dir).glob(f"{cache_stem(size)}_*.npy"))
    line = f"image cache: {n} photos at {h}x{w}: {human(needed)} in {cache_dir}"
    if image_cache == "png":
        return line.replace(f": {human(needed)} in", f": kept as PNG (decoded {human(needed)}) in"), None
    if built:
        return line + " (built: reused)", None
    problem = room_problem(Path(cache_dir) / f"{cache_stem(size)}.npy", n, size)
    return line, problem
