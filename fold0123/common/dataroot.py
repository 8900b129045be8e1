"""Names of the files in a dataroot (DESIGN.md section 1), in one place: the data room reads them, the launcher
and the fingerprints only need to know where they are."""
from __future__ import annotations

from pathlib import Path

from fold0123.common.names import check_name


TEST = "test"  # the first test set: test.csv, its photos in photos/ with the train photos'


def photos_dir(dataroot: str | Path) -> Path:
    return Path(dataroot) / "photos"


def test_tables(dataroot: str | Path) -> list[Path]:
    """The test sets' tables: test.csv, then any later stage's `test_{name}.csv` (a competition's test B, released
    after test A: ACCV 2022's two stages), in name order. Every test set is predicted and pseudo-labelled."""
    root = Path(dataroot)
    return [root / "test.csv", *sorted(root.glob(f"{TEST}_*.csv"))]


def test_set_name(table: str | Path) -> str:
    """`test` for test.csv, `test_b` for test_b.csv."""
    return Path(table).stem


def test_photos_dir(dataroot: str | Path, test_set: str) -> Path:
    """Where a test set's photos are: photos/ for test.csv's (beside the train photos), `photos_{name}/` for a
    later set's, so adding test B leaves photos/ (which every run's fingerprint digests) as it was."""
    return photos_dir(dataroot) if test_set == TEST else Path(dataroot) / f"photos_{test_set}"


def photo_path(dataroot: str | Path, object_id: str) -> Path:
    """photos/{id}.jpg, or a later test set's `photos_{name}/{id}.jpg` where only that one exists."""
    return photo_paths(dataroot, [object_id])[0]


def photo_paths(dataroot: str | Path, object_ids) -> list[Path]:
    """photo_path for many ids: the later test sets' folders are listed once, not once per photo outside photos/
    (100k test-B photos would otherwise glob the dataroot 100k times)."""
    later_dirs = None
    paths = []
    for object_id in object_ids:
        path = photos_dir(dataroot) / f"{object_id}.jpg"
        if not path.is_file():
            if later_dirs is None:
                later_dirs = [test_photos_dir(dataroot, test_set_name(t)) for t in test_tables(dataroot)[1:]]
            path = next((d / path.name for d in later_dirs if (d / path.name).is_file()), path)
        paths.append(path)
    return paths


def beside(dataroot: str | Path, suffix: str) -> Path:
    """`datasets/emoji` -> `datasets/emoji{suffix}`: a folder beside the dataroot, never inside it (a competition's
    data may be read-only)."""
    root, resolved = Path(dataroot), Path(dataroot).resolve()
    parent = root.parent if root.name not in ("", ".", "..") else resolved.parent  # `--dataroot .` too
    return parent / f"{resolved.name}{suffix}"


def baselines_dir(dataroot: str | Path) -> Path:
    """`datasets/emoji` -> `datasets/emoji_baselines`: the baselines' reports (by default), their predictions cache
    and the one pixel-features cache of the dataroot's photos."""
    return beside(dataroot, "_baselines")


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


TAG_TABLES = ("materials", "techniques")


def tag_table_path(dataroot: str | Path, table: str) -> Path:
    """materials.csv or techniques.csv: zero or more (object_id, name) rows per object."""
    return Path(dataroot) / f"{table}.csv"


def tag_vectors_path(dataroot: str | Path, dim: int) -> Path:
    """word2vec.py's output: one row per train and test object, `object_id, w2v_0..w2v_{dim-1}`."""
    return Path(dataroot) / f"materialstechniques_w2v{int(dim)}.csv"


def tag_vectors_fingerprint_path(dataroot: str | Path, dim: int) -> Path:
    return tag_vectors_path(dataroot, dim).with_suffix(".json")
