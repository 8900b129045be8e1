"""Cross-validation folds: stratified on `target`, grouped by the competition's group column (atmaCup:
`art_series_id`; none: every row is its own group), optionally batch-aligned.

scikit-learn's `StratifiedGroupKFold` does the splitting; this module adds what it leaves out. It checks every fold
(sklearn can give an empty fold when there are few groups), and, like the original atmaCup #11 solution, it can move
whole series so that the folds' train sizes are multiples of the batch size (data/fold_alignment.py says how and why
only whole series). The k train sizes add up to (k-1)*n, so all k can be aligned only when (k-1)*n is a multiple of
b; otherwise k-1 are, and the notes say which fold takes the remainder ((k-1)*n mod b whichever fold it is), with a
warning when that is 1 (a last batch of one image, which the trainer drops). When the greedy finds no alignment, the
plan keeps scikit-learn's split and says why. Then come the files SGKFold.py writes.
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from fold0123.common.dataroot import TEST, folds_fingerprint_path
from fold0123.common.errors import UsageError
from fold0123.common.fingerprint import folds_fingerprint, write_fingerprint
from fold0123.common.io import atomic_path
from fold0123.data.fold_alignment import SeriesMove, align_folds
from fold0123.data.competition import Competition, read_competition
from fold0123.data.layout import check_photos, read_test, read_train, split_paths


@dataclass
class FoldPlan:
    """Which fold holds each row out (`fold[i]` in 0..k-1), the series moved to get there, and what to tell the user.
    `indices()` is what a scikit-learn splitter yields, so it serves as any `cv=` argument."""
    fold: np.ndarray
    n_splits: int
    batch_size: int | None
    aligned: bool
    moves: list[SeriesMove] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def indices(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(train_idx, test_idx) per fold, as scikit-learn splitters yield them."""
        return [(np.flatnonzero(self.fold != i), np.flatnonzero(self.fold == i)) for i in range(self.n_splits)]


def plan_folds(y, groups, n_splits: int, batch_size: int | None = None, seed: int = 0) -> FoldPlan:
    y = np.asarray(y)
    groups = np.asarray(groups).astype(str)
    if len(y) != len(groups):
        raise ValueError(f"y has {len(y)} rows but groups has {len(groups)}")
    if n_splits < 2:
        raise UsageError(f"need at least 2 folds, got k={n_splits}")
    if batch_size is not None and batch_size < 1:
        raise UsageError(f"batch size must be positive, got {batch_size}")
    n_groups = len(np.unique(groups))
    if n_groups < n_splits:
        raise UsageError(f"only {n_groups} series for {n_splits} folds: a fold would be empty")
    fold, notes = _sklearn_folds(y, groups, n_splits, seed)
    check_folds(fold, groups, n_splits)
    plan = FoldPlan(fold, n_splits, batch_size, aligned=_is_aligned(fold, n_splits, batch_size), notes=notes)
    if not plan.aligned:
        plan = align_to_batches(plan, y, groups)
        check_folds(plan.fold, groups, n_splits)
    return plan


def _sklearn_folds(y: np.ndarray, groups: np.ndarray, n_splits: int, seed: int) -> tuple[np.ndarray, list[str]]:
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    fold = np.full(len(y), -1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i, (_, test_idx) in enumerate(splitter.split(np.zeros(len(y)), y, groups)):
            if (fold[test_idx] != -1).any():
                raise ValueError(f"StratifiedGroupKFold put row {int(test_idx[fold[test_idx] != -1][0])} in two folds")
            fold[test_idx] = i
    notes = [f"scikit-learn: {w.message}" for w in caught if issubclass(w.category, UserWarning)]
    return fold, notes


def check_folds(fold: np.ndarray, groups: np.ndarray, n_splits: int) -> None:
    """Every row held out exactly once (a fold id per row), no fold empty, no series in two folds."""
    if (fold < 0).any() or (fold >= n_splits).any():
        raise ValueError(f"row {int(np.flatnonzero((fold < 0) | (fold >= n_splits))[0])} is in no fold")
    sizes = np.bincount(fold, minlength=n_splits)
    if (sizes == 0).any():
        raise ValueError(f"fold {int(np.flatnonzero(sizes == 0)[0])} holds out no rows")
    if (sizes == len(fold)).any():
        raise ValueError(f"fold {int(np.flatnonzero(sizes == len(fold))[0])} has no train rows")
    per_series = pd.Series(fold).groupby(groups).nunique()
    split = per_series[per_series > 1]
    if len(split):
        raise ValueError(f"series {split.index[0]!r} straddles folds")


def _is_aligned(fold: np.ndarray, n_splits: int, batch_size: int | None) -> bool:
    return not batch_size or bool((_train_sizes(fold, n_splits) % batch_size == 0).all())


def align_to_batches(plan: FoldPlan, y: np.ndarray, groups: np.ndarray) -> FoldPlan:
    """`plan` with whole series moved so that k-1 train sizes (all k when (k-1)*n allows it) are multiples of the
    batch size (data/fold_alignment.py), and notes that say which fold takes the remainder; or `plan` unchanged with
    a note saying why, when the greedy gets stuck."""
    k, b, n = plan.n_splits, plan.batch_size, len(plan.fold)
    remainder = ((k - 1) * n) % b
    found = align_folds(plan.fold, y, groups, k, b)
    if found is None:
        goal = "every train size" if remainder == 0 else (
            f"even {k - 1} of the {k} train sizes (all {k} cannot be: they add up to (k-1)*n = {(k - 1) * n}, "
            f"not a multiple of {b})")
        reason = (f"batch alignment failed: the greedy over whole series (data/fold_alignment.py) found no way to make "
                  f"{goal} a multiple of {b}; kept scikit-learn's split: train sizes "
                  f"{_train_sizes(plan.fold, k).tolist()}")
        return FoldPlan(plan.fold, k, b, aligned=False, notes=plan.notes + [reason])
    moved = sum(move.size for move in found.moves)
    how = (f"moved {len(found.moves)} whole series ({moved} row{'s' if moved != 1 else ''}) between folds"
           if found.moves else "scikit-learn's split needed no moves")
    gap = f"held-out class ratio gap {ratio_deviation(plan.fold, y, k):.3f} -> {ratio_deviation(found.fold, y, k):.3f}"
    if remainder == 0:
        return FoldPlan(found.fold, k, b, aligned=True, moves=found.moves,
                        notes=plan.notes + [f"batch alignment: {how}; {gap}"])
    r, train = found.remainder_fold, _train_sizes(found.fold, k)
    aligned = ", ".join(str(i) for i in range(k) if i != r)
    notes = [f"batch alignment: folds {aligned} aligned (train sizes multiples of {b}); fold {r} NOT aligned, it "
             f"takes the remainder: the {k} train sizes add up to (k-1)*n = {(k - 1) * n} = {(k - 1) * n // b}*{b} + "
             f"{remainder}, so one fold's train size must leave {remainder} over (fold {r}: {train[r]} = "
             f"{train[r] // b}*{b} + {remainder}); {how}; {gap}"]
    if remainder == 1:
        notes.append(f"warning: fold {r}'s last training batch holds 1 image, which BatchNorm cannot train on; the "
                     f"trainer drops it (one image unused per epoch); pick another batch size to avoid it")
    return FoldPlan(found.fold, k, b, aligned=False, moves=found.moves, notes=plan.notes + notes)


def _train_sizes(fold: np.ndarray, k: int) -> np.ndarray:
    return len(fold) - np.bincount(fold, minlength=k)


def class_ratios(y: np.ndarray, classes) -> np.ndarray:
    y = np.asarray(y)
    return np.array([(y == c).mean() if len(y) else 0.0 for c in classes])


def ratio_deviation(fold: np.ndarray, y, n_splits: int) -> float:
    """Largest gap between a fold's held-out class ratio and the overall ratio: the stratification quality."""
    y = np.asarray(y)
    classes = np.unique(y)
    overall = class_ratios(y, classes)
    return float(max(np.abs(class_ratios(y[fold == i], classes) - overall).max() for i in range(n_splits)))


# ---------------------------------------------------------------------------------------------------- the files


@dataclass
class FoldSummary:
    index: int
    n_train: int
    n_test: int
    train_ratios: np.ndarray
    test_ratios: np.ndarray


@dataclass
class FoldsReport:
    dataroot: Path
    k: int
    batch_size: int | None
    seed: int
    n_train: int
    n_test: int
    n_series: int
    overall: np.ndarray
    folds: list[FoldSummary]
    plan: FoldPlan
    written: list[Path]

    def summary(self) -> str:
        b = self.batch_size
        lines = [f"{self.dataroot}: {self.n_train} train rows in {self.n_series} series, {self.n_test} test rows; "
                 f"k={self.k}, batch size {b}, seed {self.seed}",
                 f"overall class ratios        {_ratios(self.overall)}"]
        for f in self.folds:
            align = "" if not b else (f", train % {b} = {f.n_train % b:<3d}"
                                      + ("aligned" if f.n_train % b == 0 else "NOT aligned (see note)"))
            gap = np.abs(f.test_ratios - self.overall).max()
            lines.append(f"fold {f.index}: train {f.n_train:5d}  held out {f.n_test:5d}{align}")
            lines.append(f"  held-out class ratios     {_ratios(f.test_ratios)}  (max gap {gap:.3f})")
            lines.append(f"  train class ratios        {_ratios(f.train_ratios)}")
        lines += [f"note: {note}" for note in self.plan.notes]
        lines += [f"wrote {path}" for path in self.written]
        return "\n".join(lines)


def _ratios(ratios: np.ndarray, shown: int = 10) -> str:
    """The first `shown` classes' shares (a 100-class competition would print a screen per fold)."""
    more = f" ... ({len(ratios)} classes)" if len(ratios) > shown else ""
    return " ".join(f"{c}:{r:.3f}" for c, r in enumerate(ratios[:shown])) + more


STRATA_BINS = 10  # a regression target is stratified on its deciles


def strata(target: np.ndarray, competition: Competition) -> np.ndarray:
    """What the folds balance: the class, or a regression target's decile (ties share a bin)."""
    if competition.has_classes:
        return np.asarray(target).astype(int)
    edges = np.unique(np.quantile(target, np.linspace(0, 1, STRATA_BINS + 1)[1:-1]))
    return np.searchsorted(edges, target, side="right")


def groups_of(train: pd.DataFrame, competition: Competition) -> np.ndarray:
    """The rows' groups (kept whole by the folds); without a group column each row is its own."""
    column = competition.group_column
    return (train[column] if column else train["object_id"]).astype(str).to_numpy()


def read_validated(dataroot: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """train.csv and the test sets (test.csv, any test_b.csv), checked: columns, ids, labels, groups, and every
    photo decodes."""
    dataroot = Path(dataroot)
    train = read_train(dataroot)
    test = read_test(dataroot, train)
    check_photos(dataroot, train["object_id"], "train.csv", decode=True)
    for name, rows in test.groupby("test_set", sort=False):
        check_photos(dataroot, rows["object_id"], f"{name}.csv", decode=True)
    return train, test


def write_folds(dataroot: str | Path, k: int = 3, batch_size: int | None = 64, seed: int = 0) -> FoldsReport:
    """Write `{k}fold{i}_train.csv`/`{k}fold{i}_test.csv` (rows of train.csv, all columns), `all_train.csv` and
    `all_test.csv` (test.csv's ids). All files are validated and computed first and renamed into place together,
    so bad input leaves nothing behind."""
    dataroot = Path(dataroot)
    train, test = read_validated(dataroot)
    raw_train = pd.read_csv(dataroot / "train.csv", keep_default_na=False, dtype=str)  # rows exactly as given
    competition = read_competition(dataroot)
    y = strata(train["target"].to_numpy(), competition)
    groups = groups_of(train, competition)
    plan = plan_folds(y, groups, k, batch_size, seed)
    outputs: dict[Path, pd.DataFrame] = {}
    for i, (train_idx, test_idx) in enumerate(plan.indices()):
        train_path, test_path = split_paths(dataroot, f"{k}fold{i}")
        outputs[train_path] = raw_train.iloc[train_idx]
        outputs[test_path] = raw_train.iloc[test_idx]
    all_train, all_test = split_paths(dataroot, "all")
    outputs[all_train] = raw_train
    # test.csv's ids alone: a later test set (test_b.csv) leaves the `all` split, and the runs on it, as they were
    outputs[all_test] = test.loc[test["test_set"] == TEST, ["object_id"]]
    _write_all(outputs)
    write_fingerprint(folds_fingerprint_path(dataroot, k), folds_fingerprint(dataroot, k, batch_size, seed))
    classes = range(int(y.max()) + 1)
    overall = class_ratios(y, classes)
    folds = [FoldSummary(i, len(tr), len(te), class_ratios(y[tr], classes), class_ratios(y[te], classes))
             for i, (tr, te) in enumerate(plan.indices())]
    return FoldsReport(dataroot, k, batch_size, seed, len(train), len(test), len(np.unique(groups)), overall, folds,
                       plan, list(outputs))


def _write_all(outputs: dict[Path, pd.DataFrame]) -> None:
    """Write every file to its temporary name first; rename them only once all were written."""
    with contextlib.ExitStack() as stack:
        for path, frame in outputs.items():
            tmp = stack.enter_context(atomic_path(path))
            frame.to_csv(tmp, index=False)
