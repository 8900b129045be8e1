"""LightGBM stacking: a level-2 regressor on the runs' features, validated with the runs' own group folds.

`fit_oof_stack` is the honest one: every training row's features are out-of-fold, and the level-2 model is
cross-validated on the same folds without ever looking at the fold it predicts: its number of rounds is chosen
by early stopping on an inner split of the training folds (each training fold held out in turn, the mean best
iteration; LightGBM 4 callbacks), then it is refit on all training folds for that many rounds. Early stopping on
the scored fold, as the original did, picks the rounds that suit those rows and makes the CV optimistic. A final
model on all rows runs `round(mean chosen rounds x coef)` rounds (the original's `coef`) to predict test.
`fit_infold_stack` is the original's variant, kept to compare against: fold k's level-2 model learns from fold
run k's outputs on its own training rows (over-confident, because that model saw those labels) and is scored
on fold k's held-out rows.

Both return a StackFit: `oof` [n_train] level-2 predictions for every train row from the model that did not
train on it, `test[source]` [n_test] per test-feature source, `fold_scores` RMSE per fold, `cv` RMSE over all
OOF rows, `best_iterations`, `rounds` of the final model, `importance` (feature, gain, split) of that model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import lightgbm as lgb
import numpy as np
import pandas as pd

from fold0123.common.errors import UsageError
from fold0123.common.schema import LGBM_PARAMS
from fold0123.data.metrics import rmse

DEFAULT_PARAMS = {**LGBM_PARAMS, "seed": 0}  # the config schema's (fold0123.common.schema), for direct callers


def fold_rmse(y, pred, folds) -> list[float]:
    return [rmse(y[folds == f], pred[folds == f]) for f in np.unique(folds)]


@dataclass
class StackFit:
    oof: np.ndarray
    test: dict[str, np.ndarray]
    fold_scores: list[float]
    cv: float
    best_iterations: list[int]
    rounds: int
    importance: pd.DataFrame


def _params(params: dict | None) -> dict:
    return {**DEFAULT_PARAMS, **(params or {})}


def _train(params, X, y, rounds, valid=None, early_stopping_rounds=None) -> lgb.Booster:
    dtrain = lgb.Dataset(X, label=y, free_raw_data=False)
    if valid is None:
        return lgb.train(params, dtrain, num_boost_round=rounds)
    dvalid = lgb.Dataset(valid[0], label=valid[1], reference=dtrain)
    return lgb.train(params, dtrain, num_boost_round=rounds, valid_sets=[dvalid], valid_names=["valid"],
                     callbacks=[lgb.early_stopping(early_stopping_rounds, verbose=False), lgb.log_evaluation(0)])


def _importance(model: lgb.Booster) -> pd.DataFrame:
    return pd.DataFrame({"feature": model.feature_name(),
                         "gain": model.feature_importance("gain"),
                         "split": model.feature_importance("split")}).sort_values("gain", ascending=False,
                                                                                  ignore_index=True)


def _check(X: pd.DataFrame, tests: dict[str, pd.DataFrame]) -> None:
    for source, frame in tests.items():
        if list(frame.columns) != list(X.columns):
            raise ValueError(f"test features {source!r} have other columns than the train features")


def inner_rounds(params: dict, X: pd.DataFrame, y: np.ndarray, folds: np.ndarray, num_boost_round: int,
                 early_stopping_rounds: int) -> int:
    """Boosting rounds chosen on these rows alone: the mean best iteration of early stopping with each of their
    folds held out in turn (the folds are group folds, so no group helps choose its own rounds)."""
    best = []
    for fold in np.unique(folds):
        tr, va = folds != fold, folds == fold
        model = _train(params, X[tr], y[tr], num_boost_round, (X[va], y[va]), early_stopping_rounds)
        best.append(int(model.best_iteration or num_boost_round))
    return max(1, int(round(np.mean(best))))


def bagged(fit: Callable[[dict], StackFit], params: dict | None, bag: int, y, folds) -> StackFit:
    """The mean of `bag` fits (`fit(params)`) whose LightGBM seeds are params' seed, seed + 1, ...: their OOF and
    test predictions averaged, scored again; rounds and importances are the members' means."""
    params = _params(params)
    members = [fit({**params, "seed": params["seed"] + i}) for i in range(bag)]
    y = np.asarray(y, float)
    oof = np.mean([m.oof for m in members], axis=0)
    importance = (pd.concat([m.importance for m in members]).groupby("feature", as_index=False).mean()
                  .sort_values("gain", ascending=False, ignore_index=True))
    return StackFit(oof=oof, test={s: np.mean([m.test[s] for m in members], axis=0) for s in members[0].test},
                    fold_scores=fold_rmse(y, oof, folds), cv=rmse(y, oof),
                    best_iterations=[int(round(np.mean(b))) for b in zip(*(m.best_iterations for m in members))],
                    rounds=int(round(np.mean([m.rounds for m in members]))), importance=importance)


def fit_oof_stack(X: pd.DataFrame, y: np.ndarray, folds: np.ndarray, tests: dict[str, pd.DataFrame],
                  params: dict | None = None, num_boost_round: int = 10000, early_stopping_rounds: int = 100,
                  coef: float = 1.0, bag: int = 1) -> StackFit:
    """Cross-validate on the group folds (rounds from an inner split of each fold's training folds), then refit
    on every row for round(mean chosen rounds * coef). `best_iterations` holds each outer fold's chosen rounds.
    `bag` > 1: the mean of that many such stacks, seeded in turn (`bagged`)."""
    if bag > 1:
        return bagged(lambda p: fit_oof_stack(X, y, folds, tests, p, num_boost_round, early_stopping_rounds, coef),
                      params, bag, y, folds)
    _check(X, tests)
    if len(np.unique(folds)) < 3:
        raise UsageError("the OOF stack needs at least 3 folds: each fold's rounds are chosen on an inner split "
                         "of the other folds")
    params = _params(params)
    y = np.asarray(y, float)
    oof = np.zeros(len(y))
    best = []
    for fold in np.unique(folds):
        tr, va = folds != fold, folds == fold
        rounds = inner_rounds(params, X[tr], y[tr], folds[tr], num_boost_round, early_stopping_rounds)
        model = _train(params, X[tr], y[tr], rounds)
        best.append(rounds)
        oof[va] = model.predict(X[va])
    rounds = max(1, int(round(np.mean(best) * coef)))
    final = _train(params, X, y, rounds)
    test = {source: final.predict(frame) for source, frame in tests.items()}
    return StackFit(oof=oof, test=test, fold_scores=fold_rmse(y, oof, folds), cv=rmse(y, oof),
                    best_iterations=best, rounds=rounds, importance=_importance(final))


def fit_infold_stack(infold_X: list[pd.DataFrame], infold_y: list[np.ndarray], X: pd.DataFrame, y: np.ndarray,
                     folds: np.ndarray, tests: dict[str, pd.DataFrame], params: dict | None = None,
                     num_boost_round: int = 10000, early_stopping_rounds: int = 100, bag: int = 1) -> StackFit:
    """The original's variant, kept as a comparison row: fold k's model trains on fold run k's in-fold features,
    early-stops on and is scored on fold k's out-of-fold rows (both optimistic, as the original was); test = the
    mean of the fold models' predictions. `bag` as in fit_oof_stack."""
    if bag > 1:
        return bagged(lambda p: fit_infold_stack(infold_X, infold_y, X, y, folds, tests, p, num_boost_round,
                                                 early_stopping_rounds), params, bag, y, folds)
    _check(X, tests)
    params = _params(params)
    y = np.asarray(y, float)
    oof = np.zeros(len(y))
    best, test_parts, models = [], {source: [] for source in tests}, []
    for fold, (Xk, yk) in zip(np.unique(folds), zip(infold_X, infold_y)):
        va = folds == fold
        model = _train(params, Xk[X.columns], yk, num_boost_round, (X[va], y[va]), early_stopping_rounds)
        best.append(int(model.best_iteration or num_boost_round))
        oof[va] = model.predict(X[va], num_iteration=model.best_iteration)
        for source, frame in tests.items():
            test_parts[source].append(model.predict(frame, num_iteration=model.best_iteration))
        models.append(model)
    test = {source: np.mean(parts, axis=0) for source, parts in test_parts.items()}
    return StackFit(oof=oof, test=test, fold_scores=fold_rmse(y, oof, folds), cv=rmse(y, oof),
                    best_iterations=best, rounds=int(np.mean(best)), importance=_importance(models[-1]))
