"""data/layout.py: every malformed input gives one LayoutError line naming the file and the row or column.

BAD_INPUTS is shared with the SGKFold and word2vec tests, which check that their CLIs fail on the same cases
and leave nothing behind.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fold0123.data import layout
from fold0123.data.layout import LayoutError


def _edit_csv(path: Path, edit) -> None:
    """Rewrite a CSV through `edit(frame) -> frame`, reading every cell as the string it is."""
    edit(pd.read_csv(path, dtype=str, keep_default_na=False)).to_csv(path, index=False)


def _train_id(root: Path, row: int = 0) -> str:
    return pd.read_csv(root / "train.csv", dtype=str, keep_default_na=False)["object_id"].iloc[row]


def _set(column, row, value):
    def edit(frame):
        frame.loc[row, column] = value
        return frame
    return edit


def _missing_photo(root: Path) -> None:
    (root / "photos" / f"{_train_id(root, 4)}.jpg").unlink()


def _garbage_photo(root: Path) -> None:
    (root / "photos" / f"{_train_id(root, 4)}.jpg").write_bytes(b"this is not a jpeg")


def _truncated_photo(root: Path) -> None:
    path = root / "photos" / f"{_train_id(root, 4)}.jpg"
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 8 // 10])  # header intact: only decoding finds it


def _test_id_in_train(root: Path) -> None:
    _edit_csv(root / "test.csv", _set("object_id", 2, _train_id(root, 7)))


# name -> (break the dataroot, file the message names, fragments the message holds, which CLIs read that file)
BAD_INPUTS = {
    "missing train.csv": (lambda r: (r / "train.csv").unlink(), "train.csv", ["file not found"], "both"),
    "missing test.csv": (lambda r: (r / "test.csv").unlink(), "test.csv", ["file not found"], "both"),
    "missing column target": (lambda r: _edit_csv(r / "train.csv", lambda f: f.drop(columns="target")),
                              "train.csv", ["missing column 'target'"], "both"),
    "missing column art_series_id": (
        lambda r: _edit_csv(r / "train.csv", lambda f: f.drop(columns="art_series_id")),
        "train.csv", ["missing column 'art_series_id'"], "both"),
    "missing column object_id in test": (
        lambda r: _edit_csv(r / "test.csv", lambda f: f.rename(columns={"object_id": "id"})),
        "test.csv", ["missing column 'object_id'"], "both"),
    "duplicate object_id": (
        lambda r: _edit_csv(r / "train.csv", _set("object_id", 3, _train_id(r, 1))),
        "train.csv", ["row 5", "duplicate object_id"], "both"),
    "duplicate object_id in test": (
        lambda r: _edit_csv(r / "test.csv", lambda f: f.assign(object_id=f["object_id"].iloc[0])),
        "test.csv", ["row 3", "duplicate object_id"], "both"),
    "non-numeric target": (lambda r: _edit_csv(r / "train.csv", _set("target", 5, "two")),
                           "train.csv", ["row 7", "column 'target'", "'two'"], "both"),
    "missing target": (lambda r: _edit_csv(r / "train.csv", _set("target", 6, "")),
                       "train.csv", ["row 8", "column 'target'"], "both"),
    "target out of range": (lambda r: _edit_csv(r / "train.csv", _set("target", 0, "7")),
                            "train.csv", ["row 2", "column 'target'", "outside 0..3"], "both"),
    "fractional target": (lambda r: _edit_csv(r / "train.csv", _set("target", 1, "1.5")),
                          "train.csv", ["row 3", "column 'target'", "not a whole class"], "both"),
    "test id also in train": (_test_id_in_train, "test.csv", ["row 4", "also in train.csv"], "both"),
    "train object without photo": (_missing_photo, ".jpg", ["missing photo", "train.csv"], "folds"),
    "corrupt image": (_garbage_photo, ".jpg", ["unreadable or corrupt image", "train.csv"], "folds"),
    "truncated image": (_truncated_photo, ".jpg", ["unreadable or corrupt image", "train.csv"], "folds"),
    "empty art_series_id": (lambda r: _edit_csv(r / "train.csv", _set("art_series_id", 2, "")),
                            "train.csv", ["row 4", "art_series_id"], "folds"),
    "missing materials.csv": (lambda r: (r / "materials.csv").unlink(), "materials.csv", ["file not found"],
                              "word2vec"),
    "missing column name": (
        lambda r: _edit_csv(r / "techniques.csv", lambda f: f.rename(columns={"name": "technique"})),
        "techniques.csv", ["missing column 'name'"], "word2vec"),
    "empty tag name": (lambda r: _edit_csv(r / "materials.csv", _set("name", 2, "")),
                       "materials.csv", ["row 4", "empty name"], "word2vec"),
}


def bad_inputs(cli: str) -> list[str]:
    return [name for name, case in BAD_INPUTS.items() if case[3] in ("both", cli)]


def assert_one_line_naming(err: str, case: str) -> None:
    _, filename, fragments, _ = BAD_INPUTS[case]
    assert "\n" not in err.strip(), err
    first = err.split(":")[0]
    assert first.endswith(filename), f"{err!r} does not start with the file ({filename})"
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"


def files_in(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------------ readers


def test_read_train_types_and_keeps_na_strings(dataroot):
    _edit_csv(dataroot / "train.csv", _set("art_series_id", 0, "NA"))
    train = layout.read_train(dataroot)
    assert train["art_series_id"].iloc[0] == "NA"  # not NaN: "NA" is a real value in this layout
    assert train["target"].dtype == float and train["sorting_date"].dtype == float
    assert set(train["target"]) <= {0.0, 1.0, 2.0, 3.0}
    assert all(isinstance(i, str) for i in train["object_id"])


@pytest.mark.parametrize("case", [c for c in BAD_INPUTS if BAD_INPUTS[c][3] in ("both", "folds")
                                  and "photo" not in c and "image" not in c and "art_series" not in c])
def test_readers_reject_bad_tables(dataroot, case):
    BAD_INPUTS[case][0](dataroot)
    with pytest.raises(LayoutError) as info:
        layout.read_test(dataroot, layout.read_train(dataroot))
    assert_one_line_naming(str(info.value), case)


def test_read_tags_keeps_na_and_rejects_unknown_table(dataroot):
    pd.DataFrame({"object_id": ["a", "b"], "name": ["NA", "null"]}).to_csv(dataroot / "materials.csv", index=False)
    assert layout.read_tags(dataroot, "materials")["name"].tolist() == ["NA", "null"]
    with pytest.raises(ValueError, match="unknown tag table"):
        layout.read_tags(dataroot, "colours")


# ------------------------------------------------------------------------------------------------------- photos


def test_check_photos_decodes_greyscale_and_cmyk(dataroot):
    ids = layout.read_train(dataroot)["object_id"].tolist()
    rgb = Image.open(layout.photo_path(dataroot, ids[0])).convert("RGB")
    rgb.convert("L").save(layout.photo_path(dataroot, ids[0]))
    rgb.convert("CMYK").save(layout.photo_path(dataroot, ids[1]))
    layout.check_photos(dataroot, ids, decode=True)


@pytest.mark.parametrize("case", ["train object without photo", "corrupt image", "truncated image"])
def test_check_photos_names_the_file(dataroot, case):
    BAD_INPUTS[case][0](dataroot)
    ids = layout.read_train(dataroot)["object_id"].tolist()
    with pytest.raises(LayoutError) as info:
        layout.check_photos(dataroot, ids, "train.csv", decode=True)
    assert_one_line_naming(str(info.value), case)
    assert ids[4] in str(info.value)


def test_check_photos_decodes_only_when_asked(dataroot):
    """Without decode the check is only for presence (cheap, for every run start); with it, corrupt files fail."""
    _garbage_photo(dataroot)
    ids = layout.read_train(dataroot)["object_id"].tolist()
    layout.check_photos(dataroot, ids)
    with pytest.raises(LayoutError):
        layout.check_photos(dataroot, ids, decode=True)


# ------------------------------------------------------------------------------------------------------- splits


def test_split_names_and_paths(tmp_path):
    assert layout.split_names(3) == ["3fold0", "3fold1", "3fold2", "all"]
    assert layout.split_paths(tmp_path, "3fold1") == (tmp_path / "3fold1_train.csv", tmp_path / "3fold1_test.csv")


def test_read_split_missing_says_how_to_make_it(dataroot):
    with pytest.raises(LayoutError, match="SGKFold.py"):
        layout.read_split(dataroot, "3fold0")


def test_read_split_allows_soft_pseudo_labels_that_train_csv_may_not_have(dataroot):
    train = pd.read_csv(dataroot / "train.csv", dtype=str, keep_default_na=False)
    pseudo = train.iloc[:2].assign(object_id=["p1", "p2"], target=["1.25", "2.5"], pseudo="1")
    pd.concat([train.iloc[2:].assign(pseudo="0"), pseudo]).to_csv(dataroot / "3fold0_pseudo1_train.csv", index=False)
    train.iloc[:2].to_csv(dataroot / "3fold0_pseudo1_test.csv", index=False)
    part, held_out = layout.read_split(dataroot, "3fold0_pseudo1")
    assert part["target"].iloc[-1] == 2.5 and len(held_out) == 2
    assert np.issubdtype(held_out["target"].dtype, np.floating)


def test_a_header_only_test_csv_is_an_error(dataroot):
    (dataroot / "test.csv").write_text("object_id\n")
    with pytest.raises(LayoutError, match=r"test.csv: no rows \(only a header\)"):
        layout.read_test(dataroot)
