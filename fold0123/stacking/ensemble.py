"""Weighted probability ensembling and label re-distribution (the ACCV 2022 winners' tools, bugs fixed).

Weights: w_i = (score_i / min_j score_j) ** factor for a higher-is-better metric (their `--scale --factor 25`),
normalised by the SUM of the weights (they divided by the count, so their mixture was not a probability). For a
lower-is-better metric (RMSE, log loss) the ratio is inverted, w_i = (min_j score_j / score_i) ** factor, so the
better run still weighs more. Both are computed in log space: a factor of 25 neither overflows nor underflows.
The scores come from each run's metrics json (see pipeline.run_scores), never from file names.

Re-distribution (their `re-distribute-label --K`): every class predicted fewer than K times takes the (K - count)
objects with the highest probability for it, one global pass over (object, class) pairs in decreasing
probability so that two short classes never fight over an object: an object moves at most once, only while its
current class keeps at least K members, and only while the receiving class is still short. Their version let a
later class overwrite an earlier class's pick and never re-checked the loser. With n >= K * C this gives every
class at least K (the surplus of the other classes always covers the shortfall).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


def ensemble_weights(scores, factor: float = 1.0, lower_is_better: bool = False) -> np.ndarray:
    scores = np.asarray(scores, float)
    if scores.ndim != 1 or len(scores) == 0:
        raise ValueError("ensemble_weights: need a 1-d, non-empty list of scores")
    if not (np.isfinite(scores).all() and (scores > 0).all()):
        raise ValueError(f"ensemble_weights: scores must be finite and > 0 for ratio weights, got {scores.tolist()}")
    log_ratio = np.log(scores) - np.log(scores.min())
    if lower_is_better:
        log_ratio = -log_ratio
    log_w = factor * log_ratio
    w = np.exp(log_w - log_w.max())
    return w / w.sum()


def weighted_ensemble(probs: list[np.ndarray], weights) -> np.ndarray:
    """sum_i w_i * probs_i with w normalised to sum 1: rows stay probability vectors."""
    weights = np.asarray(weights, float)
    if len(probs) != len(weights):
        raise ValueError(f"weighted_ensemble: {len(probs)} probability arrays but {len(weights)} weights")
    shapes = {np.shape(p) for p in probs}
    if len(shapes) != 1:
        raise ValueError(f"weighted_ensemble: probability arrays differ in shape: {sorted(shapes)}")
    weights = weights / weights.sum()
    return np.tensordot(weights, np.stack([np.asarray(p, float) for p in probs]), axes=1)


def histogram(labels, n_classes: int) -> np.ndarray:
    return np.bincount(np.asarray(labels, int), minlength=n_classes)


@dataclass
class Redistribution:
    labels: np.ndarray        # [n] class per object after re-distribution
    before: np.ndarray        # [C] class histogram of argmax
    after: np.ndarray         # [C] class histogram of `labels`
    moves: pd.DataFrame       # one row per moved object: index, from_class, to_class, prob


def redistribute_labels(probs, k: int) -> Redistribution:
    probs = np.asarray(probs, float)
    n, n_classes = probs.shape
    labels = probs.argmax(axis=1)
    before = histogram(labels, n_classes)
    counts = before.copy()
    need = np.maximum(k - counts, 0)
    moved = np.zeros(n, bool)
    moves = []
    short = np.flatnonzero(need)
    if len(short):
        # every (object, short class) pair, highest probability first; stable for reproducible ties
        objects, classes = np.meshgrid(np.arange(n), short, indexing="ij")
        objects, classes = objects.ravel(), classes.ravel()
        order = np.argsort(-probs[objects, classes], kind="stable")
        for i, c in zip(objects[order], classes[order]):
            donor = labels[i]
            if need[c] == 0 or moved[i] or donor == c or counts[donor] <= k:
                continue
            moves.append((int(i), int(donor), int(c), float(probs[i, c])))
            labels[i] = c
            moved[i] = True
            counts[donor] -= 1
            counts[c] += 1
            need[c] -= 1
            if not need.any():
                break
    return Redistribution(labels=labels, before=before, after=histogram(labels, n_classes),
                          moves=pd.DataFrame(moves, columns=["index", "from_class", "to_class", "prob"]))
