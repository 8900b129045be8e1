"""Label cleaning (`stack.py clean`): the ACCV 2022 winner trained on a cleaned `train.txt`, not the raw web-crawled
labels. cleanlab's `find_label_issues` reads a classification run's out-of-fold class probabilities (each train
row predicted by the fold model that did not train on it: the view mean of `eval/*_oof.npz`) beside the given
labels, and flags the rows whose label the probabilities most contradict.

The flagged rows leave the training parts only. For every split s of the K folds (and `all`) it writes, next to
the folds in the dataroot:
  {s}{suffix}_train.csv   s's train part without the flagged rows
  {s}{suffix}_test.csv    s's held-out part, byte for byte (a fold is still scored on every one of its rows, with
                          the labels as given: cleaning may not flatter the CV)
and `{out_dir}/label_issues.csv`: object_id, given label, suggested label (the probabilities' argmax), the
probability of the given label (cleanlab's self-confidence, the rank: lowest first). Runs then train with
`--split 3fold0_clean` and stack with `split_suffix: _clean`, as a pseudo-label round does.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fold0123.common.errors import UsageError
from fold0123.common.io import write_csv, write_text
from fold0123.common.schema import StackConfig
from fold0123.data.competition import read_competition
from fold0123.data.layout import read_csv, read_split, split_names, split_paths
from fold0123.stacking.features import mean_sources

ISSUE_COLUMNS = ["object_id", "given", "suggested", "given_probability"]


@dataclass
class CleanResult:
    issues: pd.DataFrame  # ISSUE_COLUMNS, lowest given_probability first
    table: Path
    written: list[Path]
    n_train: int

    def summary(self) -> str:
        share = len(self.issues) / max(self.n_train, 1)
        return (f"label issues: {len(self.issues)} of {self.n_train} train rows ({share:.1%}) -> {self.table}\n"
                f"wrote {len(self.written)} split files (train parts without them; held-out parts unchanged)")


def label_issues(object_ids, labels: np.ndarray, probs: np.ndarray, filter_by: str = "prune_by_noise_rate"
                 ) -> pd.DataFrame:
    """The rows cleanlab flags, ranked by self-confidence (the probability of the given label, lowest first)."""
    from cleanlab.filter import find_label_issues

    labels = np.asarray(labels).astype(int)
    probs = np.asarray(probs, dtype=float)
    if probs.ndim != 2 or probs.shape[0] != len(labels):
        raise UsageError(f"class probabilities of shape {list(probs.shape)} for {len(labels)} labels")
    if labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise UsageError(f"labels 0..{labels.max()} but {probs.shape[1]} class probabilities per row")
    probs = probs / probs.sum(axis=1, keepdims=True)  # views' means of softmaxes: sum to 1 up to rounding
    flagged = find_label_issues(labels, probs, filter_by=filter_by, return_indices_ranked_by="self_confidence")
    ids = np.asarray(object_ids)
    return pd.DataFrame({"object_id": ids[flagged], "given": labels[flagged],
                         "suggested": probs[flagged].argmax(axis=1),
                         "given_probability": probs[flagged, labels[flagged]]}, columns=ISSUE_COLUMNS)


def write_clean_splits(dataroot: str | Path, k: int, dropped, suffix: str = "_clean") -> list[Path]:
    """Every split's train part without the `dropped` object ids, its held-out part byte for byte."""
    if not suffix or "/" in suffix:
        raise UsageError(f"clean.suffix {suffix!r}: a non-empty split-name suffix such as _clean")
    dropped = set(dropped)
    competition = read_competition(dataroot)
    written = []
    for split in split_names(k):
        read_split(dataroot, split)  # validates both parts first: one clear error
        train_path, test_path = split_paths(dataroot, split)
        train_part = read_csv(train_path, competition.train_columns, competition.text_columns)
        out_train, out_test = split_paths(dataroot, f"{split}{suffix}")
        write_csv(out_train, train_part[~train_part["object_id"].isin(dropped)])
        write_text(out_test, test_path.read_text())
        written += [out_train, out_test]
    return written


def run_clean(cfg: StackConfig) -> CleanResult:
    """The flagged rows of `cfg.clean.exp` at its epoch, the clean split files and the table."""
    exp = cfg.clean.exp
    if exp not in cfg.runs:
        raise UsageError(f"clean.exp {exp!r}: not one of the stack's runs ({', '.join(cfg.runs)})")
    competition = read_competition(cfg.dataroot)
    if not competition.has_classes:
        raise UsageError(f"{cfg.dataroot}: a {competition.kind} competition has no class labels to clean")
    # out of fold only: the fold runs' held-out rows, whatever else they evaluated
    sources = mean_sources(cfg.dataroot, cfg.checkpoints_dir, {exp: cfg.runs[exp]}, k=cfg.folds,
                           split_suffix=cfg.split_suffix, test_features=None, allow_unfinished=cfg.allow_unfinished)
    probs = sources.oof[exp].read(0, len(sources.train_ids))
    if probs.shape[1] != competition.n_classes:
        raise UsageError(f"clean.exp {exp!r}: outputs of width {probs.shape[1]}, not the {competition.n_classes} "
                         f"class probabilities of a classification run")
    issues = label_issues(sources.train_ids, sources.y, probs, cfg.clean.filter_by)
    written = write_clean_splits(cfg.dataroot, cfg.folds, issues["object_id"], cfg.clean.suffix)
    table = Path(cfg.out_dir) / "label_issues.csv"
    write_csv(table, issues)
    return CleanResult(issues, table, written, len(sources.y))
