"""Retrieval metrics over a whole gallery: Recall@K and their mean (MR), the MUGE metric, from a similarity matrix.

Ranks use the order predictions are written in: similarity descending, ties broken by gallery position (a
stable sort), so the Recall@K computed on a matrix equals what the MUGE scorer gives on the top-K predictions
written from it. A query with no positive in the gallery counts as a miss (the MUGE scorer counts every
reference text). K larger than the gallery simply covers all of it.
"""
from __future__ import annotations

import numpy as np

KS = (1, 5, 10)


def first_positive_rank(similarity: np.ndarray, positives: list) -> np.ndarray:
    """1-based rank of the best-ranked positive of each query (row), `inf` for a query without positives.

    `positives[i]` holds the gallery column indices that are correct for query i."""
    similarity = np.asarray(similarity)
    if similarity.ndim != 2 or len(positives) != len(similarity):
        raise ValueError(f"similarity of shape {similarity.shape} for {len(positives)} queries")
    ranks = np.full(len(similarity), np.inf)
    columns = np.arange(similarity.shape[1])
    for i, pos in enumerate(positives):
        pos = np.asarray(sorted(pos), dtype=np.int64)
        if not len(pos):
            continue
        row = similarity[i]
        best = min(int(np.sum(row > row[p]) + np.sum((row == row[p]) & (columns < p))) for p in pos)
        ranks[i] = best + 1
    return ranks


def recall_at(ranks: np.ndarray, ks=KS) -> dict[str, float]:
    """`r{K}` = share of queries with a positive among the first K, and `mr` = their mean."""
    ranks = np.asarray(ranks, dtype=float)
    out = {f"r{k}": float(np.mean(ranks <= k)) if len(ranks) else float("nan") for k in ks}
    out["mr"] = float(np.mean([out[f"r{k}"] for k in ks]))
    return out


def top_k(similarity: np.ndarray, k: int = 10) -> np.ndarray:
    """Column indices of each row's `min(k, gallery)` highest similarities, in rank order (stable on ties)."""
    similarity = np.asarray(similarity)
    return np.argsort(-similarity, axis=1, kind="stable")[:, :min(k, similarity.shape[1])]


def retrieval_metrics(similarity: np.ndarray, text_positives: list) -> dict[str, float]:
    """Text->image (`t2i_*`, rows = texts) and image->text (`i2t_*`) Recall@1/5/10 and MR over the whole gallery,
    plus `mr` (their mean) and `chance_t2i_mr` (a random ranking's t2i MR, for scale).

    `text_positives[i]`: the image columns correct for text row i; image->text positives are their transpose."""
    similarity = np.asarray(similarity, dtype=np.float64)
    n_texts, n_images = similarity.shape
    image_positives = [[] for _ in range(n_images)]
    for t, pos in enumerate(text_positives):
        for j in pos:
            image_positives[j].append(t)
    out = {f"t2i_{k}": v for k, v in recall_at(first_positive_rank(similarity, text_positives)).items()}
    out.update({f"i2t_{k}": v for k, v in recall_at(first_positive_rank(similarity.T, image_positives)).items()})
    out["mr"] = (out["t2i_mr"] + out["i2t_mr"]) / 2
    out["chance_t2i_mr"] = float(np.mean([min(k, n_images) for k in KS]) / max(n_images, 1))
    return out
