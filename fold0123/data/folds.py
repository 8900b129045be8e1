"""Cross-validation folds: stratified on `target`, grouped by `art_series_id`, optionally batch-aligned.

scikit-learn's `StratifiedGroupKFold` does the splitting; this module adds what it leaves out. It checks every fold
(sklearn can give an empty fold when there are few groups), and, like the original atmaCup #11 solution, it can
move rows so that every fold's train size is a multiple of the batch size (no ragged last batch, e.g. no batch of
one for BatchNorm). The original moved single rows and so could split a series across train and validation, which
leaks it; here only whole series move, and a move is taken only if it keeps every fold non-empty.

Full alignment is often impossible: the k train sizes add up to (k-1)*n, so they can all be multiples of b only when
(k-1)*n is. The plan then aligns k-1 folds and lets one fold take the remainder; its train size mod b is then
(k-1)*n mod b whichever fold it is (arithmetic, not a choice), and the notes say which fold and what that remainder
is, with a warning when it is 1 (a last batch of one image breaks BatchNorm in training mode). Only when not even
k-1 folds can be aligned with whole-series moves does the plan keep scikit-learn's split, and it says why.
"""
from __future__ import annotations

import contextlib
import itertools
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from fold0123.common.io import atomic_path
from fold0123.data.layout import N_CLASSES, LayoutError, check_photos, read_test, read_train, split_paths


@dataclass(frozen=True)
class SeriesMove:
    series: str
    size: int
    from_fold: int
    to_fold: int


@dataclass
class FoldPlan:
    """Which fold holds each row out (`fold[i]` in 0..k-1), the series moved to get there, and what to tell the user."""
    fold: np.ndarray
    n_splits: int
    batch_size: int | None
    aligned: bool
    moves: list[SeriesMove] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def indices(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(train_idx, test_idx) per fold, as scikit-learn splitters yield them."""
        return [(np.flatnonzero(self.fold != i), np.flatnonzero(self.fold == i)) for i in range(self.n_splits)]

    def aligned_folds(self) -> list[int]:
        """Folds whose train size is a multiple of the batch size (all of them when there is no batch size). `aligned`
        says whether that is every fold; after a partial alignment it is all but one."""
        train_sizes = _train_sizes(self.fold, self.n_splits)
        if not self.batch_size or self.batch_size == 1:
            return list(range(self.n_splits))
        return [int(i) for i in np.flatnonzero(train_sizes % self.batch_size == 0)]


class StratifiedGroupKFoldBatched:
    """A scikit-learn style splitter: `StratifiedGroupKFold(shuffle=True, random_state=seed)` plus fold checks and
    whole-series moves towards train sizes that are multiples of `batch_size` (None or 1: no moves).

    After `split`, `plan_` holds the FoldPlan (moves and notes, e.g. why alignment was impossible).
    """

    def __init__(self, n_splits: int = 3, batch_size: int | None = None, seed: int = 0):
        self.n_splits = n_splits
        self.batch_size = batch_size
        self.seed = seed
        self.plan_: FoldPlan | None = None

    def get_n_splits(self, X=None, y=None, groups=None) -> int:
        return self.n_splits

    def split(self, X, y, groups):
        if X is not None and len(X) != len(y):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
        self.plan_ = plan_folds(y, groups, self.n_splits, self.batch_size, self.seed)
        yield from self.plan_.indices()


def plan_folds(y, groups, n_splits: int, batch_size: int | None = None, seed: int = 0) -> FoldPlan:
    y = np.asarray(y)
    groups = np.asarray(groups).astype(str)
    if len(y) != len(groups):
        raise ValueError(f"y has {len(y)} rows but groups has {len(groups)}")
    if n_splits < 2:
        raise ValueError(f"need at least 2 folds, got k={n_splits}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    n_groups = len(np.unique(groups))
    if n_groups < n_splits:
        raise ValueError(f"only {n_groups} series for {n_splits} folds: a fold would be empty")
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
    if not batch_size or batch_size == 1:
        return True
    train_sizes = len(fold) - np.bincount(fold, minlength=n_splits)
    return bool((train_sizes % batch_size == 0).all())


def align_to_batches(plan: FoldPlan, y: np.ndarray, groups: np.ndarray, candidates: int = 8,
                     tolerance: float = 0.005) -> FoldPlan:
    """Move whole series between held-out parts until every fold's train size is a multiple of the batch size, or,
    when the arithmetic forbids that, every fold but one.

    Train size of fold i is n - s_i (s_i its held-out size), so each aligned s_i must become n mod b. When all k
    cannot be aligned, the fold left over trains on b*m + r rows with r = (k-1)*n mod b whichever fold it is; if r is
    1 that is a last batch of one image, so two folds share the remainder instead (neither left with 1) where whole
    series allow it, and k-1 folds with a warning where they do not. Candidate target sizes are tried fewest-moved-rows
    first (on a tie the last fold takes the remainder); each is realised by exact subset sums over the giving folds'
    series, then polished by swapping a moved series for an equally large one with a better class mix. Of the first
    `candidates` feasible plans, the one moving fewest rows wins among those whose class-ratio gap is within
    `tolerance` of the best (fewer moved rows also keeps fold sizes close to scikit-learn's).
    """
    k, b, n = plan.n_splits, plan.batch_size, len(plan.fold)
    keep = f"kept scikit-learn's split: train sizes {_train_sizes(plan.fold, k).tolist()}"
    remainder = ((k - 1) * n) % b
    sizes = np.bincount(plan.fold, minlength=k)
    series = _SeriesTable.build(y, groups)
    start = series.fold_of(plan.fold)
    if remainder == 0:
        searches = [[(target, ()) for target in _target_sizes(sizes, n, b)]]
    else:
        searches = [_partial_target_sizes(sizes, n, b, share=False)]
        if remainder == 1:
            searches.insert(0, _partial_target_sizes(sizes, n, b, share=True))
    for targets in searches:
        found = _best_realisation(series, start, targets, k, candidates, tolerance)
        if found is not None:
            break
    else:
        reach = max(_search_steps(k if remainder == 0 else k - 1))
        if remainder == 0:
            goal = "every train size"
        else:
            goal = (f"even {k - 1} of the {k} train sizes (all {k} cannot be: they add up to (k-1)*n = {(k - 1) * n}, "
                    f"not a multiple of {b})")
        reason = (f"batch alignment impossible: no move of whole series makes {goal} a multiple of {b} within "
                  f"{reach} batch(es) of scikit-learn's fold sizes without emptying a fold; {keep}")
        return FoldPlan(plan.fold, k, b, aligned=False, notes=plan.notes + [reason])
    series_fold, unaligned = found
    moves = [SeriesMove(str(series.ids[s]), int(series.size[s]), int(start[s]), int(series_fold[s]))
             for s in np.flatnonzero(series_fold != start)]
    moved = sum(move.size for move in moves)
    rows = "row" if moved == 1 else "rows"
    how = (f"moved {len(moves)} whole series ({moved} {rows}) between folds" if moves
           else "scikit-learn's split needed no moves")
    gap = f"held-out class ratio gap {ratio_deviation(plan.fold, y, k):.3f} -> {series.deviation(series_fold, k):.3f}"
    fold = series_fold[series.of_row]
    if not unaligned:
        note = f"batch alignment: {how}; {gap}"
        return FoldPlan(fold, k, b, aligned=True, moves=moves, notes=plan.notes + [note])
    train = _train_sizes(fold, k)
    aligned = [i for i in range(k) if i not in unaligned]
    total = f"the {k} train sizes add up to (k-1)*n = {(k - 1) * n} = {(k - 1) * n // b}*{b} + {remainder}"
    left = ", ".join(f"fold {u}: {train[u]} = {train[u] // b}*{b} + {train[u] % b}" for u in unaligned)
    head = (f"batch alignment: folds {', '.join(map(str, aligned))} aligned (train sizes multiples of {b}); "
            if aligned else "batch alignment: no fold aligned; ")
    if len(unaligned) == 1:
        notes = [f"{head}fold {unaligned[0]} NOT aligned, it takes the remainder: {total}, so one fold's train size "
                 f"must leave {remainder} over ({left}); {how}; {gap}"]
        if remainder == 1:
            notes.append(f"warning: fold {unaligned[0]}'s last training batch holds 1 image, which breaks BatchNorm "
                         f"in training mode; no whole-series split of the remainder over two folds avoids it, so "
                         f"drop the last batch or pick another batch size")
    else:
        names = " and ".join(map(str, unaligned))
        notes = [f"{head}folds {names} NOT aligned, they share the remainder: {total}, and one fold taking it would "
                 f"end on a training batch of 1 image (breaks BatchNorm), so two folds leave more than 1 over "
                 f"({left}); {how}; {gap}"]
    return FoldPlan(fold, k, b, aligned=False, moves=moves, notes=plan.notes + notes)


def _best_realisation(series: "_SeriesTable", start: np.ndarray, targets: list[tuple[np.ndarray, tuple[int, ...]]],
                      k: int, candidates: int, tolerance: float) -> tuple[np.ndarray, tuple[int, ...]] | None:
    """(series-to-fold assignment, unaligned folds) of the best of the first `candidates` realisable targets."""
    feasible = []
    for target, unaligned in targets:
        series_fold = _realise(series, start, target)
        if series_fold is not None:
            series_fold = _polish(series, start, series_fold)
            moved = int(series.size[series_fold != start].sum())
            feasible.append((series.deviation(series_fold, k), moved, series_fold, unaligned))
        if len(feasible) == candidates:
            break
    if not feasible:
        return None
    best = min(item[0] for item in feasible)
    _, _, series_fold, unaligned = min((item for item in feasible if item[0] <= best + tolerance),
                                       key=lambda item: item[1])
    return series_fold, unaligned


@dataclass
class _SeriesTable:
    """Per-series sizes and class counts (a series may mix classes), so moves can be scored without touching rows."""
    ids: np.ndarray
    of_row: np.ndarray
    size: np.ndarray
    counts: np.ndarray  # [series, class]
    overall: np.ndarray  # [class] overall ratio

    @classmethod
    def build(cls, y: np.ndarray, groups: np.ndarray) -> "_SeriesTable":
        _, class_of_row = np.unique(y, return_inverse=True)
        n_classes = int(class_of_row.max()) + 1
        ids, of_row = np.unique(groups, return_inverse=True)
        counts = np.zeros((len(ids), n_classes))
        np.add.at(counts, (of_row, class_of_row), 1)
        return cls(ids, of_row, np.bincount(of_row), counts, np.bincount(class_of_row) / len(y))

    def fold_of(self, fold: np.ndarray) -> np.ndarray:
        series_fold = np.zeros(len(self.ids), dtype=int)
        series_fold[self.of_row] = fold
        return series_fold

    def fold_counts(self, series_fold: np.ndarray, k: int) -> np.ndarray:
        return np.stack([self.counts[series_fold == f].sum(axis=0) for f in range(k)])

    def deviation(self, series_fold: np.ndarray, k: int) -> float:
        counts = self.fold_counts(series_fold, k)
        return float(np.abs(counts / counts.sum(axis=1, keepdims=True) - self.overall).max())


def _train_sizes(fold: np.ndarray, k: int) -> np.ndarray:
    return len(fold) - np.bincount(fold, minlength=k)


def _target_sizes(sizes: np.ndarray, n: int, b: int, limit: int = 100) -> list[np.ndarray]:
    """Held-out size vectors with s_i = n (mod b), 0 < s_i < n and the same total, fewest moved rows first."""
    steps = _search_steps(len(sizes))
    options = []
    for s in sizes:
        r = (n - s) % b
        options.append([r + j * b for j in steps if 0 < s + r + j * b < n])
    found = []
    for deltas in itertools.product(*options):
        if sum(deltas) == 0:
            found.append((sum(abs(d) for d in deltas), deltas))
    found.sort()
    return [sizes + np.array(deltas) for _, deltas in found[:limit]]


def _partial_target_sizes(sizes: np.ndarray, n: int, b: int, share: bool,
                          limit: int = 100) -> list[tuple[np.ndarray, tuple[int, ...]]]:
    """(held-out sizes, unaligned folds): every other fold at s_i = n (mod b), the last unaligned fold taking what is
    left (0 < s < n). With `share`, two folds are unaligned, each left with a train size of neither 0 nor 1 (mod b),
    the first anywhere within a batch of its size. Fewest moved rows first; on a tie later unaligned folds first, so
    the last fold takes the remainder when nothing else decides."""
    k = len(sizes)
    found = []
    for rest_fold in range(k - 1, -1, -1):
        shared = [i for i in range(k - 1, -1, -1) if i != rest_fold] if share else [None]
        for free in shared:
            steps = _search_steps(k - 1 - (free is not None))
            order, options = [], []
            for i, s in enumerate(sizes):
                if i == rest_fold:
                    continue
                order.append(i)
                if i == free:  # the smallest moves only: larger ones lose on moved rows anyway
                    options.append(sorted((d for d in range(-b, b + 1) if 0 < s + d < n and (n - s - d) % b > 1),
                                          key=lambda d: (abs(d), d))[:12])
                else:
                    r = (n - s) % b
                    options.append([r + j * b for j in steps if 0 < s + r + j * b < n])
            unaligned = (rest_fold,) if free is None else tuple(sorted((free, rest_fold)))
            rest_size = int(sizes[rest_fold])
            for deltas in itertools.product(*options):
                rest = -sum(deltas)
                size = rest_size + rest
                if 0 < size < n and (not share or (n - size) % b > 1):
                    cost = sum(map(abs, deltas)) + abs(rest)
                    found.append((cost, [-u for u in unaligned], order, deltas, rest_fold, rest, unaligned))
    found.sort(key=lambda item: item[:2])
    targets = []
    for _, _, order, deltas, rest_fold, rest, unaligned in found[:limit]:
        full = np.zeros(k, dtype=int)
        full[order] = deltas
        full[rest_fold] = rest
        targets.append((sizes + full, unaligned))
    return targets


def _search_steps(k: int) -> tuple[int, ...]:
    """How many batches a fold's held-out size may move: the candidate count is len(steps)**k."""
    return (-2, -1, 0, 1, 2) if k <= 4 else (-1, 0, 1) if k <= 6 else (-1, 0)


def _realise(series: _SeriesTable, start: np.ndarray, target: np.ndarray) -> np.ndarray | None:
    """Series-to-fold assignment with fold sizes `target`, moving series only out of folds that must shrink;
    None when exact subset sums cannot hit the target."""
    k = len(target)
    series_fold = start.copy()
    delta = target - np.bincount(start, weights=series.size, minlength=k).astype(int)
    givers = [[i, -int(d)] for i, d in enumerate(delta) if d < 0]
    takers = [[i, int(d)] for i, d in enumerate(delta) if d > 0]
    gi = ti = 0
    while gi < len(givers) and ti < len(takers):
        giver, taker = givers[gi], takers[ti]
        amount = min(giver[1], taker[1])
        counts = series.fold_counts(series_fold, k)
        candidates = np.flatnonzero(series_fold == giver[0])
        chosen = _choose_series(series.size[candidates], series.counts[candidates], amount,
                                counts[giver[0]], target[giver[0]] * series.overall,
                                counts[taker[0]], target[taker[0]] * series.overall)
        if chosen is None:
            return None
        series_fold[candidates[chosen]] = taker[0]
        giver[1] -= amount
        taker[1] -= amount
        gi += giver[1] == 0
        ti += taker[1] == 0
    return series_fold


def _polish(series: _SeriesTable, start: np.ndarray, series_fold: np.ndarray, rounds: int = 50) -> np.ndarray:
    """Hill-climb on the summed class-ratio gap: swap a moved series back for an unmoved one of the same size from
    the same fold (sizes, hence alignment, stay as they are; the number of moved series does too)."""
    k = int(max(start.max(), series_fold.max())) + 1
    series_fold = series_fold.copy()
    sizes = np.bincount(series_fold, weights=series.size, minlength=k)
    expected = sizes[:, None] * series.overall  # class counts each fold's size asks for
    for _ in range(rounds):
        counts = series.fold_counts(series_fold, k)
        best = (0.0, None, None)
        for m in np.flatnonzero(series_fold != start):
            a, c = start[m], series_fold[m]
            pool = np.flatnonzero((series_fold == a) & (start == a) & (series.size == series.size[m]))
            if not len(pool):
                continue
            change = series.counts[m] - series.counts[pool]  # fold a gains m back and loses u; fold c the opposite
            new_a = np.abs(counts[a] + change - expected[a]).sum(axis=1) / sizes[a]
            new_c = np.abs(counts[c] - change - expected[c]).sum(axis=1) / sizes[c]
            old = np.abs(counts[a] - expected[a]).sum() / sizes[a] + np.abs(counts[c] - expected[c]).sum() / sizes[c]
            gain = old - (new_a + new_c)
            j = int(np.argmax(gain))
            if gain[j] > best[0] + 1e-12:
                best = (float(gain[j]), m, pool[j])
        if best[1] is None:
            break
        _, m, u = best
        series_fold[u], series_fold[m] = series_fold[m], start[m]
    return series_fold


def _choose_series(sizes: np.ndarray, counts: np.ndarray, amount: int, giver: np.ndarray, giver_expected: np.ndarray,
                   taker: np.ndarray, taker_expected: np.ndarray) -> np.ndarray | None:
    """Indices of series whose sizes sum to exactly `amount`, picked greedily to bring the giver's and the taker's
    class counts closest to what their target sizes expect; a pick is allowed only while the rest of the amount
    stays reachable (subset sums as integer bitsets), so the greedy never paints itself into a corner."""
    available = np.ones(len(sizes), dtype=bool)
    giver, taker = giver.astype(float).copy(), taker.astype(float).copy()
    chosen, rest = [], amount
    while rest:
        reach_without = {}
        for size in np.unique(sizes[available & (sizes <= rest)]):
            others = sizes[available].tolist()
            others.remove(int(size))
            reach_without[int(size)] = _reachable(others, rest - int(size))
        ok = np.flatnonzero(available & np.isin(sizes, [s for s, reach in reach_without.items() if reach]))
        if not len(ok):
            return None
        gap = (np.abs(giver - counts[ok] - giver_expected).sum(axis=1) / giver_expected.sum()
               + np.abs(taker + counts[ok] - taker_expected).sum(axis=1) / taker_expected.sum())
        pick = ok[np.lexsort((-sizes[ok], gap))[0]]  # smallest gap; on a tie the larger series (fewer moves)
        chosen.append(pick)
        available[pick] = False
        giver -= counts[pick]
        taker += counts[pick]
        rest -= int(sizes[pick])
    return np.array(sorted(chosen), dtype=int)


def _reachable(sizes: list[int], amount: int) -> bool:
    """Whether some subset of `sizes` sums to exactly `amount` (bit i of `sums` set = sum i reachable)."""
    if amount == 0:
        return True
    sums, mask = 1, (1 << (amount + 1)) - 1
    for size in sizes:
        if size <= amount:
            sums = (sums | (sums << size)) & mask
            if sums >> amount & 1:
                return True
    return False


def class_ratios(y: np.ndarray, classes=range(N_CLASSES)) -> np.ndarray:
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


def _ratios(ratios: np.ndarray) -> str:
    return " ".join(f"{c}:{r:.3f}" for c, r in enumerate(ratios))


def read_validated(dataroot: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """train.csv and test.csv, checked: columns, ids, labels, series, and every photo decodes."""
    dataroot = Path(dataroot)
    train = read_train(dataroot)
    test = read_test(dataroot, train)
    empty = np.flatnonzero(train["art_series_id"].str.strip().to_numpy() == "")
    if len(empty):
        raise LayoutError(f"{dataroot / 'train.csv'}: row {int(empty[0]) + 2}: empty art_series_id")
    check_photos(dataroot, train["object_id"], "train.csv", decode=True)
    check_photos(dataroot, test["object_id"], "test.csv", decode=True)
    return train, test


def write_folds(dataroot: str | Path, k: int = 3, batch_size: int | None = 64, seed: int = 0) -> FoldsReport:
    """Write `{k}fold{i}_train.csv`/`{k}fold{i}_test.csv` (rows of train.csv, all columns), `all_train.csv` and
    `all_test.csv` (test.csv's ids). All files are validated and computed first and renamed into place together,
    so bad input leaves nothing behind."""
    dataroot = Path(dataroot)
    train, test = read_validated(dataroot)
    raw_train = pd.read_csv(dataroot / "train.csv", keep_default_na=False, dtype=str)  # rows exactly as given
    y = train["target"].astype(int).to_numpy()
    groups = train["art_series_id"].to_numpy()
    plan = plan_folds(y, groups, k, batch_size, seed)
    outputs: dict[Path, pd.DataFrame] = {}
    for i, (train_idx, test_idx) in enumerate(plan.indices()):
        train_path, test_path = split_paths(dataroot, f"{k}fold{i}")
        outputs[train_path] = raw_train.iloc[train_idx]
        outputs[test_path] = raw_train.iloc[test_idx]
    all_train, all_test = split_paths(dataroot, "all")
    outputs[all_train] = raw_train
    outputs[all_test] = test[["object_id"]]
    _write_all(outputs)
    overall = class_ratios(y)
    folds = [FoldSummary(i, len(tr), len(te), class_ratios(y[tr]), class_ratios(y[te]))
             for i, (tr, te) in enumerate(plan.indices())]
    return FoldsReport(dataroot, k, batch_size, seed, len(train), len(test), len(np.unique(groups)), overall, folds,
                       plan, list(outputs))


def _write_all(outputs: dict[Path, pd.DataFrame]) -> None:
    """Write every file to its temporary name first; rename them only once all were written."""
    with contextlib.ExitStack() as stack:
        for path, frame in outputs.items():
            tmp = stack.enter_context(atomic_path(path))
            frame.to_csv(tmp, index=False)
