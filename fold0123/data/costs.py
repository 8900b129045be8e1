"""train.py's cost line (common.costs does the arithmetic): the run's own row counts and its task's width."""
from __future__ import annotations

from fold0123.common.costs import describe_costs, evaluated_epochs


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
