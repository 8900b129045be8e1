"""Pseudo labels: confident test predictions become extra training rows for the next round.

A test object whose ensembled top class probability is >= thr (their `creat_pseudo --thr 0.45`) becomes a row
  object_id      the test object's id
  sorting_date   the median year of its pseudo class in train.csv (the layout readers reject a missing year)
  art_series_id  'pseudo-{object_id}': a series of its own, so group folds never tie it to a real series
  target         the argmax class
  pseudo         1 (real rows carry 0)
Round r writes, next to the folds in the dataroot, for every split s in split_names(K):
  {s}_pseudo{r}_train.csv   s's train part + the pseudo rows
  {s}_pseudo{r}_test.csv    s's held-out part, unchanged (pseudo rows never enter validation)
so the round trains with `--split 3fold0_pseudo1` and stacks with `split_suffix: _pseudo1`. Test objects are
never train.csv rows, so a pseudo row can never be one of a fold's validation rows either.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fold0123.common.errors import UsageError
from fold0123.common.io import write_csv, write_text
from fold0123.data.layout import TRAIN_COLUMNS, read_csv, read_split, read_train, split_names, split_paths

COLUMNS = ["object_id", "sorting_date", "art_series_id", "target", "pseudo"]


def pseudo_rows(test_ids, probs, thr: float, train: pd.DataFrame) -> pd.DataFrame:
    """Rows (COLUMNS) for the test objects whose top probability is >= thr."""
    probs = np.asarray(probs, float)
    test_ids = np.asarray(test_ids, str)
    if len(test_ids) != len(probs):
        raise ValueError(f"pseudo_rows: {len(test_ids)} ids but {len(probs)} probability rows")
    sure = probs.max(axis=1) >= thr
    classes = probs[sure].argmax(axis=1)
    years = train.groupby(train["target"].astype(int))["sorting_date"].median()
    overall = float(train["sorting_date"].median())
    return pd.DataFrame({
        "object_id": test_ids[sure],
        "sorting_date": [float(years.get(c, overall)) for c in classes],
        "art_series_id": [f"pseudo-{i}" for i in test_ids[sure]],
        "target": classes.astype(int),
        "pseudo": 1,
    }, columns=COLUMNS)


def write_pseudo_splits(dataroot: str | Path, k: int, round_: int, rows: pd.DataFrame,
                        base_suffix: str = "") -> list[Path]:
    """Write round `round_`'s split CSVs (see the module docstring); returns the paths written.

    `base_suffix` names the splits the round builds on (default: the original folds; rows of an earlier round
    are not carried over, each round's pseudo rows replace the last ones).
    """
    if round_ < 1:
        raise UsageError(f"pseudo round must be >= 1, got {round_}")
    train_ids = set(read_train(dataroot)["object_id"])
    leaked = rows["object_id"][rows["object_id"].isin(train_ids)]
    if len(leaked):
        raise ValueError(f"pseudo rows must be test objects; {leaked.iloc[0]!r} is a train.csv row")
    written = []
    for split in split_names(k):
        _, held_out = read_split(dataroot, f"{split}{base_suffix}")  # validates both parts: one clear error
        base_train, base_test = split_paths(dataroot, f"{split}{base_suffix}")
        train_part = read_csv(base_train, TRAIN_COLUMNS).drop(columns=["pseudo"], errors="ignore")  # as written
        train_part = train_part[~train_part["art_series_id"].astype(str).str.startswith("pseudo-")]
        in_held_out = rows["object_id"].isin(set(held_out["object_id"]))
        if split != "all" and in_held_out.any():
            raise ValueError(f"pseudo row {rows['object_id'][in_held_out].iloc[0]!r} is a held-out row of {split}")
        real = train_part.assign(pseudo=0)
        new_train = pd.concat([real, rows], ignore_index=True)[COLUMNS + [c for c in real.columns
                                                                          if c not in COLUMNS]]
        train_path, test_path = split_paths(dataroot, f"{split}_pseudo{round_}")
        write_csv(train_path, new_train)
        write_text(test_path, base_test.read_text())  # byte for byte: validation rows stay what they were
        written += [train_path, test_path]
    return written
