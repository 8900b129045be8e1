"""preprocessing.adapters: ImageFolder and CSV + images -> the project's dataroot, on tiny real image files.

Each adapter: the ids, classes, targets, extra and group columns, competition.yml as data.competition reads it,
photos that are symlinks (not copies) which decode by content, the bad layouts' exact one-line messages, and
nothing left behind (no dataroot, no temp folder) when a build stops half-way.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fold0123.common.build import BuildError
from fold0123.common.errors import LayoutError, UsageError
from fold0123.data.competition import read_competition
from fold0123.data.layout import check_photos, read_test, read_train
from fold0123.preprocessing import adapters
from tests.conftest import ROOT

COLOURS = {"cat": (200, 40, 40), "dog": (40, 200, 40), "emu": (40, 40, 200)}


def image(path: Path, colour=(128, 128, 128), fmt: str | None = None, mode: str = "RGB") -> Path:
    """A real 12 px image file (format from the suffix unless `fmt`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((12, 12, len(mode)), np.uint8)
    pixels[...] = (*colour, 255)[:len(mode)]
    Image.fromarray(pixels.squeeze(), mode).save(path, fmt)
    return path


def imagefolder(src: Path) -> Path:
    """train/{cat: 2 JPEG, dog: 2 PNG (one RGBA), emu: 1 WebP}, test/ 3 mixed, plus OS litter to skip."""
    image(src / "train/cat/c1.jpg", COLOURS["cat"])
    image(src / "train/cat/c2.jpeg", COLOURS["cat"])
    image(src / "train/dog/d1.png", COLOURS["dog"])
    image(src / "train/dog/d2.png", COLOURS["dog"], mode="RGBA")
    image(src / "train/emu/e1.webp", COLOURS["emu"])
    for name in ("t1.jpg", "t2.png", "t3.webp"):
        image(src / "test" / name)
    (src / "train/cat/.DS_Store").write_bytes(b"\0\1")
    (src / "train/dog/._d1.png").write_bytes(b"\0\1")
    (src / "test/Thumbs.db").write_bytes(b"\0\1")
    return src


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp." in p.name or ".old" in p.name)


def test_imagefolder_writes_the_project_layout_with_links(tmp_path):
    src = imagefolder(tmp_path / "accv")
    summary = adapters.adapt_imagefolder(src, tmp_path / "root", metric="top5_accuracy")
    root = tmp_path / "root"
    train = pd.read_csv(root / "train.csv", dtype={"object_id": str})
    assert list(train.columns) == ["object_id", "target"]
    assert dict(zip(train["object_id"], train["target"])) == {"c1": 0, "c2": 0, "d1": 1, "d2": 1, "e1": 2}
    assert pd.read_csv(root / "test.csv")["object_id"].tolist() == ["t1", "t2", "t3"]
    competition = read_competition(root)
    assert (competition.kind, competition.metric, competition.class_names, competition.group_column,
            competition.n_classes) == ("classification", "top5_accuracy", ["cat", "dog", "emu"], None, 3)
    assert competition.spec.name == "accv"
    photos = sorted(p.name for p in (root / "photos").iterdir())
    assert photos == [f"{i}.jpg" for i in ["c1", "c2", "d1", "d2", "e1", "t1", "t2", "t3"]]
    for name, source in [("d2", "train/dog/d2.png"), ("e1", "train/emu/e1.webp"), ("t1", "test/t1.jpg")]:
        link = root / "photos" / f"{name}.jpg"
        assert link.is_symlink() and not os.path.isabs(os.readlink(link))  # relative, not a copy
        assert link.resolve() == (src / source).resolve()
    with Image.open(root / "photos/d2.jpg") as img:  # a PNG behind a .jpg name decodes as what it is
        assert (img.format, img.mode) == ("PNG", "RGBA")
    assert (summary.classes, summary.train_rows, summary.test_rows, summary.groups) == (3, 5, 3, None)
    assert summary.class_counts == {"cat": 2, "dog": 2, "emu": 1}
    assert (root / adapters.MARKER).is_file() and leftovers(tmp_path) == []
    # moving the folder that holds both keeps the links working
    os.rename(tmp_path, tmp_path.with_name(tmp_path.name + "_moved"))
    moved = tmp_path.with_name(tmp_path.name + "_moved")
    assert (moved / "root/photos/c1.jpg").resolve() == (moved / "accv/train/cat/c1.jpg").resolve()
    assert Image.open(moved / "root/photos/c1.jpg").size == (12, 12)


def test_imagefolder_groups_file_by_path_or_stem_names_the_group_column(tmp_path):
    src = imagefolder(tmp_path / "accv")
    pd.DataFrame({"image": ["train/cat/c1.jpg", "c2", "train/dog/d1.png", "d2.png", "e1", "test/t1.jpg"],
                  "series": ["007", "007", "s2", "s2", "s3", "s9"]}).to_csv(tmp_path / "groups.csv", index=False)
    summary = adapters.adapt_imagefolder(src, tmp_path / "root", groups=tmp_path / "groups.csv")
    train = pd.read_csv(tmp_path / "root/train.csv", dtype=str, keep_default_na=False)
    assert list(train.columns) == ["object_id", "target", "series"]
    assert train["series"].tolist() == ["007", "007", "s2", "s2", "s3"]  # kept as text: '007' stays '007'
    assert read_competition(tmp_path / "root").group_column == "series"
    assert (summary.groups, summary.group_column) == (3, "series")
    read = read_train(tmp_path / "root")  # the pipeline's own reader takes it as it is
    assert read["target"].tolist() == [0, 0, 1, 1, 2] and read["series"].tolist() == ["007", "007", "s2", "s2", "s3"]
    check_photos(tmp_path / "root", [*read["object_id"], *read_test(tmp_path / "root", read)["object_id"]],
                 decode=True)


def test_a_train_image_without_group_is_one_line(tmp_path):
    src = imagefolder(tmp_path / "accv")
    pd.DataFrame({"image": ["c1", "c2", "d1", "d2"], "series": list("aabb")}).to_csv(tmp_path / "g.csv", index=False)
    with pytest.raises(LayoutError) as err:
        adapters.adapt_imagefolder(src, tmp_path / "root", groups=tmp_path / "g.csv")
    assert str(err.value) == f"{tmp_path / 'g.csv'}: no group for train image {src / 'train/emu/e1.webp'}"
    assert not (tmp_path / "root").exists() and leftovers(tmp_path) == []


def _no_train(src):
    shutil.rmtree(src / "train")


def _empty_class(src):
    for p in (src / "train/dog").iterdir():
        p.unlink()
    (src / "train/dog/.DS_Store").write_bytes(b"x")  # hidden files do not count


def _loose_file(src):
    image(src / "train/x.jpg")


def _duplicate_stem(src):
    image(src / "train/dog/c1.png")


def _test_in_train(src):
    image(src / "test/d1.jpg")


def _no_test_images(src):
    for p in (src / "test").iterdir():
        p.unlink()


def _class_with_a_trailing_space(src):
    image(src / "train/dog /d3.png", COLOURS["dog"])


def _nan_class(src):
    image(src / "train/NaN/n1.png")


def _test_links_to_train(src):
    (src / "test/t4.jpg").symlink_to(src / "train/cat/c1.jpg")


def _test_copies_train(src):
    shutil.copy(src / "train/dog/d2.png", src / "test/t4.png")


IMAGEFOLDER_ERRORS = [
    (_no_train, "{src}/train: folder not found: the train images, one folder per class (ImageFolder layout: "
                "SRC/train/{{class}}/*.jpg and SRC/test/*.jpg)"),
    (_empty_class, "{src}/train/dog: empty class folder (no images)"),
    (_loose_file, "{src}/train/x.jpg: a file directly in train/ (expected one folder per class: ImageFolder layout: "
                  "SRC/train/{{class}}/*.jpg and SRC/test/*.jpg)"),
    (_duplicate_stem, "duplicate image name 'c1': {src}/train/cat/c1.jpg and {src}/train/dog/c1.png (object ids are "
                      "the file names without extension)"),
    (_test_in_train, "{src}/test/d1.jpg: test image 'd1' is also a train image ({src}/train/dog/d1.png)"),
    (_no_test_images, "{src}/test: no test images (the test set is what the competition predicts)"),
    (_class_with_a_trailing_space, "{src}/train/dog : class folder name 'dog ' has leading or trailing whitespace "
                                   "(it would become a class beside 'dog')"),
    (_nan_class, "{src}/train/NaN: class folder name 'NaN' is a missing value, not a class"),
    (_test_links_to_train, "{src}/test/t4.jpg: test image is the train image {src}/train/cat/c1.jpg (the same file; "
                           "--allow-duplicates keeps it)"),
    (_test_copies_train, "{src}/test/t4.png: test image has the same bytes as the train image "
                         "{src}/train/dog/d2.png (--allow-duplicates keeps it)"),
]


@pytest.mark.parametrize("spoil, message", IMAGEFOLDER_ERRORS, ids=[f.__name__ for f, _ in IMAGEFOLDER_ERRORS])
def test_imagefolder_bad_layouts_are_one_line_and_leave_nothing(tmp_path, spoil, message):
    src = imagefolder(tmp_path / "accv")
    spoil(src)
    with pytest.raises(LayoutError) as err:
        adapters.adapt_imagefolder(src, tmp_path / "root")
    assert str(err.value) == message.format(src=src)
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["accv"]


def test_an_unreadable_class_folder_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    """Root reads every folder whatever its mode, so the refusal a user without the permission gets is injected:
    listing train/dog raises PermissionError, as os.scandir does for them."""
    src = imagefolder(tmp_path / "accv")
    iterdir = Path.iterdir

    def refused(self):
        if self == src / "train/dog":
            raise PermissionError(13, "Permission denied", str(self))
        return iterdir(self)
    monkeypatch.setattr(Path, "iterdir", refused)
    with pytest.raises(LayoutError) as err:
        adapters.adapt_imagefolder(src, tmp_path / "root")
    assert str(err.value) == f"{src / 'train/dog'}: cannot be listed (Permission denied)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["accv"]


def test_a_non_image_stops_the_build_half_way_and_leaves_nothing(tmp_path):
    """The check runs as the links are made: the bad file (last class) fails after earlier links exist; the temp
    folder goes, and an earlier dataroot replaced with --force is still there, untouched."""
    src = imagefolder(tmp_path / "accv")
    adapters.adapt_imagefolder(src, tmp_path / "root")
    before = sorted(p.name for p in (tmp_path / "root/photos").iterdir())
    (src / "train/emu/notes.jpg").write_text("not an image\n")
    with pytest.raises(LayoutError) as err:
        adapters.adapt_imagefolder(src, tmp_path / "root", force=True)
    assert str(err.value).startswith(f"{src / 'train/emu/notes.jpg'}: not a readable image (cannot identify image "
                                     f"file")
    assert sorted(p.name for p in (tmp_path / "root/photos").iterdir()) == before
    assert leftovers(tmp_path) == []


def test_a_truncated_jpeg_is_caught_by_the_decode_and_not_by_the_header_check(tmp_path):
    src = imagefolder(tmp_path / "accv")
    big = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    Image.fromarray(big).save(src / "train/cat/c3.jpg", quality=95)
    data = (src / "train/cat/c3.jpg").read_bytes()
    (src / "train/cat/c3.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(LayoutError, match=r"c3\.jpg: not a readable image \(image file is truncated"):
        adapters.adapt_imagefolder(src, tmp_path / "root")
    assert not (tmp_path / "root").exists() and leftovers(tmp_path) == []
    adapters.adapt_imagefolder(src, tmp_path / "root", decode=False)  # --no-decode: the header is fine
    assert (tmp_path / "root/photos/c3.jpg").is_symlink()


def test_existing_output_needs_force_and_the_source_is_never_the_output(tmp_path):
    src = imagefolder(tmp_path / "accv")
    adapters.adapt_imagefolder(src, tmp_path / "root")
    with pytest.raises(BuildError, match=r"root: exists; pass --force to replace it"):
        adapters.adapt_imagefolder(src, tmp_path / "root")
    adapters.adapt_imagefolder(src, tmp_path / "root", metric="macro_f1", force=True)
    assert read_competition(tmp_path / "root").metric == "macro_f1" and leftovers(tmp_path) == []
    with pytest.raises(UsageError, match="would replace the source folder"):
        adapters.adapt_imagefolder(src, src, force=True)
    with pytest.raises(UsageError, match="inside the source's image folder"):
        adapters.adapt_imagefolder(src, src / "test" / "root")
    with pytest.raises(UsageError, match="--metric rmse"):
        adapters.adapt_imagefolder(src, tmp_path / "other", metric="rmse")


# ---------------------------------------------------------------------------------------------------- CSV

def paddy(src: Path, flat: bool = False) -> Path:
    """train.csv (image_id, label, variety, age, field) + train_images/{label}/ (or flat) + test_images/."""
    rows = [("100330.jpg", "blast", "ADT45", "045", "f1"), ("100365.jpg", "blast", "KarnatakaPonni", "60", "f1"),
            ("100382.png", "normal", "ADT45", "NA", "f2"), ("100632.jpg", "tungro", "Zonal", "70", "f3"),
            ("101918.jpg", "normal", "ADT45", "50", "f2")]
    src.mkdir(parents=True)
    pd.DataFrame(rows, columns=["image_id", "label", "variety", "age", "field"]).to_csv(src / "train.csv", index=False)
    for name, label, *_ in rows:
        image(src / "train_images" / ("" if flat else label) / name)
    for name in ("200001.jpg", "200002.jpg"):
        image(src / "test_images" / name, (30, 60, 90))  # not the train images' bytes (adapters.check_leaks)
    return src


@pytest.mark.parametrize("flat", [False, True], ids=["label folders", "flat"])
def test_csv_adapter_keeps_extra_columns_and_links_photos(tmp_path, flat):
    src = paddy(tmp_path / "paddy", flat)
    summary = adapters.adapt_csv(src, tmp_path / "root", group_column="field", metric="macro_f1")
    train = pd.read_csv(tmp_path / "root/train.csv", dtype=str, keep_default_na=False)
    assert list(train.columns) == ["object_id", "target", "field", "variety", "age"]
    assert train["object_id"].tolist() == ["100330", "100365", "100382", "100632", "101918"]
    assert train["target"].tolist() == ["0", "0", "1", "2", "1"]  # blast, normal, tungro: sorted
    assert train["age"].tolist() == ["045", "60", "NA", "70", "50"]  # extra columns kept as written
    assert pd.read_csv(tmp_path / "root/test.csv", dtype=str)["object_id"].tolist() == ["200001", "200002"]
    competition = read_competition(tmp_path / "root")
    assert (competition.class_names, competition.group_column, competition.metric) == (
        ["blast", "normal", "tungro"], "field", "macro_f1")
    link = tmp_path / "root/photos/100382.jpg"
    assert link.is_symlink() and link.resolve() == (src / "train_images" / ("" if flat else "normal") /
                                                    "100382.png").resolve()
    assert (summary.classes, summary.train_rows, summary.test_rows, summary.groups) == (3, 5, 2, 3)
    assert read_train(tmp_path / "root")["target"].tolist() == [0, 0, 1, 2, 1]


def test_csv_ids_without_extension_and_unlisted_images_are_noted(tmp_path):
    src = paddy(tmp_path / "paddy")
    frame = pd.read_csv(src / "train.csv", dtype=str, keep_default_na=False)
    frame["image_id"] = frame["image_id"].str.replace(r"\.\w+$", "", regex=True)
    frame.iloc[:4].to_csv(src / "train.csv", index=False)
    summary = adapters.adapt_csv(src, tmp_path / "root")
    assert pd.read_csv(tmp_path / "root/train.csv", dtype=str)["object_id"].tolist() == [
        "100330", "100365", "100382", "100632"]
    assert summary.notes == [f"1 images under {src / 'train_images'} are not in train.csv: left out"]


def _csv_edit(column=None, row=None, value=None, drop=None):
    def spoil(src: Path):
        frame = pd.read_csv(src / "train.csv", dtype=str, keep_default_na=False)
        if drop:
            frame = frame.drop(columns=[drop])
        if row is not None:
            frame.loc[row, column] = value
        frame.to_csv(src / "train.csv", index=False)
    return spoil


def _csv_test_in_train(src):
    image(src / "test_images/100330.png")


def _csv_no_test(src):
    for p in (src / "test_images").iterdir():
        p.unlink()


def _csv_test_links_to_train(src):
    (src / "test_images/200003.jpg").symlink_to(src / "train_images/normal/101918.jpg")


def _csv_test_copies_train(src):
    shutil.copy(src / "train_images/tungro/100632.jpg", src / "test_images/200003.jpg")


CSV_ERRORS = [
    ("missing id column", _csv_edit(drop="image_id"),
     "{src}/train.csv: no column 'image_id' (has label, variety, age, field; choose it with --id-column)"),
    ("label not its folder", _csv_edit("label", 3, "blast"),
     "{src}/train.csv: row 5: label 'blast' does not match the folder of image '100632.jpg' (it is in "
     "train_images/tungro/)"),
    ("image not found", _csv_edit("image_id", 0, "999.jpg"),
     "{src}/train.csv: row 2: image '999.jpg' not found in {src}/train_images/blast/ or {src}/train_images/"),
    ("empty label", _csv_edit("label", 0, " "), "{src}/train.csv: row 2: empty 'label' for image '100330.jpg'"),
    ("test image in train", _csv_test_in_train,
     "{src}/test_images/100330.png: test image '100330' is also a train image ({src}/train_images/blast/100330.jpg)"),
    ("no test images", _csv_no_test, "{src}/test_images: no test images (the test set is what the competition "
                                     "predicts)"),
    ("label with a trailing space", _csv_edit("label", 1, "blast "),
     "{src}/train.csv: row 3: 'label' 'blast ' of image '100365.jpg' has leading or trailing whitespace (it would "
     "become a class beside 'blast')"),
    ("NaN label", _csv_edit("label", 3, "NaN"),
     "{src}/train.csv: row 5: 'label' 'NaN' of image '100632.jpg' is a missing value, not a class"),
    ("test image links to train", _csv_test_links_to_train,
     "{src}/test_images/200003.jpg: test image is the train image {src}/train_images/normal/101918.jpg (the same "
     "file; --allow-duplicates keeps it)"),
    ("test image copies train", _csv_test_copies_train,
     "{src}/test_images/200003.jpg: test image has the same bytes as the train image "
     "{src}/train_images/blast/100330.jpg (--allow-duplicates keeps it)"),
]


@pytest.mark.parametrize("spoil, message", [c[1:] for c in CSV_ERRORS], ids=[c[0] for c in CSV_ERRORS])
def test_csv_bad_layouts_are_one_line_and_leave_nothing(tmp_path, spoil, message):
    src = paddy(tmp_path / "paddy")
    spoil(src)
    with pytest.raises(LayoutError) as err:
        adapters.adapt_csv(src, tmp_path / "root", group_column="field")
    assert str(err.value) == message.format(src=src)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["paddy"]


def test_csv_duplicate_stems_name_both_files(tmp_path):
    src = paddy(tmp_path / "paddy")
    image(src / "train_images/blast/100330.png")
    frame = pd.read_csv(src / "train.csv", dtype=str, keep_default_na=False)
    frame.loc[1, "image_id"] = "100330.png"
    frame.to_csv(src / "train.csv", index=False)
    with pytest.raises(LayoutError) as err:
        adapters.adapt_csv(src, tmp_path / "root")
    assert str(err.value) == (f"duplicate image name '100330': {src}/train_images/blast/100330.jpg and "
                              f"{src}/train_images/blast/100330.png (object ids are the file names without extension)")


# ---------------------------------------------------------------------------------------------------- CLI

def test_cli_one_line_errors_and_summary(tmp_path):
    src = paddy(tmp_path / "paddy")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "fold0123.preprocessing.adapters", "csv", str(src), "--out", str(tmp_path / "root")]
    bad = subprocess.run(cmd + ["--id-column", "name"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert bad.returncode == 1 and bad.stderr == (f"error: {src}/train.csv: no column 'name' (has image_id, label, "
                                                  f"variety, age, field; choose it with --id-column)\n")
    cmd[4:5] = ["--src", str(src)]  # the recipe's spelling
    good = subprocess.run(cmd + ["--group-column", "field"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert good.returncode == 0, good.stderr
    assert "3 classes; train 5 images, test 2; metric accuracy; 3 groups (field)" in good.stdout
    assert "largest classes: blast 2, normal 2, tungro 1" in good.stdout


def test_adapters_and_class_baselines_import_without_torch():
    code = ("import sys, fold0123.preprocessing.adapters, fold0123.preprocessing.emoji_classify, "
            "fold0123.baselines; assert 'torch' not in sys.modules, 'torch imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr


def test_class_names_yaml_would_misread_stay_text(tmp_path):
    """Folder names such as `no`, `1` or `null` are strings in competition.yml (quoted), in sorted order."""
    src = tmp_path / "src"
    for name in ("no", "1", "null"):
        image(src / "train" / name / f"{name}_a.png")
    image(src / "test/x.png", (30, 60, 90))  # not a train image's bytes (adapters.check_leaks)
    adapters.adapt_imagefolder(src, tmp_path / "root")
    assert read_competition(tmp_path / "root").class_names == ["1", "no", "null"]
    train = pd.read_csv(tmp_path / "root/train.csv", dtype=str, keep_default_na=False)
    assert dict(zip(train["object_id"], train["target"])) == {"1_a": "0", "no_a": "1", "null_a": "2"}


def test_duplicates_are_kept_when_allowed_and_label_column_cannot_be_the_id_column(tmp_path):
    src = paddy(tmp_path / "paddy")
    _csv_test_copies_train(src)
    summary = adapters.adapt_csv(src, tmp_path / "root", allow_duplicates=True)
    assert summary.test_rows == 3
    with pytest.raises(UsageError) as err:
        adapters.adapt_csv(src, tmp_path / "other", label_column="image_id")
    assert str(err.value) == "--label-column 'image_id' is the --id-column: every image would be its own class"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["paddy", "root"]
