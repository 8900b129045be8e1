"""fold0123.baselines on a tiny classification dataroot whose photos' colours carry the class.

The majority-class constant must score exactly the majority's share (recomputed here by hand, per fold and on the
answers); the pixel-statistics LightGBM must beat it by far; early stopping must only ever look at rows of the
fit's own training part, in whole series; the metric is the spec's.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from sklearn.metrics import f1_score

from fold0123.common.errors import LayoutError
from fold0123.data.folds import plan_folds
from fold0123 import baselines as cb

CLASSES = ["blue", "green", "red"]
COLOURS = [(40, 40, 210), (40, 200, 40), (210, 40, 40)]
SHARES = [0.25, 0.25, 0.5]  # red is the majority


def write_spec(root: Path, **changes) -> None:
    spec = {"name": "colours", "kind": "classification", "metric": "accuracy", "classes": CLASSES,
            "group_column": "series", "columns": [], **changes}
    (root / "competition.yml").write_text(yaml.safe_dump(spec))


def make_classroot(root: Path, n: int = 96, seed: int = 0) -> Path:
    """train.csv (object_id, target, series), test.csv, photos, competition.yml, 3 group folds and `all`; the
    answers (object_id, target, label) beside the dataroot."""
    rng = np.random.default_rng(seed)
    (root / "photos").mkdir(parents=True)
    rows, series = [], 0
    while len(rows) < n:
        target = int(rng.choice(3, p=SHARES))
        for _ in range(int(rng.integers(1, 4))):
            rows.append({"object_id": f"o{len(rows):03d}", "target": target, "series": f"s{series:03d}"})
        series += 1
    frame = pd.DataFrame(rows[:n])
    for row in frame.itertuples():
        pixels = np.clip(np.array(COLOURS[row.target]) + rng.normal(0, 20, (16, 16, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / "photos" / f"{row.object_id}.jpg", quality=95)
    is_test = frame["series"].isin(frame["series"].drop_duplicates().iloc[-12:])
    train, test = frame[~is_test].reset_index(drop=True), frame[is_test]
    train.to_csv(root / "train.csv", index=False)
    test[["object_id"]].to_csv(root / "test.csv", index=False)
    test.assign(label=[CLASSES[t] for t in test["target"]])[["object_id", "target", "label"]].to_csv(
        root.parent / "answers.csv", index=False)
    write_spec(root)
    plan = plan_folds(train["target"], train["series"], 3, None, 0)
    for k in range(3):
        train[plan.fold != k].to_csv(root / f"3fold{k}_train.csv", index=False)
        train[plan.fold == k].to_csv(root / f"3fold{k}_test.csv", index=False)
    train.to_csv(root / "all_train.csv", index=False)
    test[["object_id"]].to_csv(root / "all_test.csv", index=False)
    return root


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    root = make_classroot(tmp_path_factory.mktemp("classes") / "data")
    report = cb.run_baselines(root, answers=root.parent / "answers.csv", workers=1)
    return root, report


def _majority_share(train_targets, scored_targets) -> float:
    majority = np.bincount(train_targets, minlength=3).argmax()
    return float(np.mean(np.asarray(scored_targets) == majority))


def test_the_constant_scores_the_majority_share(scored):
    root, report = scored
    constant = report.rows[0]
    assert constant.name == "majority class" and constant.metric == "accuracy"
    train = pd.read_csv(root / "train.csv", dtype={"object_id": str}).set_index("object_id")
    for k, value in enumerate(constant.fold_scores):
        part = pd.read_csv(root / f"3fold{k}_train.csv", dtype={"object_id": str})["object_id"]
        held = pd.read_csv(root / f"3fold{k}_test.csv", dtype={"object_id": str})["object_id"]
        assert value == pytest.approx(_majority_share(train.loc[part, "target"], train.loc[held, "target"]))
    answers = pd.read_csv(root.parent / "answers.csv")
    assert constant.answers == pytest.approx(_majority_share(train["target"], answers["target"]))
    assert constant.answers == constant.answers_fold_mean and constant.answers_n == len(answers)
    assert report.facts["majority_class"] == "red"
    assert report.facts["majority_share"] == pytest.approx(np.mean(train["target"] == 2))


def test_pixel_statistics_beat_the_constant_where_colours_carry_the_class(scored):
    _, report = scored
    constant, pixels = report.rows
    assert pixels.name == "pixel statistics LightGBM" and pixels.n_features >= 45
    assert pixels.cv_mean >= 0.9 and pixels.cv_mean > constant.cv_mean + 0.3
    assert pixels.oof >= 0.9 and pixels.answers >= 0.9 and pixels.answers_fold_mean >= 0.9
    assert set(pixels.best_iterations) == {"3fold0", "3fold1", "3fold2", "all"}


def test_early_stopping_sees_only_its_own_training_rows_in_whole_series(scored):
    root, report = scored
    pixels = report.rows[1]
    train = pd.read_csv(root / "train.csv", dtype=str).set_index("object_id")
    for split, inner in pixels.inner_rows.items():
        part = set(pd.read_csv(root / f"{split}_train.csv", dtype=str)["object_id"])
        held = set(pd.read_csv(root / f"{split}_test.csv", dtype=str)["object_id"])
        assert inner and set(inner) <= part and not set(inner) & held
        inner_series = set(train.loc[inner, "series"])
        outer_series = set(train.loc[sorted(part - set(inner)), "series"])
        assert not inner_series & outer_series
        assert 0.1 < len(inner) / len(part) < 0.35


def test_the_report_is_written_whole(scored):
    root, report = scored
    out = root.parent / "data_baselines"
    assert Path(report.out) == out
    saved = json.loads((out / "class_baselines.json").read_text())
    assert [r["name"] for r in saved["rows"]] == ["majority class", "pixel statistics LightGBM"]
    assert "inner_rows" not in saved["rows"][1] and saved["facts"]["classes"] == 3
    assert "| majority class |" in (out / "class_baselines.md").read_text()
    assert not [p for p in out.iterdir() if ".tmp." in p.name]


def test_the_metric_is_the_specs(tmp_path):
    root = make_classroot(tmp_path / "data")
    write_spec(root, metric="macro_f1")
    data = cb.load_splits(root)
    row = cb.score_model("majority class", data, answers=root.parent / "answers.csv")
    answers = pd.read_csv(root.parent / "answers.csv")
    majority = np.bincount(data.y).argmax()
    assert row.metric == "macro_f1" and row.answers == pytest.approx(
        f1_score(answers["target"], np.full(len(answers), majority), average="macro"))
    write_spec(root, metric="top5_accuracy")
    assert cb.score_model("c", cb.load_splits(root)).cv_mean == 1.0  # 3 classes: all in the top 5


def test_bad_inputs_are_one_line(tmp_path):
    root = make_classroot(tmp_path / "data")
    (root / "3fold1_test.csv").unlink()
    with pytest.raises(SystemExit) as err:
        cb.main(["--dataroot", str(root)])
    assert err.value.code == (f"error: {root}/3fold1_test.csv: split file not found (run SGKFold.py --dataroot "
                              f"{root} --k 3)")
    root = make_classroot(tmp_path / "data2")
    answers = pd.read_csv(root.parent / "answers.csv")
    answers.iloc[1:].to_csv(tmp_path / "short.csv", index=False)
    data = cb.load_splits(root)
    with pytest.raises(LayoutError, match=r"test predictions: missing 1 of|object_ids not in"):
        cb.score_model("c", data, answers=tmp_path / "short.csv")
    train = pd.read_csv(root / "train.csv", dtype=str)
    train.loc[4, "target"] = "3"
    train.to_csv(root / "train.csv", index=False)
    with pytest.raises(LayoutError) as bad:
        cb.load_splits(root)
    assert str(bad.value) == f"{root}/train.csv: row 6: column 'target': 3 outside 0..2"
    write_spec(root, kind="regression", metric="rmse", classes=None)  # a number: the regression rows' split
    assert cb.load_splits(root).classes == 0


def test_a_second_fit_of_the_same_model_is_read_from_the_cache(scored, tmp_path):
    """The pixel row's predictions are kept by the digest of what they depend on (not the thread count): the same
    model again reads them, with the same scores; another seed fits again; an unreadable entry is fit again."""
    root, report = scored
    cache = cb.predictions_cache(root)
    (entry,) = cache.glob("*.npz")  # the pixel row's; the constant is not cached
    again = cb.run_baselines(root, answers=root.parent / "answers.csv", out=tmp_path / "again", workers=1,
                             threads=2).rows[1]
    first = report.rows[1]
    assert not first.cached and again.cached and again.seconds >= again.cached_seconds > 0
    for key in ("fold_scores", "oof", "answers", "answers_fold_mean", "best_iterations", "inner_rows"):
        assert getattr(again, key) == getattr(first, key), key
    assert "(cached) |" in (tmp_path / "again" / "class_baselines.md").read_text()
    # the photos' features too, from the dataroot's one cache, though this run writes its reports elsewhere
    facts = json.loads((tmp_path / "again" / "class_baselines.json").read_text())["facts"]
    assert facts["pixel_stats"].startswith("0 computed, ") and str(cb.default_out(root)) in facts["pixel_stats"]

    other = cb.run_baselines(root, out=tmp_path / "seed1", workers=1, seed=1).rows[1]
    assert not other.cached and len(list(cache.glob("*.npz"))) == 2

    entry.write_bytes(b"not an npz")
    refit = cb.run_baselines(root, answers=root.parent / "answers.csv", out=tmp_path / "refit", workers=1).rows[1]
    assert not refit.cached and refit.fold_scores == first.fold_scores
    assert cb._read_predictions(entry) is not None  # written again, whole
