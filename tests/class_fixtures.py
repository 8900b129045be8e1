"""A tiny K-class classification dataroot in the project's layout with a `competition.yml`: no group column, no
year, class names instead of atmaCup's four eras; the colour and a bright square's position give the class."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image


def draw_class(label: int, k: int, rng: np.random.Generator, size: int) -> Image.Image:
    hue = np.array([np.cos(2 * np.pi * label / k), np.cos(2 * np.pi * label / k + 2), np.cos(2 * np.pi * label / k + 4)])
    pixels = np.clip(128 + 100 * hue + rng.normal(0, 20, (size, size, 3)), 0, 255)
    q = size // 4
    y, x = divmod(label % 9, 3)
    pixels[y * q:(y + 1) * q, x * q:(x + 1) * q] = 255
    return Image.fromarray(pixels.astype(np.uint8))


def make_class_dataroot(root: Path, k: int = 7, n_train: int = 84, n_test: int = 35, size: int = 32,
                        seed: int = 0, metric: str = "accuracy") -> Path:
    """`root/competition.yml` (classification, `metric`, classes c0..c{k-1}), train.csv (object_id, target, kind: an
    extra column adapters keep), test.csv, photos; answers in root.parent/answers.csv."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "photos").mkdir(parents=True, exist_ok=True)
    labels = np.arange(n_train + n_test) % k
    rng.shuffle(labels)
    ids = [f"img{i:04d}" for i in range(len(labels))]
    for object_id, label in zip(ids, labels):
        draw_class(int(label), k, rng, size).save(root / "photos" / f"{object_id}.jpg", quality=95)
    frame = pd.DataFrame({"object_id": ids, "target": labels, "kind": "photo"})
    frame[:n_train].to_csv(root / "train.csv", index=False)
    frame[n_train:][["object_id"]].to_csv(root / "test.csv", index=False)
    frame[n_train:][["object_id", "target"]].to_csv(root.parent / "answers.csv", index=False)
    classes = ", ".join(f"c{c}" for c in range(k))
    (root / "competition.yml").write_text(f"name: tiny{k}\nkind: classification\nmetric: {metric}\n"
                                          f"classes: [{classes}]\ngroup_column: null\ncolumns: []\n")
    return root
