"""fold0123.baselines (a number's rows) and data.pixel_stats: the table, honest early stopping, the skipped tag
row, the cache.

The fixture's photos carry the label (hue and a bright square follow the target), so a pixel-statistics model
must beat the constant by far; its tags follow the target too.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fold0123 import baselines
from fold0123.data import pixel_stats
from fold0123.data.folds import write_folds
from fold0123.data.layout import read_split
from fold0123.stacking import cv
from tests.conftest import ROOT, make_dataroot

NAMES = ["constant mean", "pixel statistics LightGBM", "tags LightGBM"]


def make_root(path: Path, test_tags: bool = True) -> Path:
    root = make_dataroot(path / "data", n_train=150, n_test=40, test_tags=test_tags)
    write_folds(root, k=3, batch_size=None, seed=0)
    return root


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("baselines")
    root = make_root(tmp)
    report = baselines.run_baselines(root, 3, answers=tmp / "answers.csv", seed=0, workers=1)
    return root, report


def test_the_table_has_every_row_with_finite_values(scored):
    root, report = scored
    assert [r.name for r in report.rows] == NAMES and all(r.status == "ok" for r in report.rows)
    for row in report.rows:
        numbers = [*row.fold_scores, row.cv_mean, row.cv_std, row.oof, row.answers, row.answers_fold_mean,
                   row.seconds]
        assert len(row.fold_scores) == 3 and np.isfinite(numbers).all(), row
        assert row.answers_n == len(pd.read_csv(root / "test.csv")) > 0
    out = root.parent / "data_baselines"
    assert Path(report.out) == out
    saved = json.loads((out / "baselines.json").read_text())
    assert [r["name"] for r in saved["rows"]] == NAMES and "inner_rows" not in saved["rows"][1]
    assert saved["rows"][1]["n_features"] == len(pixel_stats.FEATURES) >= 45
    markdown = (out / "baselines.md").read_text()
    assert all(f"| {name} |" in markdown for name in NAMES) and "± " in markdown
    assert not [p for p in out.iterdir() if ".tmp." in p.name]


def test_pixel_statistics_beat_the_constant_where_pixels_carry_the_label(scored):
    _, report = scored
    constant, pixels, tags = report.rows
    assert pixels.cv_mean < 0.5 * constant.cv_mean and pixels.oof < 0.5 * constant.oof
    assert pixels.answers < 0.5 * constant.answers
    assert pixels.answers_fold_mean < 0.5 * constant.answers_fold_mean
    assert tags.cv_mean < constant.cv_mean


def test_early_stopping_never_looks_at_the_scored_rows(scored):
    """Each fit's inner validation rows are its own training rows (whole series), never the fold it is scored on."""
    root, report = scored
    for row in report.rows[1:]:
        assert set(row.inner_rows) == {"3fold0", "3fold1", "3fold2", "all"}
        for split, inner in row.inner_rows.items():
            train, held_out = read_split(root, split)
            inner = set(inner)
            assert inner and inner <= set(train["object_id"]) and not inner & set(held_out["object_id"])
            in_inner = train["object_id"].isin(inner)
            assert not set(train["art_series_id"][in_inner]) & set(train["art_series_id"][~in_inner])
            assert len(inner) >= 0.2 * len(train)
            assert row.best_iterations[split] >= 1


def test_a_bagged_baseline_averages_its_seeded_members_on_one_inner_split(scored):
    """--bag N (the recipe passes its stack's lgbm.bag): the clipped mean of the models seeded seed..seed+N-1,
    all early-stopped on the same inner rows."""
    root, _ = scored
    train, held_out = read_split(root, "3fold0")
    X = pixel_stats.pixel_features(root, list(train["object_id"]) + list(held_out["object_id"]), workers=1).frame
    X_train, X_held = X.loc[train["object_id"]], X.loc[held_out["object_id"]]
    groups, n = train["art_series_id"].to_numpy(), len(train)

    def fit(bag: int):
        return cv.cross_validate(pd.concat([X_train, X_held]).to_numpy(np.float32),
                                 np.concatenate([train["target"], held_out["target"]]).astype(float),
                                 [(np.arange(n), np.arange(n, n + len(held_out)))], lgbm=baselines.LgbmOptions(
                                     params={"num_threads": 1}, early_stopping_rounds=5, bag=bag), seed=4,
                                 inner=cv.group_holdout(np.concatenate([groups, held_out["art_series_id"]]),
                                                        seed=4),
                                 clip=True)
    single, bagged = fit(1), fit(2)
    y = train["target"].to_numpy(float)
    members = [_member(train, X_train, X_held, 4, model_seed) for model_seed in (4, 5)]  # seed 4's inner split
    np.testing.assert_allclose(single.oof[n:], np.clip(members[0], y.min(), y.max()))
    np.testing.assert_allclose(bagged.oof[n:], np.clip(np.mean(members, axis=0), y.min(), y.max()))
    assert not np.allclose(bagged.oof[n:], single.oof[n:])
    np.testing.assert_array_equal(bagged.inner_rows[0], single.inner_rows[0])


def _member(train, X_train, X_held, split_seed: int, model_seed: int) -> np.ndarray:
    import lightgbm as lgb

    y = train["target"].to_numpy(float)
    inner = cv.holdout_mask(train["art_series_id"].to_numpy(), seed=split_seed)
    params = {**baselines.lgbm_options(threads=1).params, "seed": model_seed}
    X = X_train.to_numpy(np.float32)
    names = list(X_train.columns)
    dtrain = lgb.Dataset(X[~inner], label=y[~inner], feature_name=names, free_raw_data=False)
    stopped = lgb.train(params, dtrain, 10000, valid_sets=[lgb.Dataset(X[inner], label=y[inner], reference=dtrain)],
                        callbacks=[lgb.early_stopping(5, verbose=False)])
    final = lgb.train(params, lgb.Dataset(X, label=y, feature_name=names), stopped.best_iteration or 10000)
    return final.predict(X_held.to_numpy(np.float32))


def test_inner_split_takes_whole_groups_and_never_all():
    groups = np.repeat(np.arange(10), [1, 2, 3, 4, 5, 1, 2, 3, 4, 5])
    inner = cv.holdout_mask(groups, 0.2, seed=3)
    assert inner.sum() >= 0.2 * len(groups) and not inner.all()
    for g in np.unique(groups):
        assert len(set(inner[groups == g])) == 1
    assert (cv.holdout_mask(groups, 0.2, seed=3) == inner).all()
    assert cv.holdout_mask(np.array([0, 1]), 0.9).sum() == 1
    with pytest.raises(baselines.UsageError, match="at least 2 groups"):
        cv.holdout_mask(np.zeros(5))


def test_the_tag_row_is_skipped_when_test_objects_have_no_tags(tmp_path):
    root = make_root(tmp_path, test_tags=False)
    report = baselines.run_baselines(root, 3, out=tmp_path / "out", workers=1)
    tags = report.rows[2]
    assert tags.status == "skipped" and "test objects have no tags" in tags.reason
    assert report.rows[1].answers is None and np.isfinite(report.rows[1].cv_mean)
    saved = json.loads((tmp_path / "out" / "baselines.json").read_text())["rows"][2]
    assert saved["status"] == "skipped" and saved["cv_mean"] is None
    report = (tmp_path / "out" / "baselines.md").read_text()
    assert "| tags LightGBM | | skipped: the test objects have no tags" in report


def test_pixel_cache_reuses_rows_and_recomputes_a_replaced_photo(dataroot, tmp_path):
    ids = pd.read_csv(dataroot / "train.csv", dtype=str)["object_id"].tolist()[:6]
    cache = tmp_path / "px.csv"
    first = pixel_stats.pixel_features(dataroot, ids, cache, workers=1)
    assert (first.computed, first.cached) == (6, 0) and list(first.frame.index) == ids
    again = pixel_stats.pixel_features(dataroot, ids[::-1], cache, workers=1)
    assert (again.computed, again.cached) == (0, 6)
    pd.testing.assert_frame_equal(again.frame.loc[ids], first.frame)
    Image.new("RGB", (40, 20), (255, 255, 255)).save(dataroot / "photos" / f"{ids[0]}.jpg")
    changed = pixel_stats.pixel_features(dataroot, ids, cache, workers=1)
    assert (changed.computed, changed.cached) == (1, 5)
    assert changed.frame.loc[ids[0], "px_aspect"] == 2.0 and changed.frame.loc[ids[0], "px_white_share"] > 0.99
    cache.write_text("garbage\n")
    assert pixel_stats.pixel_features(dataroot, ids, cache, workers=1).computed == 6


def test_pixel_statistics_of_known_images(tmp_path):
    white = np.full((16, 32, 3), 255, np.uint8)
    stats = dict(zip(pixel_stats.FEATURES, pixel_stats.pixel_statistics(white)))
    assert stats["aspect"] == 2.0 and stats["white_share"] == 1 and stats["colourfulness"] == 0
    assert stats["edge_density"] == 0 and stats["foreground_share"] == 0 and stats["skin_share"] == 0
    framed = white.copy()
    framed[4:12, 8:24] = (220, 150, 120)  # a skin-like patch on white
    stats = dict(zip(pixel_stats.FEATURES, pixel_stats.pixel_statistics(framed)))
    assert stats["skin_share"] == pytest.approx(0.25) and stats["foreground_share"] == pytest.approx(0.25)
    assert stats["edge_density"] > 0 and stats["colourfulness"] > 0
    for mode in ("L", "CMYK"):  # greyscale and CMYK JPEGs decode like the image cache decodes them
        Image.new(mode, (300, 600)).save(tmp_path / f"{mode}.jpg")
        values = pixel_stats.photo_statistics(tmp_path / f"{mode}.jpg")
        assert len(values) == len(pixel_stats.FEATURES) and np.isfinite(values).all()
        assert values[pixel_stats.FEATURES.index("width")] == 300
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(baselines.LayoutError, match="bad.jpg: unreadable image"):
        pixel_stats.photo_statistics(tmp_path / "bad.jpg")


def test_bag_of_tags_columns(dataroot):
    ids = pd.read_csv(dataroot / "train.csv", dtype=str)["object_id"].tolist() + ["untagged"]
    bag = baselines.bag_of_tags(dataroot, ids)
    assert list(bag.index) == ids and (bag.loc["untagged"] == 0).all()
    assert set(bag.to_numpy().ravel()[:-2]) <= {0, 1, 2, 3} and bag[["n_materials", "n_techniques"]].sum().min() > 0


@pytest.mark.parametrize("args, message", [
    (["--folds", "5"], "5fold0_train.csv: split file not found"),
    (["--folds", "1"], "--folds 1: need at least 2 folds"),
    (["--answers", "missing.csv"], "missing.csv: file not found"),
])
def test_bad_input_is_one_line_error(tmp_path, args, message):
    root = make_root(tmp_path)
    with pytest.raises(SystemExit) as stop:
        baselines.main(["--dataroot", str(root), "--out", str(tmp_path / "out"), *args])
    assert str(stop.value).startswith("error: ") and message in str(stop.value) and "\n" not in str(stop.value)
    assert not (tmp_path / "out").exists()


def test_cli_writes_the_report(tmp_path, capsys):
    root = make_root(tmp_path)
    baselines.main(["--dataroot", str(root), "--out", str(tmp_path / "out"), "--answers", str(tmp_path / "answers.csv"),
                    "--pixel-cache", str(tmp_path / "px.csv")])
    printed = capsys.readouterr().out
    assert all(name in printed for name in NAMES) and (tmp_path / "px.csv").is_file()
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"baselines.json", "baselines.md"}


@pytest.mark.integration
def test_module_runs_as_a_command(tmp_path):
    root = make_root(tmp_path)
    done = subprocess.run([sys.executable, "-m", "fold0123.baselines", "--dataroot", str(root)], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "data_baselines" / "baselines.md").is_file()
