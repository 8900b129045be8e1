"""Names of the files in a dataroot (DESIGN.md section 1), in one place: the data room reads them, the launcher
and the fingerprints only need to know where they are."""
from __future__ import annotations

from pathlib import Path

from fold0123.common.names import check_name


def photos_dir(dataroot: str | Path) -> Path:
    return Path(dataroot) / "photos"


def photo_path(dataroot: str | Path, object_id: str) -> Path:
    return photos_dir(dataroot) / f"{object_id}.jpg"


def split_names(k: int = 3) -> list[str]:
    """The fold0123 splits: `{k}fold0 .. {k}fold{k-1}` and `all`."""
    return [f"{k}fold{i}" for i in range(k)] + ["all"]


def split_paths(dataroot: str | Path, split: str) -> tuple[Path, Path]:
    root = Path(dataroot)
    check_name(split, "split name")
    return root / f"{split}_train.csv", root / f"{split}_test.csv"


def folds_fingerprint_path(dataroot: str | Path, k: int) -> Path:
    """What made the `{k}fold*` and `all` split files (SGKFold.py writes it after them)."""
    return Path(dataroot) / f"{int(k)}fold_fingerprint.json"


def tag_vectors_path(dataroot: str | Path, dim: int) -> Path:
    """word2vec.py's output: one row per train and test object, `object_id, w2v_0..w2v_{dim-1}`."""
    return Path(dataroot) / f"materialstechniques_w2v{int(dim)}.csv"


def tag_vectors_fingerprint_path(dataroot: str | Path, dim: int) -> Path:
    return tag_vectors_path(dataroot, dim).with_suffix(".json")
