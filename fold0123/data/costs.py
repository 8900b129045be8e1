"""What a run will write before it writes it (issue 23): the decoded image cache and the evaluation outputs per
evaluated epoch, from the config and the row counts alone, so a competition ten times the bundled one learns its
disk bill at the start instead of half way (train.py prints it once the run's inputs are checked; the cache
builder, data.images.check_room, refuses a disk that cannot hold the cache, with the numbers, before writing)."""
from __future__ import annotations

import numpy as np

from fold0123.common.rundir import VIEW_FORMS
from fold0123.data.images import cache_bytes, height_width


def eval_bytes(rows: int, width: int, form: str = "all", dtype: str = "float32") -> int:
    """One part's eval npz payload (outputs [rows, views kept, width] in `dtype`; the ids and zip framing are
    small)."""
    return rows * len(VIEW_FORMS[form]) * width * np.dtype(dtype).itemsize


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


def run_costs(cfg, split: str, width: int) -> str:
    """describe_costs for a run of `cfg` on `split` whose task saves `width` outputs per view: the dataroot's
    photos (train + test), and per evaluated epoch the parts the watcher writes (`eval.parts`: oof = the split's
    held-out rows, test, train at `eval.train_epochs` only, so not counted per epoch)."""
    from fold0123.data.layout import read_split, read_test, read_train

    train = read_train(cfg.dataroot)
    test = read_test(cfg.dataroot, train)
    fit, held = read_split(cfg.dataroot, split)
    rows = {"oof": 0 if split.startswith("all") else len(held), "test": len(test), "train": len(fit)}
    parts = {part: rows[part] for part in cfg.eval.parts if part in rows and rows[part]}
    return describe_costs(len(train) + len(test), cfg.image_size, parts, width,
                          evaluated_epochs(cfg.epochs, cfg.eval.every), cfg.eval.views, cfg.eval.dtype,
                          cfg.image_cache)
