"""preprocessing.emoji_classify: the emoji subcategory benchmark, built for real from the pinned package (about 6 s;
npm downloads it once into ~/.cache/fold0123/npm), then turned into a dataroot by the ImageFolder adapter.

Checked: the classes (every subcategory with at least MIN_SERIES base emoji, nothing else), series-disjoint and
class-stratified test images, no hexcode or emoji name anywhere public (names, contents, ids shared with the era
set), the answers only in the private folder and consistent with the dataroot's classes, photos on white, reuse.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fold0123.data.competition import read_competition
from fold0123.preprocessing import emoji, emoji_classify
from fold0123.common.build import BuildError, salted_id


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("emoji_classify")
    summary = emoji_classify.build_dataset(tmp / "raw", tmp / "private")
    adapted = emoji_classify.make_dataroot(tmp / "raw", tmp / "root", rebuilt=True)
    return tmp, summary, adapted


def test_classes_are_the_subcategories_with_enough_series(built):
    tmp, summary, adapted = built
    ids = pd.read_csv(tmp / "private/ids.csv", dtype=str, keep_default_na=False)
    series_per_class = ids.groupby("subcategory")["series"].nunique()
    assert series_per_class.min() >= emoji_classify.MIN_SERIES
    assert set(summary.dropped) & set(series_per_class.index) == set()
    assert min(summary.dropped.values()) >= 1 and max(summary.dropped.values()) < emoji_classify.MIN_SERIES
    assert 80 <= summary.classes == len(series_per_class) <= 100
    folders = sorted(p.name for p in (tmp / "raw/train").iterdir())
    assert folders == read_competition(tmp / "root").class_names == sorted(series_per_class.index)
    assert adapted.classes == summary.classes and adapted.group_column == "series"
    counts = ids["subcategory"].value_counts()
    assert counts.max() >= 20 * counts.min()  # imbalanced as Unicode made it
    assert summary.rows == len(ids) == summary.train_rows + summary.test_rows
    # every dropped image is accounted for: kept + dropped = the package's images
    assert summary.rows + summary.dropped_rows == len(emoji.read_emoji_datasource(
        emoji.fetch_package(emoji.EMOJI_DATASOURCE))[0])


def test_test_split_is_series_disjoint_stratified_and_about_a_fifth(built):
    tmp, summary, _ = built
    ids = pd.read_csv(tmp / "private/ids.csv", dtype=str, keep_default_na=False)
    test = ids["split"] == "test"
    assert set(ids["series"][test]) & set(ids["series"][~test]) == set()
    assert 0.17 < test.mean() < 0.23
    assert set(ids["subcategory"][test]) == set(ids["subcategory"])  # every class has test images
    assert (ids[~test].groupby("subcategory").size() >= 3).all()
    # a base and its skin-tone variants are one series
    assert ids.groupby("base_hexcode")["series"].nunique().max() == 1
    assert ids.groupby("series")["base_hexcode"].nunique().max() == 1
    # the public files agree: test/ holds exactly the test ids, groups.csv exactly the train images
    assert sorted(p.stem for p in (tmp / "raw/test").iterdir()) == sorted(ids["object_id"][test])
    groups = pd.read_csv(tmp / "raw/groups.csv", dtype=str)
    assert list(groups.columns) == ["image", "series"]
    assert sorted(groups["image"]) == sorted(f"train/{c}/{i}.png" for i, c in
                                             zip(ids["object_id"][~test], ids["subcategory"][~test]))
    root_train = pd.read_csv(tmp / "root/train.csv", dtype=str)
    assert dict(zip(root_train["object_id"], root_train["series"])) == dict(
        zip(ids["object_id"][~test], ids["series"][~test]))


def _public_files(tmp: Path) -> list[Path]:
    return [p for folder in ("raw", "root") for p in (tmp / folder).rglob("*") if p.is_file() or p.is_symlink()]


def test_no_hexcode_or_emoji_name_reaches_the_public_folders(built):
    tmp, summary, _ = built
    ids = pd.read_csv(tmp / "private/ids.csv", dtype=str, keep_default_na=False)
    classes = set(read_competition(tmp / "root").class_names)
    layout_words = {c.lower() for c in classes} | {"train", "test"}  # 'train' is also the name of U+1F686
    secrets = {s.lower() for s in [*ids["hexcode"], *ids["base_hexcode"], *ids["short_name"]]} - layout_words
    assert len(secrets) > 3000
    tokens = set()
    for path in _public_files(tmp):
        tokens.update(path.relative_to(tmp).as_posix().lower().replace(".", "/").split("/"))
        if path.suffix in (".csv", ".json", ".yml"):
            tokens.update(re.split(r"[\s,/\"':{}\[\]]+", path.read_text().lower()))
    assert tokens & secrets == set()
    # ids are salted apart from the era dataset's: no join with its techniques.csv (which names subcategories)
    era_ids = {salted_id(emoji.ID_SALT, kind, h) for h in ids["hexcode"] for kind in ("object", "series")}
    assert era_ids & set(ids["object_id"]) == set() and era_ids & set(ids["series"]) == set()
    assert not any(p.name in ("answers.csv", "ids.csv") for p in _public_files(tmp))


def test_answers_are_private_and_match_the_dataroot(built):
    tmp, _, _ = built
    answers = pd.read_csv(tmp / "private/answers.csv", dtype={"object_id": str})
    assert list(answers.columns) == ["object_id", "target", "label"]
    root_test = pd.read_csv(tmp / "root/test.csv", dtype=str)["object_id"]
    assert sorted(answers["object_id"]) == sorted(root_test)
    classes = read_competition(tmp / "root").class_names
    assert [classes[t] for t in answers["target"]] == answers["label"].tolist()
    ids = pd.read_csv(tmp / "private/ids.csv", dtype=str, keep_default_na=False).set_index("object_id")
    assert ids.loc[answers["object_id"], "subcategory"].tolist() == answers["label"].tolist()
    # the dataroot's train targets follow the same class order
    train = pd.read_csv(tmp / "root/train.csv", dtype={"object_id": str})
    assert [classes[t] for t in train["target"]] == ids.loc[train["object_id"], "subcategory"].tolist()


def test_photos_are_rgb_on_white_and_linked_from_the_dataroot(built):
    tmp, _, _ = built
    first = sorted((tmp / "raw/test").iterdir())[0]
    with Image.open(first) as img:
        assert (img.format, img.mode, img.size) == ("PNG", "RGB", (64, 64))
        pixels = np.asarray(img)
    assert (pixels[0, 0] == 255).all()  # the transparent corner became white
    link = tmp / "root/photos" / f"{first.stem}.jpg"
    assert link.is_symlink() and link.resolve() == first.resolve()


def test_a_build_is_reused_refused_when_made_otherwise_and_written_whole(built, tmp_path):
    tmp, summary, _ = built
    again = emoji_classify.build_dataset(tmp / "raw", tmp / "private")
    assert again.reused and again.classes == summary.classes
    assert emoji_classify.make_dataroot(tmp / "raw", tmp / "root", rebuilt=False) is None  # reused as well
    with pytest.raises(BuildError, match=r"built with other options \(seed 0 -> 1\); pass --force"):
        emoji_classify.build_dataset(tmp / "raw", tmp / "private", seed=1)
    (tmp_path / "raw").mkdir()
    with pytest.raises(BuildError, match="holds no dataset.json"):
        emoji_classify.build_dataset(tmp_path / "raw")
    with pytest.raises(BuildError, match="must lie beside --out"):
        emoji_classify.build_dataset(tmp_path / "out", tmp_path / "out" / "private")
    marker = json.loads((tmp / "raw/dataset.json").read_text())
    assert marker["builder"] == emoji_classify.BUILDER and marker["classes"] == summary.classes
    assert not [p for p in tmp.iterdir() if ".tmp." in p.name]
    assert emoji_classify.private_default("datasets/emoji_classify_raw") == Path("datasets/emoji_classify_private")
