"""Ensemble saved similarity matrices into one submission, reproducibly from the files alone.

    python -m fold0123.retrieval.ensemble A/test_similarity.npy B/test_similarity.npy [--weights 0.6,0.4] --out DIR

Each matrix's rows (one per text) are L2-normalised, so models whose similarities live on different scales count
by their weights alone; the ensemble is their weighted average (weights normalised to sum 1), computed in a fixed
order in float64 and stored as float32, so re-running it on the same files gives the same bytes: the matrices
and ids are the whole recipe of a submission (the original competition kept its 8 models' matrices as .npy for
that). Matrices whose rows or columns are the same ids in another order are aligned to the first one's; a
different set of ids is an error. Writes `{split}_similarity.npy` (+ ids) and `{split}_predictions.jsonl`.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from fold0123.common.errors import LayoutError, UsageError, cli_main
from fold0123.retrieval.predictions import load_similarity
from fold0123.retrieval.predict import write_outputs


def row_normalised(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float64)
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)


def combine(paths, weights=None) -> tuple[np.ndarray, list[int], list[int]]:
    paths = [Path(p) for p in paths]
    if not paths:
        raise UsageError("name at least one similarity matrix")
    weights = [1.0] * len(paths) if weights is None else [float(w) for w in weights]
    bad = next((w for w in weights if not math.isfinite(w)), None)
    if bad is not None:
        raise UsageError(f"--weights: {bad} is not a finite number")
    if len(weights) != len(paths) or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise UsageError(f"--weights: {len(paths)} non-negative weights with a positive sum, got {weights}")
    total = None
    for path, weight in zip(paths, weights):
        sim, text_ids, image_ids = load_similarity(path)
        if total is None:
            rows, columns, total = text_ids, image_ids, np.zeros(sim.shape, np.float64)
        if set(text_ids) != set(rows) or set(image_ids) != set(columns) or len(text_ids) != len(rows):
            raise LayoutError(f"{path}: its text or image ids differ from {paths[0]}'s (another split?)")
        r = {t: i for i, t in enumerate(text_ids)}
        c = {t: i for i, t in enumerate(image_ids)}
        aligned = sim[np.ix_([r[t] for t in rows], [c[i] for i in columns])]
        total += (weight / sum(weights)) * row_normalised(aligned)
    return total.astype(np.float32), rows, columns


def ensemble(paths, out: str | Path, weights=None, split: str = "test") -> dict:
    sim, text_ids, image_ids = combine(paths, weights)
    return write_outputs(out, split, text_ids, image_ids, sim)


@cli_main
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("matrices", nargs="+", help="{split}_similarity.npy files (their .ids.json beside them)")
    parser.add_argument("--weights", default=None, help="comma-separated, one per matrix (default equal)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--split", default="test", help="the name the outputs carry")
    args = parser.parse_args(argv)
    try:
        weights = None if args.weights is None else [float(w) for w in args.weights.split(",")]
    except ValueError as err:
        raise UsageError(f"--weights {args.weights}: {err}") from None
    print(ensemble(args.matrices, args.out, weights, args.split)["predictions"])


if __name__ == "__main__":
    main()
