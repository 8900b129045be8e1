"""The original's post-processing of the stacked target, in its order, and an honest way to tune it.

Steps (each applied to the previous one's output; `apply_steps` returns all of them, keyed by STEPS):
  stack   the level-2 prediction as it comes
  blend   ratio * stack + (1 - ratio) * the target task's own prediction (mean of its 8 views)
  onehot  where the onehot task's top class probability exceeds thr, that class
  snap    values within `width` of an integer become that integer
  clip    into the labels' range (atmaCup: 0..K-1 = [0, 3]; `bounds`, from the competition spec; None: no clip)
A step that is switched off (ratio 1, thr > 1, width 0, or its run absent) passes its input through, so the grids
below always contain "do nothing" and tuning cannot choose a step that hurts the out-of-fold score it sees.
`tune` searches the grids on OUT-OF-FOLD predictions only; the test answers are never looked at. Its own score
is still optimistic (the grid point was picked on the rows it is scored on), so `nested_tune` scores each fold
with the point picked on the other folds: that is the CV to trust, and the one that decides whether the
post-processing is kept at all.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from fold0123.common.schema import PostprocessGrid
from fold0123.data.metrics import cv_row, fold_rmse, rmse

STEPS = ("stack", "blend", "onehot", "snap", "clip")
Bounds = tuple[float, float] | None


@dataclass(frozen=True)
class PostParams:
    ratio: float = 1.0   # weight of the stack in the blend (1 = stack only)
    thr: float = 1.01    # onehot override threshold (> 1 = never)
    width: float = 0.0   # snapping half-width (0 = never)

    def as_dict(self) -> dict:
        return asdict(self)


def blend(stack: np.ndarray, target_pred: np.ndarray | None, ratio: float) -> np.ndarray:
    if target_pred is None:
        return np.asarray(stack, float).copy()
    return ratio * np.asarray(stack, float) + (1.0 - ratio) * np.asarray(target_pred, float).reshape(-1)


def onehot_override(pred: np.ndarray, probs: np.ndarray | None, thr: float) -> np.ndarray:
    """Where max_c p_c > thr, the prediction becomes argmax_c p_c (a confident classifier overrides)."""
    out = np.asarray(pred, float).copy()
    if probs is None:
        return out
    probs = np.asarray(probs, float)
    sure = probs.max(axis=1) > thr
    out[sure] = probs[sure].argmax(axis=1)
    return out


def snap(pred: np.ndarray, width: float) -> np.ndarray:
    """Values strictly within `width` of the nearest integer become that integer."""
    out = np.asarray(pred, float).copy()
    nearest = np.round(out)
    close = np.abs(out - nearest) < width
    out[close] = nearest[close]
    return out


def clip(pred: np.ndarray, bounds: Bounds) -> np.ndarray:
    pred = np.asarray(pred, float)
    return pred.copy() if bounds is None else np.clip(pred, *bounds)


def apply_steps(stack, target_pred, probs, params: PostParams, bounds: Bounds) -> dict[str, np.ndarray]:
    """Every step's output, cumulative, keyed by STEPS (the last one is the submission)."""
    out = {"stack": np.asarray(stack, float).copy()}
    out["blend"] = blend(out["stack"], target_pred, params.ratio)
    out["onehot"] = onehot_override(out["blend"], probs, params.thr)
    out["snap"] = snap(out["onehot"], params.width)
    out["clip"] = clip(out["snap"], bounds)
    return out


def tune(stack_oof, target_oof, probs_oof, y, bounds: Bounds, grids: dict | None = None
         ) -> tuple[PostParams, pd.DataFrame]:
    """Grid-search ratio x thr x width for the lowest OOF RMSE after all steps.

    Ties keep the earlier grid point; grids are sorted so that earlier means closer to "off" (ratio 1 first,
    the largest thr first, width 0 first): a step is only switched on where it strictly helps.
    Returns the chosen params and the whole grid (columns ratio, thr, width, rmse) for the report.
    """
    grids = {**PostprocessGrid().model_dump(), **(grids or {})}
    ratios = sorted(set(map(float, grids["ratio"])), reverse=True) if target_oof is not None else [1.0]
    thrs = sorted(set(map(float, grids["thr"])), reverse=True) if probs_oof is not None else [1.01]
    widths = sorted(set(map(float, grids["width"])))
    y = np.asarray(y, float)
    rows = []
    for ratio in ratios:
        blended = blend(stack_oof, target_oof, ratio)
        for thr in thrs:
            overridden = onehot_override(blended, probs_oof, thr)
            for width in widths:
                rows.append((ratio, thr, width, rmse(y, clip(snap(overridden, width), bounds))))
    table = pd.DataFrame(rows, columns=["ratio", "thr", "width", "rmse"])
    best = table.iloc[int(np.argmin(table["rmse"].to_numpy()))]
    return PostParams(ratio=float(best.ratio), thr=float(best.thr), width=float(best.width)), table


def _rows(values: np.ndarray | None, mask: np.ndarray) -> np.ndarray | None:
    return None if values is None else np.asarray(values)[mask]


def nested_tune(stack_oof, target_oof, probs_oof, y, folds, bounds: Bounds, grids: dict | None = None
                ) -> tuple[np.ndarray, list[PostParams]]:
    """Every fold post-processed with the grid point `tune` picks on the other folds only: (predictions [n],
    the point per fold). Their RMSE is an honest CV of "tune, then apply"; the fold being scored never votes."""
    stack_oof, y, folds = np.asarray(stack_oof, float), np.asarray(y, float), np.asarray(folds)
    out, chosen = np.zeros(len(y)), []
    for fold in np.unique(folds):
        rest, this = folds != fold, folds == fold
        params, _ = tune(stack_oof[rest], _rows(target_oof, rest), _rows(probs_oof, rest), y[rest], bounds, grids)
        out[this] = apply_steps(stack_oof[this], _rows(target_oof, this), _rows(probs_oof, this), params,
                                bounds)["clip"]
        chosen.append(params)
    return out, chosen


def step_table(steps: dict[str, np.ndarray], y, folds) -> pd.DataFrame:
    """RMSE per fold, mean ± std over folds and over all OOF rows, one row per step (index = step)."""
    rows = {step: cv_row(fold_rmse(np.asarray(y, float), pred, folds), rmse(y, pred)) for step, pred in steps.items()}
    return pd.DataFrame.from_dict(rows, orient="index")
