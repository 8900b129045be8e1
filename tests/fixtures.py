"""A tiny dataroot in the atmaCup #11 layout, made by the tests themselves.

Images carry a learnable signal (the hue and the position of a bright square depend on the target), series hold
1-3 objects, and tags correlate with the target, so a broken pipeline scores visibly worse than a working one.
`test_tags=False` leaves the test objects out of materials.csv and techniques.csv, as atmaCup #11 shipped them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

YEARS = {0: 2010, 1: 2015, 2: 2016, 3: 2019}
MATERIALS = [["paper", "ink"], ["paper", "pencil"], ["oil", "canvas"], ["pencil", "wood"]]
TECHNIQUES = [["etching"], ["pencil", "drawing"], ["painting"], ["carving"]]


def draw(target: int, rng: np.random.Generator, size: int) -> Image.Image:
    base = np.array([[200, 60, 60], [60, 200, 60], [60, 60, 200], [200, 200, 60]][target], dtype=float)
    pixels = np.clip(base + rng.normal(0, 25, (size, size, 3)), 0, 255)
    q = size // 4
    y, x = [(0, 0), (0, 2), (2, 0), (2, 2)][target]
    pixels[y * q:(y + 2) * q, x * q:(x + 2) * q] = 255
    return Image.fromarray(pixels.astype(np.uint8))


def make_dataroot(root: Path, n_train: int = 48, n_test: int = 16, size: int = 32, seed: int = 0,
                  test_tags: bool = True) -> Path:
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "photos").mkdir(parents=True, exist_ok=True)
    rows, series = [], 0
    while len(rows) < n_train + n_test:
        target = int(rng.integers(0, 4))
        for _ in range(int(rng.integers(1, 4))):
            rows.append(dict(object_id=f"{rng.integers(16**12):012x}", art_series_id=f"s{series:04d}", target=target,
                             sorting_date=YEARS[target] + int(rng.integers(0, 2))))
        series += 1
    frame = pd.DataFrame(rows[: n_train + n_test])
    # the last series go to test whole, so no series straddles train and test
    test_series = frame["art_series_id"].drop_duplicates().iloc[-(n_test // 2):]
    is_test = frame["art_series_id"].isin(test_series)
    materials, techniques = [], []
    for row, test in zip(frame.itertuples(), is_test):
        draw(row.target, rng, size).save(root / "photos" / f"{row.object_id}.jpg", quality=95)
        tagged_materials = [(row.object_id, m) for m in MATERIALS[row.target] if rng.random() < 0.9]
        tagged_techniques = [(row.object_id, t) for t in TECHNIQUES[row.target] if rng.random() < 0.9]
        if test_tags or not test:  # the same draws either way, so the photos do not depend on the option
            materials += tagged_materials
            techniques += tagged_techniques
    frame[~is_test][["object_id", "sorting_date", "art_series_id", "target"]].to_csv(root / "train.csv", index=False)
    frame[is_test][["object_id"]].to_csv(root / "test.csv", index=False)
    frame[is_test][["object_id", "target", "sorting_date"]].to_csv(root.parent / "answers.csv", index=False)
    pd.DataFrame(materials, columns=["object_id", "name"]).to_csv(root / "materials.csv", index=False)
    pd.DataFrame(techniques, columns=["object_id", "name"]).to_csv(root / "techniques.csv", index=False)
    return root
