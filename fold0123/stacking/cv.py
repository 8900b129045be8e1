"""One cross-validation loop for every LightGBM of the project (the stack, its in-fold variant, the baselines and
the ensemble's pixel member), shaped like nyaggle's `cross_validate`:

    result = cross_validate(X, y, cv, {"test": X_test}, lgbm=LgbmOptions(...), seed=0, inner=each_fold(folds))

`X` [n, f] (DataFrame or array) and `y` [n]; `cv` lists the fits as (training positions, held-out positions)
into X, in the order the rows are trained on (a fit may hold out nothing: it then only predicts the test tables).
Every fit chooses its number of boosting rounds without looking at the rows it is scored on: `inner(train, held)`
names (fit, stop) position pairs, LightGBM early-stops on each (4.x callbacks), the mean best iteration is kept,
and the fit is then refit on all its training rows for that many rounds. `lgbm.bag` > 1 fits that many models
per fit, seeded `seed`, `seed + 1`, ... on the same inner split, and averages their predictions. `lgbm=None` is
the constant model: the training rows' mean target, or their class frequencies with `n_classes`.

CVResult, the output layout:
  oof              [n] ([n, K] with n_classes): each held-out row predicted by the fit that did not train on it;
                   NaN where no fit holds the row out
  test             {name: [m] / [m, K]}: with `final_coef`, one more model on every row of X for
                   round(mean fold rounds x final_coef) rounds predicts them; otherwise the mean over the fits
                   (per bag member first, unclipped)
  fold_tests       per fit, {name: its own test predictions}
  scores           `metric(y, oof)` per fit that holds rows out
  best_iterations  rounds per fit (bag mean, rounded); `rounds` of the final model (None without one)
  importance       feature, gain, split of the last model trained (bag mean when bagged)
  inner_rows       per fit, the positions early stopping looked at
  tuned            with `lgbm.tune`: per fit (then the final model), the tuned parameters' values, the inner score
                   that chose them and their rounds (stacking.tune); [] otherwise
  seconds, cached  the fits' wall-clock, and whether they were read from baselines.predict's cache instead
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable

import lightgbm as lgb
import numpy as np
import pandas as pd

from fold0123.common.errors import UsageError
from fold0123.common.schema import LgbmOptions
from fold0123.data.metrics import rmse
from fold0123.stacking.booster import train_booster

Positions = np.ndarray
Inner = Callable[[Positions, Positions], list[tuple[Positions, Positions]]]


@dataclass
class CVResult:
    oof: np.ndarray
    test: dict[str, np.ndarray]
    fold_tests: list[dict[str, np.ndarray]]
    scores: list[float]
    best_iterations: list[int]
    rounds: int | None
    importance: pd.DataFrame | None
    inner_rows: list[Positions]
    tuned: list[dict] = field(default_factory=list)
    seconds: float = 0.0    # the fits' wall-clock (baselines.predict: from its cache, when they were made)
    cached: bool = False    # read from baselines.predict's cache, not fit now


def _take(X, rows: Positions):
    return X.iloc[rows] if isinstance(X, pd.DataFrame) else X[rows]


def _importance(models: list[lgb.Booster]) -> pd.DataFrame:
    frames = [pd.DataFrame({"feature": m.feature_name(), "gain": m.feature_importance("gain"),
                            "split": m.feature_importance("split")}) for m in models]
    frame = frames[0] if len(frames) == 1 else pd.concat(frames).groupby("feature", as_index=False).mean()
    return frame.sort_values("gain", ascending=False, ignore_index=True)


class _Fit:
    """The `bag` models of one fit (or the constant), and the rounds each was given."""

    def __init__(self, X, y, rows: Positions, stops, lgbm: LgbmOptions | None, seed: int, n_classes: int,
                 clip: bool, rounds: list[int] | None = None):
        self.models, self.rounds = [], []
        self.bounds = (y[rows].min(), y[rows].max()) if clip else None
        if lgbm is None:
            self.constant = (np.bincount(y[rows], minlength=n_classes) / len(rows) if n_classes
                             else np.mean(y[rows]))
            return
        for member in range(lgbm.bag):
            params = {**lgbm.params, "seed": seed + member}
            if rounds is None:
                best = [int(train_booster(params, _take(X, fit), y[fit], lgbm.num_boost_round,
                                          (_take(X, stop), y[stop]), lgbm.early_stopping_rounds).best_iteration
                            or lgbm.num_boost_round) for fit, stop in stops]
                self.rounds.append(max(1, int(round(np.mean(best)))))
            else:
                self.rounds.append(rounds[member])
            self.models.append(train_booster(params, _take(X, rows), y[rows], self.rounds[-1]))

    def members(self, X) -> list[np.ndarray]:
        if not self.models:
            return [np.tile(self.constant, (len(X), 1)) if np.ndim(self.constant) else np.full(len(X), self.constant)]
        return [m.predict(X) for m in self.models]

    def predict(self, X) -> np.ndarray:
        pred = np.mean(self.members(X), axis=0)
        return pred if self.bounds is None else np.clip(pred, *self.bounds)


def cross_validate(X, y, cv: list[tuple[Positions, Positions]], X_test: dict | None = None, *,
                   lgbm: LgbmOptions | None, seed: int = 0, inner: Inner | None = None,
                   final_coef: float | None = None, clip: bool = False, n_classes: int = 0,
                   metric: Callable = rmse) -> CVResult:
    """See the module docstring."""
    y, X_test = np.asarray(y), X_test or {}
    for name, frame in X_test.items():
        if isinstance(X, pd.DataFrame) and list(frame.columns) != list(X.columns):
            raise ValueError(f"test features {name!r} have other columns than the train features")
    oof = np.full((len(y), n_classes) if n_classes else len(y), np.nan)
    fits, fold_tests, scores, inner_rows, tuned = [], [], [], [], []
    for train, held in cv:
        train, held = np.asarray(train, np.int64), np.asarray(held, np.int64)
        stops = inner(train, held) if lgbm is not None else []
        fit_lgbm, rounds = _tuned(X, y, stops, lgbm, seed, tuned)
        fit = _Fit(X, y, train, stops, fit_lgbm, seed, n_classes, clip, rounds)
        if len(held):
            oof[held] = fit.predict(_take(X, held))
            scores.append(metric(y[held], oof[held]))
        fold_tests.append({name: fit.predict(frame) for name, frame in X_test.items()})
        inner_rows.append(np.concatenate([stop for _, stop in stops]) if stops else np.zeros(0, np.int64))
        fits.append(fit)
    rounds = None  # without a final model: each bag member's mean over the fits, then the mean over the members
    if final_coef is None or lgbm is None:
        test = {name: np.mean([np.mean(m, axis=0) for m in zip(*(f.members(frame) for f in fits))], axis=0)
                for name, frame in X_test.items()}
    else:
        member_rounds = [max(1, int(round(np.mean([f.rounds[m] for f in fits]) * final_coef)))
                         for m in range(lgbm.bag)]
        final_lgbm = lgbm
        if lgbm.tune is not None:  # tuned on every row's folds, with its own early-stopped rounds
            every = np.arange(len(y))
            final_lgbm, final_rounds = _tuned(X, y, inner(every, np.zeros(0, np.int64)), lgbm, seed, tuned)
            member_rounds = [max(1, int(round(r * final_coef))) for r in final_rounds]
        final = _Fit(X, y, np.arange(len(y)), [], final_lgbm, seed, n_classes, clip, member_rounds)
        test = {name: final.predict(frame) for name, frame in X_test.items()}
        rounds, fits = int(round(np.mean(member_rounds))), fits + [final]
    return CVResult(oof=oof, test=test, fold_tests=fold_tests, scores=scores,
                    best_iterations=[int(round(np.mean(f.rounds))) for f in fits[:len(cv)] if f.rounds],
                    rounds=rounds, importance=_importance(fits[-1].models) if fits[-1].models else None,
                    inner_rows=inner_rows, tuned=tuned)


def _tuned(X, y, stops, lgbm: LgbmOptions | None, seed: int, record: list[dict]):
    """(the fit's LightGBM options, its rounds per bag member): as given (None: _Fit chooses the rounds), or with
    `lgbm.tune` the parameters and rounds of a study on the fit's inner splits alone (recorded in `record`)."""
    if lgbm is None or lgbm.tune is None:
        return lgbm, None
    from fold0123.stacking.tune import tune_lgbm

    best = tune_lgbm(X, y, stops, lgbm, seed, _take)
    record.append({**{k: best.params[k] for k in lgbm.tune.space}, "inner_score": best.score, "rounds": best.rounds})
    return lgbm.model_copy(update={"params": best.params, "tune": None}), [best.rounds] * lgbm.bag


# ---- inner splits: where a fit's rounds are chosen (never on the rows it is scored on)

def each_fold(folds) -> Inner:
    """Each of the training rows' own folds held out in turn (the stack: folds are group folds, so no group helps
    choose its own rounds)."""
    folds = np.asarray(folds)
    return lambda train, held: [(train[folds[train] != f], train[folds[train] == f]) for f in np.unique(folds[train])]


def scored_fold(train: Positions, held: Positions) -> list[tuple[Positions, Positions]]:
    """Early stopping on the fold being scored: the original's in-fold stack (optimistic, kept to compare)."""
    return [(train, held)]


def group_holdout(groups=None, share: float = 0.2, seed: int = 0) -> Inner:
    """Whole groups of the training rows (each row its own without `groups`), drawn in a seeded random order until
    they hold at least `share` of them, never all (the baselines of a number)."""
    def split(train, held):
        mask = holdout_mask(np.arange(len(train)) if groups is None else np.asarray(groups)[train], share, seed)
        return [(train[~mask], train[mask])]
    return split


def holdout_mask(groups, share: float = 0.2, seed: int = 0) -> np.ndarray:
    """group_holdout's boolean mask over one fit's rows."""
    groups = np.asarray(groups)
    unique = pd.unique(groups)
    if len(unique) < 2:
        raise UsageError(f"early stopping needs at least 2 groups in the training rows, got {len(unique)}")
    order = np.random.default_rng(seed).permutation(len(unique))
    sizes = pd.Series(groups).value_counts()
    chosen, rows = [], 0
    for g in unique[order][:-1]:
        if rows >= share * len(groups):
            break
        chosen.append(g)
        rows += sizes[g]
    return np.isin(groups, chosen)


def stratified_holdout(y, groups=None, seed: int = 0, n_splits: int = 5) -> Inner:
    """One fold of a `n_splits`-fold split of the training rows, stratified by class, groups kept whole (each row
    its own group without a group column): the class baselines."""
    from sklearn.model_selection import StratifiedGroupKFold

    def split(train, held):
        own = np.arange(len(train)) if groups is None else np.asarray(groups)[train]
        if len(np.unique(own)) < n_splits:
            raise UsageError(f"early stopping needs at least {n_splits} groups in a fit's training rows, got "
                             f"{len(np.unique(own))}")
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "least populated class has fewer members than n_splits"
            _, stop = next(splitter.split(np.zeros(len(train)), np.asarray(y)[train], own))
        mask = np.zeros(len(train), bool)
        mask[stop] = True
        return [(train[~mask], train[mask])]
    return split


def fold_cv(folds) -> list[tuple[Positions, Positions]]:
    """`cv` of a fold label per row: each fold held out once, trained on the others (sorted fold labels)."""
    folds = np.asarray(folds)
    return [(np.flatnonzero(folds != f), np.flatnonzero(folds == f)) for f in np.unique(folds)]
