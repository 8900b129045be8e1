"""Read and validate a dataroot in the project's layout (see docs/data.md, "The data layout"): atmaCup #11's, with the
columns and label range its competition spec (data/competition.py, `competition.yml`) asks for.

Every reader returns a plain DataFrame with string ids and fails with one `LayoutError` line naming the file and
the column or row, so a malformed competition drop is diagnosed before any training starts. CSVs are read with
`keep_default_na=False` because tags such as "NA" (Namibia) and "null" are real values, not missing ones.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

# names (common.dataroot) and the error (common.errors) are defined in common and re-exported with the readers
from fold0123.common.dataroot import (TAG_TABLES, photo_path, photo_paths, split_names, split_paths,  # noqa: F401
                                      tag_table_path, tag_vectors_path, test_set_name, test_tables)  # (re-exported)
from fold0123.common.errors import LayoutError  # noqa: F401
from fold0123.common.names import name_problem
from fold0123.data.competition import Competition, read_competition

STRING_COLUMNS = {"object_id": str, "art_series_id": str, "name": str}


def read_csv(path: str | Path, columns: tuple[str, ...], text: tuple[str, ...] | bool = ()) -> pd.DataFrame:
    """`path` with `columns` required; ids, names and the `text` columns (a group column: "007" is not 7), or with
    `text=True` every column, as strings."""
    path = Path(path)
    if not path.is_file():
        raise LayoutError(f"{path}: file not found")
    try:
        frame = pd.read_csv(path, keep_default_na=False, na_values=[],
                            dtype=str if text is True else {**STRING_COLUMNS, **{column: str for column in text}})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise LayoutError(f"{path}: not a readable CSV ({str(err).splitlines()[0]})") from None
    for column in columns:
        if column not in frame.columns:
            raise LayoutError(f"{path}: missing column {column!r} (has {', '.join(map(str, frame.columns))})")
    return frame


def check_unique_ids(frame: pd.DataFrame, path: Path) -> None:
    """Ids name photo files, so one with a path separator would read outside photos/ (common.names)."""
    for row, object_id in enumerate(frame["object_id"]):
        problem = name_problem(object_id)
        if problem:
            raise LayoutError(f"{path}: row {row + 2}: object_id {object_id!r} {problem}")
    dup = frame["object_id"].duplicated()
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0])
        raise LayoutError(f"{path}: row {row + 2}: duplicate object_id {frame['object_id'].iloc[row]!r}")


def numeric_column(frame: pd.DataFrame, column: str, path: Path) -> pd.Series:
    """`frame[column]` as finite numbers; LayoutError naming the file row (header = row 1) of the first bad one."""
    values = pd.to_numeric(frame[column].astype(str).str.strip(), errors="coerce")
    bad = ~np.isfinite(values.to_numpy(dtype=float))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise LayoutError(f"{path}: row {row + 2}: column {column!r}: non-numeric or missing value "
                          f"{frame[column].iloc[row]!r}")
    return values


def train_columns(dataroot: str | Path) -> tuple[str, ...]:
    return read_competition(dataroot).train_columns


def validate_labels(frame: pd.DataFrame, path: Path, competition: Competition) -> pd.DataFrame:
    """Check and type the label columns of a train-like table (train.csv or a split's parts): a class target
    within 0..K-1 (split files may carry soft pseudo labels, so not necessarily whole), the spec's numeric
    columns finite."""
    frame = frame.copy()
    target = numeric_column(frame, "target", path)
    bounds = competition.target_range
    if bounds is not None:
        out_of_range = ~target.between(*bounds)
        if out_of_range.any():
            row = int(np.flatnonzero(out_of_range.to_numpy())[0])
            raise LayoutError(f"{path}: row {row + 2}: column 'target': {target.iloc[row]} outside "
                              f"0..{competition.n_classes - 1}")
    frame["target"] = target.astype(float)
    for column in competition.spec.columns:
        if column in frame.columns:
            frame[column] = numeric_column(frame, column, path).astype(float)
    return frame


def _check_groups(frame: pd.DataFrame, path: Path, competition: Competition) -> None:
    """The folds keep each group whole: a blank group id would silently join every other blank one."""
    column = competition.group_column
    if column is None:
        return
    no_group = np.flatnonzero((frame[column].astype(str).str.strip() == "").to_numpy())
    if len(no_group):
        raise LayoutError(f"{path}: row {int(no_group[0]) + 2}: column {column!r}: empty group id")


def read_train(dataroot: str | Path) -> pd.DataFrame:
    """train.csv, typed; `target` must be a whole class there (split files may carry soft pseudo labels)."""
    path = Path(dataroot) / "train.csv"
    competition = read_competition(dataroot)
    frame = read_csv(path, competition.train_columns, competition.text_columns)
    check_unique_ids(frame, path)
    _check_groups(frame, path, competition)
    frame = validate_labels(frame, path, competition)
    fractional = (frame["target"] % 1 != 0).to_numpy()
    if competition.has_classes and fractional.any():
        row = int(np.flatnonzero(fractional)[0])
        raise LayoutError(f"{path}: row {row + 2}: column 'target': {frame['target'].iloc[row]} is not a whole class "
                          f"0..{competition.n_classes - 1}")
    return frame


def read_test(dataroot: str | Path, train: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every test set's rows (common.dataroot.test_tables: test.csv, then a later stage's test_b.csv, ...), in
    that order, with the column `test_set` naming each row's set; when `train` is given, also check that no test
    id is a train id. A later set must not repeat an earlier set's ids."""
    frames, seen = [], {}
    for path in test_tables(dataroot):
        frame = read_csv(path, ("object_id",))
        if frame.empty:
            raise LayoutError(f"{path}: no rows (only a header): there is nothing to predict")
        check_unique_ids(frame, path)
        if train is not None:
            both = frame["object_id"].isin(set(train["object_id"])).to_numpy()
            if both.any():
                row = int(np.flatnonzero(both)[0])
                raise LayoutError(f"{path}: row {row + 2}: object_id {frame['object_id'].iloc[row]!r} is also in "
                                  f"train.csv")
        for row, object_id in enumerate(frame["object_id"]):
            if object_id in seen:
                raise LayoutError(f"{path}: row {row + 2}: object_id {object_id!r} is also in {seen[object_id]}")
        seen.update(dict.fromkeys(frame["object_id"], path.name))
        frames.append(frame.assign(test_set=test_set_name(path)))
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def read_tags(dataroot: str | Path, table: str) -> pd.DataFrame:
    """materials.csv or techniques.csv: zero or more (object_id, name) rows per object."""
    if table not in TAG_TABLES:
        raise ValueError(f"unknown tag table {table!r}; expected one of {TAG_TABLES}")
    frame = read_csv(tag_table_path(dataroot, table), ("object_id", "name"))
    return frame[["object_id", "name"]]


def check_photos(dataroot: str | Path, object_ids, table: str = "train.csv", decode: bool = False) -> None:
    """Fail on the first object of `table` whose photo is missing or, with `decode`, does not decode.

    Decoding every image up front costs seconds on a competition-sized folder, and saves a run that would
    otherwise die in a DataLoader worker hours later with a traceback that does not name the file.
    """
    object_ids = list(object_ids)
    for object_id, path in zip(object_ids, photo_paths(dataroot, object_ids)):
        if not path.is_file():
            raise LayoutError(f"{path}: missing photo for object_id {object_id!r} of {table}")
        if decode:
            _decode(path, object_id, table)


def _decode(path: Path, object_id: str, table: str) -> None:
    from PIL import Image  # only the photo check needs PIL; the CSV readers stay importable without it

    try:
        with Image.open(path) as image:
            image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise LayoutError(f"{path}: unreadable or corrupt image for object_id {object_id!r} of {table} "
                          f"({reason})") from None


def read_split(dataroot: str | Path, split: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A split's train part (labelled) and held-out part.

    For a fold split the held-out part is labelled validation rows of train.csv; for `all` it is test.csv's rows,
    unlabelled. Pseudo-label rounds add rows (with a `pseudo` column) to a train part only.
    """
    train_path, test_path = split_paths(dataroot, split)
    for path in (train_path, test_path):
        if not path.is_file():
            raise LayoutError(f"{path}: split file not found (run SGKFold.py --dataroot {dataroot})")
    competition = read_competition(dataroot)
    train = read_csv(train_path, competition.train_columns, competition.text_columns)
    check_unique_ids(train, train_path)
    train = validate_labels(train, train_path, competition)
    held_out = read_csv(test_path, ("object_id",))
    check_unique_ids(held_out, test_path)
    if "target" in held_out.columns:
        held_out = validate_labels(held_out, test_path, competition)
    return train, held_out
