"""Pseudo labels: confident test predictions become extra training rows for the next round.

A test object whose ensembled top class probability is >= thr (their `creat_pseudo --thr 0.45`) becomes a row
  object_id      the test object's id
  (spec columns) atmaCup's sorting_date: the median of its pseudo class in train.csv (the readers reject a gap)
  (group column) atmaCup's art_series_id: 'pseudo-{object_id}', a group of its own, so group folds never tie it
                 to a real one
  target         the argmax class
  pseudo         1 (real rows carry 0)
Round r writes, next to the folds in the dataroot, for every split s in split_names(K):
  {s}_pseudo{r}_train.csv   s's train part + the pseudo rows
  {s}_pseudo{r}_test.csv    s's held-out part, unchanged (pseudo rows never enter validation)
so the round trains with `--split 3fold0_pseudo1` and stacks with `split_suffix: _pseudo1`. Test objects are
never train.csv rows, so a pseudo row can never be one of a fold's validation rows either. A round built on an
earlier one replaces that round's pseudo rows, or, `cumulative`, keeps those the new round does not relabel.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fold0123.common.errors import UsageError
from fold0123.common.io import write_csv, write_text
from fold0123.data.competition import read_competition
from fold0123.data.layout import read_csv, read_split, read_train, split_names, split_paths


def pseudo_rows(test_ids, labels, top, thr: float, train: pd.DataFrame, columns: tuple[str, ...],
                group_column: str | None) -> pd.DataFrame:
    """Rows (`columns` + pseudo, the split files' columns) for the test objects whose top probability `top` (of
    the class `labels` names, both [n], what the ensemble keeps per row) is >= thr."""
    test_ids, labels, top = np.asarray(test_ids, str), np.asarray(labels), np.asarray(top)
    if not len(test_ids) == len(labels) == len(top):
        raise ValueError(f"pseudo_rows: {len(test_ids)} ids but {len(labels)} labels and {len(top)} probabilities")
    sure = top >= thr
    classes = labels[sure]
    out = {"object_id": test_ids[sure]}
    for column in columns:
        if column == group_column:
            out[column] = [f"pseudo-{i}" for i in test_ids[sure]]
        elif column not in ("object_id", "target"):
            per_class = train.groupby(train["target"].astype(int))[column].median()
            overall = float(train[column].median())
            out[column] = [float(per_class.get(c, overall)) for c in classes]
    out["target"] = classes.astype(int)
    out["pseudo"] = 1
    return pd.DataFrame(out, columns=list(columns) + ["pseudo"])


def write_pseudo_splits(dataroot: str | Path, k: int, round_: int, rows: pd.DataFrame,
                        base_suffix: str = "", cumulative: bool = False) -> list[Path]:
    """Write round `round_`'s split CSVs (see the module docstring); returns the paths written.

    `base_suffix` names the splits the round builds on (default: the original folds). An earlier round's pseudo
    rows are dropped, or with `cumulative` kept where this round does not relabel the same object.
    """
    if round_ < 1:
        raise UsageError(f"pseudo round must be >= 1, got {round_}")
    train_ids = set(read_train(dataroot)["object_id"])
    leaked = rows["object_id"][rows["object_id"].isin(train_ids)]
    if len(leaked):
        raise ValueError(f"pseudo rows must be test objects; {leaked.iloc[0]!r} is a train.csv row")
    competition = read_competition(dataroot)
    columns = list(competition.train_columns) + ["pseudo"]
    written = []
    for split in split_names(k):
        _, held_out = read_split(dataroot, f"{split}{base_suffix}")  # validates both parts: one clear error
        base_train, base_test = split_paths(dataroot, f"{split}{base_suffix}")
        train_part = read_csv(base_train, competition.train_columns, competition.text_columns)  # as written
        earlier = (pd.to_numeric(train_part["pseudo"], errors="coerce").fillna(0) == 1 if "pseudo" in train_part
                   else pd.Series(False, index=train_part.index))
        if cumulative:
            earlier &= train_part["object_id"].isin(set(rows["object_id"]))
        train_part = train_part[~earlier.to_numpy()]
        in_held_out = rows["object_id"].isin(set(held_out["object_id"]))
        if split != "all" and in_held_out.any():
            raise ValueError(f"pseudo row {rows['object_id'][in_held_out].iloc[0]!r} is a held-out row of {split}")
        real = train_part.assign(pseudo=pd.to_numeric(train_part.get("pseudo", 0), errors="coerce"))
        real["pseudo"] = real["pseudo"].fillna(0).astype(int)
        new_train = pd.concat([real, rows], ignore_index=True)[columns + [c for c in real.columns
                                                                          if c not in columns]]
        train_path, test_path = split_paths(dataroot, f"{split}_pseudo{round_}")
        write_csv(train_path, new_train)
        write_text(test_path, base_test.read_text())  # byte for byte: validation rows stay what they were
        written += [train_path, test_path]
    return written
