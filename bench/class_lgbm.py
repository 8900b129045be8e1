"""What the class baselines' LightGBM (baselines.CLASS_PARAMS: 63 bins, half the features per tree) costs and
scores against the settings it replaced (255 bins, 0.8 of the features), fit side by side in the same process on
a classification dataroot's split files and pixel features, as the ensemble's pixel member and the baselines' pixel
row fit it (baselines.predict, no predictions cache). The ratio is old / new seconds: 2.0 is twice as fast.

    .venv/bin/python -m bench.class_lgbm [--dataroot datasets/emoji_classify] [--threads 1]

The dataroot must have its split files and pixel features' photos (`make demo-classify` builds them).
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from fold0123 import baselines
from fold0123.data.pixel_stats import dataroot_cache, pixel_features

BEFORE = {**baselines.CLASS_PARAMS, "max_bin": 255, "feature_fraction": 0.8}  # until e0a60dc


def fit(data: baselines.Splits, frame, params: dict, threads: int) -> tuple[float, list[float], float]:
    """Out-of-fold accuracy, per-fold accuracies and seconds of one baselines.predict with `params`."""
    lgbm = baselines.lgbm_options(data.classes, threads).model_copy(
        update={"params": {**params, "num_class": data.classes, "num_threads": threads}})
    start = time.perf_counter()
    result, _, _ = baselines.predict(data, frame, lgbm, seed=0)
    seconds = time.perf_counter() - start
    return float(np.mean(result.oof.argmax(1) == data.y)), result.scores, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataroot", default="datasets/emoji_classify")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="LightGBM threads of both fits")
    args = parser.parse_args()
    data = baselines.load_splits(args.dataroot, args.folds)
    if not data.classes:
        raise SystemExit(f"{args.dataroot}: not a classification competition (competition.yml)")
    frame = pixel_features(args.dataroot, data.ids + data.test_ids, dataroot_cache(args.dataroot)).frame
    rows = {"before (255 bins, features 0.8)": fit(data, frame, BEFORE, args.threads),
            "CLASS_PARAMS (63 bins, features 0.5)": fit(data, frame, baselines.CLASS_PARAMS, args.threads)}
    print(f"{args.dataroot}: {len(data.ids)} rows, {frame.shape[1]} features, {data.classes} classes, "
          f"{args.threads} thread(s); load average {os.getloadavg()[0]:.1f}")
    for name, (accuracy, folds, seconds) in rows.items():
        print(f"{name:38s} OOF accuracy {accuracy:.4f} (folds {' / '.join(f'{s:.4f}' for s in folds)})  "
              f"{seconds:6.0f} s")
    (_, _, before), (_, _, after) = rows.values()
    print(f"speed-up (before / CLASS_PARAMS seconds): {before / after:.2f}")


if __name__ == "__main__":
    main()
