"""The metrics, once: numpy only, so the task table (torch side) and the stacking room (no torch) score with the
same functions. Which one a competition uses is its spec's business (data.competition)."""
from __future__ import annotations

import numpy as np


def rmse(y_true, y_pred) -> float:
    """Root mean squared error in float64 (atmaCup #11 scores the ordinal target as a number)."""
    error = np.asarray(y_true, np.float64) - np.asarray(y_pred, np.float64)
    return float(np.sqrt(np.mean(error ** 2)))


def fold_rmse(y, pred, folds) -> list[float]:
    """RMSE per fold, in the order of the sorted fold labels."""
    y, pred, folds = np.asarray(y), np.asarray(pred), np.asarray(folds)
    return [rmse(y[folds == f], pred[folds == f]) for f in np.unique(folds)]


def cv_row(scores, oof=float("nan")) -> dict:
    """A CV table's columns: each fold's score (fold0, fold1, ...), their mean and population std, and the score
    over all out-of-fold rows."""
    return {**{f"fold{i}": s for i, s in enumerate(scores)}, "mean": float(np.mean(scores)),
            "std": float(np.std(scores)), "oof": oof}


def expected_class(probabilities) -> np.ndarray:
    """sum_k p_k * k over the last axis: an ordinal number from class probabilities `[..., K]`."""
    probabilities = np.asarray(probabilities)
    return probabilities @ np.arange(probabilities.shape[-1])


def top_k_accuracy(y_true: np.ndarray, probabilities: np.ndarray, k: int = 5) -> float:
    """Share of rows whose true class is among the k most probable (all of them when k >= K); ties are broken by
    class index, as a stable sort gives, so a constant prediction scores what its first k classes are worth.
    (scikit-learn's `top_k_accuracy_score` breaks ties the other way, highest index first, and needs `labels`
    when a class is absent from y_true: not used here for that reason.)"""
    return top_k_hit_rate(y_true, top_k_classes(np.asarray(probabilities, np.float64), k))


def top_k_classes(probabilities: np.ndarray, k: int = 5) -> np.ndarray:
    """`[n, min(k, K)]` the k most probable classes of each row, ties to the lower class index (a stable sort); a
    copy, so that it does not keep the whole sort of a wide `[n, K]` alive."""
    return np.argsort(-probabilities, axis=1, kind="stable")[:, :k].copy()


def top_k_hit_rate(y_true: np.ndarray, top: np.ndarray) -> float:
    """Share of rows whose true class is among `top` (top_k_classes); nan for no rows."""
    if len(y_true) == 0:
        return float("nan")
    return float(np.mean((top == np.asarray(y_true).astype(int)[:, None]).any(1)))


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Unweighted mean of per-class F1 over the classes present in `y_true` or `y_pred` (scikit-learn's
    `f1_score(average="macro")`, whose convention Kaggle's scorer shares)."""
    from sklearn.metrics import f1_score
    return float(f1_score(y_true, y_pred, average="macro", zero_division=0))
