"""The stacking package on synthetic data with known answers: stacking, post-processing, ensembling,
re-distribution, pseudo labels, and the run-directory reader."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fold0123 import ensemble as ens
from fold0123.common.schema import LgbmOptions
from fold0123.data.layout import read_split, split_names, split_paths, train_columns
from fold0123.data.metrics import rmse
from fold0123.stacking import postprocess as pp
from fold0123.stacking.features import aggregate_views, build_features
from fold0123.stacking.pipeline import infold_stack, oof_stack
from fold0123.stacking.pseudo import pseudo_rows, write_pseudo_splits
from fold0123.stacking.runs import RunError, load_outputs, resolve_epoch, run_dir
from tests.conftest import make_runs, make_synthetic_dataroot, save_npz

RANGE = (0.0, 3.0)  # atmaCup's four classes
FAST = dict(num_threads=1, num_leaves=7, min_data_in_leaf=5, learning_rate=0.1)


def lgbm(params=FAST, bag=1) -> LgbmOptions:
    return LgbmOptions(params=params, num_boost_round=300, early_stopping_rounds=20, bag=bag)


def _noisy_copies(rng, y, sigmas):
    return pd.DataFrame({f"f{i}": y + s * rng.standard_normal(len(y)) for i, s in enumerate(sigmas)})


def test_stack_beats_each_single_feature():
    rng = np.random.default_rng(0)
    n = 360
    y = rng.integers(0, 4, n).astype(float)
    folds = np.arange(n) % 3
    X = _noisy_copies(rng, y, [0.6, 0.6, 0.6])
    fit = oof_stack(X, y, folds, {}, lgbm())
    cv = rmse(y, fit.oof)
    singles = [rmse(y, X[c]) for c in X]
    single_stacks = [rmse(y, oof_stack(X[[c]], y, folds, {}, lgbm()).oof) for c in X]
    assert cv < min(singles) - 0.1, (cv, singles)
    assert cv < min(single_stacks) - 0.05, (cv, single_stacks)
    assert len(fit.scores) == 3 and len(fit.best_iterations) == 3
    assert set(fit.importance["feature"]) == {"f0", "f1", "f2"}


def test_the_tuned_stack_never_sees_the_scored_folds_labels_and_says_what_it_chose():
    """`lgbm.tune`: each fold's parameters come from a study on the other folds' inner splits, so changing fold
    0's labels moves none of its predictions nor its chosen parameters; the final model is tuned on every row."""
    from fold0123.common.config import ConfigError
    from fold0123.common.schema import LgbmTuneOptions

    rng = np.random.default_rng(3)
    n = 240
    y = rng.integers(0, 4, n).astype(float)
    folds = np.arange(n) % 3
    X = _noisy_copies(rng, y, [0.5, 0.8, 1.5])
    space = {"num_leaves": {"low": 3, "high": 15}, "min_data_in_leaf": {"low": 5, "high": 40, "log": True}}
    tuned = lgbm().model_copy(update={"tune": LgbmTuneOptions(trials=4, space=space)})
    shuffled = y.copy()
    shuffled[folds == 0] = rng.permutation(y[folds == 0])
    fits = [oof_stack(X, labels, folds, {"test": X}, tuned, seed=1) for labels in (y, shuffled)]
    np.testing.assert_array_equal(fits[0].oof[folds == 0], fits[1].oof[folds == 0])
    assert fits[0].tuned[0] == fits[1].tuned[0]  # fold 0's study saw neither its rows nor their labels
    assert len(fits[0].tuned) == 4  # 3 folds + the final model; fold 1's study did see fold 0's labels:
    assert fits[0].tuned[1]["inner_score"] != fits[1].tuned[1]["inner_score"]
    chosen = fits[0].tuned[0]
    assert 3 <= chosen["num_leaves"] <= 15 and 5 <= chosen["min_data_in_leaf"] <= 40 and chosen["rounds"] >= 1
    assert fits[0].best_iterations[0] == chosen["rounds"] and fits[0].rounds == fits[0].tuned[-1]["rounds"]
    with pytest.raises(ConfigError, match="lower is better"):
        oof_stack(X, y, folds, {}, tuned.model_copy(update={"params": {**FAST, "metric": "auc"}}))


def test_a_folds_own_labels_never_choose_its_stack_or_post_processing():
    """Changing the labels of the fold being scored must not change its predictions: its level-2 rounds come
    from an inner split of the other folds, and its post-processing grid point from the other folds' rows."""
    rng = np.random.default_rng(2)
    n = 300
    y = rng.integers(0, 4, n).astype(float)
    folds = np.arange(n) % 3
    X = _noisy_copies(rng, y, [0.5, 0.8])
    target, probs = y + 0.5 * rng.standard_normal(n), rng.dirichlet(np.ones(4), n)
    shuffled = y.copy()
    shuffled[folds == 0] = rng.permutation(y[folds == 0])  # fold 0's labels changed, its features not
    fits = [oof_stack(X, labels, folds, {}, lgbm()) for labels in (y, shuffled)]
    np.testing.assert_array_equal(fits[0].oof[folds == 0], fits[1].oof[folds == 0])
    assert fits[0].best_iterations[0] == fits[1].best_iterations[0]
    stack = fits[0].oof
    nested = [pp.nested_tune(stack, target, probs, labels, folds, RANGE)[0] for labels in (y, shuffled)]
    np.testing.assert_array_equal(nested[0][folds == 0], nested[1][folds == 0])
    tuned = [pp.tune(stack, target, probs, labels, RANGE)[0] for labels in (y, shuffled)]
    assert tuned[0] != tuned[1]  # the non-nested grid point does look at fold 0's labels


def test_a_bagged_stack_is_the_mean_of_its_seeded_members():
    """`lgbm.bag`: the OOF and test predictions are the plain mean of the single stacks seeded seed, seed + 1, ...
    (with sampling on, the members differ, so neither a copy of one nor a re-seeded one passes)."""
    rng = np.random.default_rng(2)
    n = 240
    y = rng.integers(0, 4, n).astype(float)
    folds = np.arange(n) % 3
    X = _noisy_copies(rng, y, [0.6, 0.8, 1.0, 1.2])
    sampled = {**FAST, "feature_fraction": 0.5, "bagging_fraction": 0.7, "bagging_freq": 1}
    members = [oof_stack(X, y, folds, {"test": X}, lgbm(sampled), seed=7 + i) for i in range(3)]
    assert not np.allclose(members[0].oof, members[1].oof)
    bagged = oof_stack(X, y, folds, {"test": X}, lgbm(sampled, bag=3), seed=7)
    np.testing.assert_allclose(bagged.oof, np.mean([m.oof for m in members], axis=0))
    np.testing.assert_allclose(bagged.test["test"], np.mean([m.test["test"] for m in members], axis=0))
    assert bagged.scores == pytest.approx([rmse(y[folds == f], bagged.oof[folds == f]) for f in range(3)])
    assert len(bagged.best_iterations) == 3
    infold_X, infold_y = [X[folds != f] for f in range(3)], [y[folds != f] for f in range(3)]
    one = infold_stack(infold_X, infold_y, X, y, folds, {}, lgbm(sampled), seed=8)
    two = infold_stack(infold_X, infold_y, X, y, folds, {}, lgbm(sampled, bag=2), seed=7)
    first = infold_stack(infold_X, infold_y, X, y, folds, {}, lgbm(sampled), seed=7)
    np.testing.assert_allclose(two.oof, (first.oof + one.oof) / 2)


def test_out_of_fold_stack_beats_in_fold_stack_on_held_out_rows():
    """Feature `leaky` is near-perfect on the rows its model trained on (in-fold) but noisy elsewhere; `honest`
    is equally good everywhere. The in-fold stack learns to trust `leaky` and pays for it on new rows."""
    rng = np.random.default_rng(1)
    n, n_test = 300, 300
    y, y_test = rng.integers(0, 4, n).astype(float), rng.integers(0, 4, n_test).astype(float)
    folds = np.arange(n) % 3

    def table(target, leaky_sigma):
        return pd.DataFrame({"leaky": target + leaky_sigma * rng.standard_normal(len(target)),
                             "honest": target + 0.5 * rng.standard_normal(len(target))})

    X, X_test = table(y, 1.0), table(y_test, 1.0)
    infold_X = [table(y[folds != f], 0.05) for f in range(3)]
    infold_y = [y[folds != f] for f in range(3)]
    oof = oof_stack(X, y, folds, {"test": X_test}, lgbm())
    infold = infold_stack(infold_X, infold_y, X, y, folds, {"test": X_test}, lgbm())
    oof_score, infold_score = rmse(y_test, oof.test["test"]), rmse(y_test, infold.test["test"])
    assert oof_score < infold_score - 0.05, (oof_score, infold_score)


# ---- post-processing


def test_each_post_processing_step():
    stack = np.array([0.2, 1.4, 2.96, 3.5, -0.3])
    target = np.array([0.0, 2.0, 3.0, 3.0, 0.0])
    np.testing.assert_allclose(pp.blend(stack, target, 0.75), 0.75 * stack + 0.25 * target)
    np.testing.assert_allclose(pp.blend(stack, None, 0.3), stack)
    probs = np.array([[0.9, 0.1, 0, 0], [0.2, 0.7, 0.1, 0], [0, 0, 0.5, 0.5], [0.1, 0.1, 0.1, 0.7], [1, 0, 0, 0]])
    np.testing.assert_allclose(pp.onehot_override(stack, probs, 0.65), [0.0, 1.0, 2.96, 3.0, 0.0])
    np.testing.assert_allclose(pp.onehot_override(stack, probs, 0.9), [0.2, 1.4, 2.96, 3.5, 0.0])  # strict >
    np.testing.assert_allclose(pp.snap(stack, 0.05), [0.2, 1.4, 3.0, 3.5, -0.3])
    np.testing.assert_allclose(pp.snap(stack, 0.21), [0.0, 1.4, 3.0, 3.5, -0.3])
    np.testing.assert_allclose(pp.snap(np.array([0.75]), 0.25), [0.75])  # exactly at the edge: unchanged
    np.testing.assert_allclose(pp.clip(stack, RANGE), [0.2, 1.4, 2.96, 3.0, 0.0])
    steps = pp.apply_steps(stack, target, probs, pp.PostParams(ratio=0.5, thr=0.8, width=0.1), RANGE)
    assert list(steps) == list(pp.STEPS)
    np.testing.assert_allclose(steps["blend"], 0.5 * stack + 0.5 * target)
    np.testing.assert_allclose(steps["onehot"], [0.0, 1.7, 2.98, 3.25, 0.0])
    np.testing.assert_allclose(steps["snap"], [0.0, 1.7, 3.0, 3.25, 0.0])
    np.testing.assert_allclose(steps["clip"], [0.0, 1.7, 3.0, 3.0, 0.0])
    off = pp.apply_steps(stack, target, probs, pp.PostParams(), RANGE)
    np.testing.assert_allclose(off["snap"], stack)


def test_tuning_finds_the_helpful_settings_on_fixed_inputs():
    rng = np.random.default_rng(2)
    n = 400
    y = rng.integers(0, 4, n).astype(float)
    stack = y + 0.4 * rng.standard_normal(n)
    target = y + 0.4 * rng.standard_normal(n)   # independent errors: a half/half blend is best
    probs = np.full((n, 4), 0.1)
    sure = rng.random(n) < 0.3                   # a classifier that is right whenever it is confident
    probs[sure] = 0.02
    probs[sure, y[sure].astype(int)] = 0.94
    params, grid = pp.tune(stack, target, probs, y, RANGE)
    assert 0.3 <= params.ratio <= 0.7
    assert 0.5 <= params.thr < 0.94
    assert len(grid) == 11 * 7 * 7
    tuned = rmse(y, pp.apply_steps(stack, target, probs, params, RANGE)["clip"])
    assert tuned == pytest.approx(grid["rmse"].min())
    assert tuned < rmse(y, pp.clip(stack, RANGE)) - 0.1
    # a useless target prediction and a useless classifier: tuning switches both off
    params, _ = pp.tune(stack, rng.standard_normal(n) * 5, np.full((n, 4), 0.25), y, RANGE)
    assert params.ratio == 1.0 and params.thr > 1
    table = pp.step_table(pp.apply_steps(stack, target, probs, params, RANGE), y, np.arange(n) % 4)
    assert list(table.index) == list(pp.STEPS) and {"fold0", "fold3", "mean", "std", "oof"} <= set(table.columns)


# ---- probability ensembling and re-distribution


def test_weighted_ensemble_on_hand_made_probabilities():
    a = np.array([[1.0, 0, 0, 0], [0.5, 0.5, 0, 0]])
    b = np.array([[0, 1.0, 0, 0], [0, 0, 0.5, 0.5]])
    w = ens.ensemble_weights([0.8, 0.4], factor=1)            # accuracy-like: the first is better
    np.testing.assert_allclose(w, [2 / 3, 1 / 3])
    out, summary, _ = ens.mix({"a": ens.ArrayRows(a), "b": ens.ArrayRows(b)}, w)
    np.testing.assert_allclose(out, [[2 / 3, 1 / 3, 0, 0], [1 / 3, 1 / 3, 1 / 6, 1 / 6]], rtol=1e-6)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-6)  # a probability, not a mean of weights / count
    assert summary.labels.tolist() == [0, 0] and summary.top5[1, :2].tolist() == [0, 1]  # ties: the lower class
    with pytest.raises(ValueError, match="differ in shape"):
        ens.mix({"a": ens.ArrayRows(a), "b": ens.ArrayRows(b[:, :3])}, w)
    w = ens.ensemble_weights([0.4, 0.8], factor=1, lower_is_better=True)   # RMSE-like: the first is better
    np.testing.assert_allclose(w, [2 / 3, 1 / 3])
    w = ens.ensemble_weights([0.9, 0.8, 0.85], factor=25)
    assert np.isfinite(w).all() and w.sum() == pytest.approx(1) and np.argmax(w) == 0
    np.testing.assert_allclose(w[1] / w[0], (0.8 / 0.9) ** 25)
    np.testing.assert_allclose(ens.ensemble_weights([0.5, 0.5, 0.7], factor=0), [1 / 3] * 3)
    with pytest.raises(ValueError):
        ens.ensemble_weights([0.0, 0.5])


def test_redistribution_gives_every_class_k_and_moves_no_object_twice():
    rng = np.random.default_rng(3)
    probs = rng.dirichlet([5, 3, 1, 0.3], size=60)
    before = np.bincount(probs.argmax(axis=1), minlength=4)
    assert before.min() < 6
    out = ens.redistribute_labels(probs, 6)
    assert out.after.min() >= 6 and out.after.sum() == 60
    np.testing.assert_array_equal(out.before, before)
    moved = np.flatnonzero(out.labels != probs.argmax(axis=1))  # each object once, to a class that was short
    assert (before[out.labels[moved]] < 6).all() and (before[probs.argmax(axis=1)[moved]] > 6).all()
    assert len(moved) == int(np.maximum(6 - before, 0).sum())  # no more moves than the shortfall


def test_redistribution_resolves_two_short_classes_wanting_the_same_object():
    # class 0 holds everything; classes 1 and 2 each need one; object 0 is both's favourite
    probs = np.array([[0.40, 0.35, 0.25, 0.0],
                      [0.70, 0.30, 0.00, 0.0],
                      [0.80, 0.00, 0.20, 0.0],
                      [0.90, 0.05, 0.05, 0.0]])
    out = ens.redistribute_labels(probs, 1)
    # object 0 goes to class 1 (0.35 > 0.25); class 2 does not overwrite it but takes its next best, object 2;
    # class 3 takes the best remaining object of class 0 (ties -> lowest index), leaving class 0 with one.
    assert out.labels.tolist() == [1, 3, 2, 0]
    assert out.after.tolist() == [1, 1, 1, 1]
    # impossible (n < K * C): still a labelling of every object, each moved at most once
    out = ens.redistribute_labels(probs, 2)
    assert out.after.sum() == 4


# ---- synthetic run directories: reader, features, pseudo labels


@pytest.fixture
def synth(tmp_path):
    root = make_synthetic_dataroot(tmp_path / "data", n_train=120, n_test=40)
    make_runs(tmp_path / "runs", root, epochs=3)
    return root, tmp_path / "runs"


def test_runs_resolve_epochs_and_fail_clearly(synth):
    root, runs = synth
    folds = [f"3fold{i}" for i in range(3)]
    assert resolve_epoch(runs, "target", folds, "last") == 3
    assert resolve_epoch(runs, "target", folds, 2) == 2
    for split in folds:  # make epoch 2 the best on every fold
        path = run_dir(runs, "target", split) / "eval" / "epoch2_metrics.json"
        metrics = json.loads(path.read_text())
        metrics["views"]["mean"]["rmse"] = 0.01
        path.write_text(json.dumps(metrics))
    assert resolve_epoch(runs, "target", folds, "best") == 2
    for split in folds:  # materialstechniques' primary (cosine) is higher-is-better: make epoch 1 the best
        path = run_dir(runs, "materialstechniques", split) / "eval" / "epoch1_metrics.json"
        metrics = json.loads(path.read_text())
        assert (metrics["primary"], metrics["lower_is_better"]) == ("cosine", False)  # from the task table
        metrics["views"]["mean"]["cosine"] = 0.999
        path.write_text(json.dumps(metrics))
    assert resolve_epoch(runs, "materialstechniques", folds, "best") == 1
    with pytest.raises(RunError, match=r"target_3fold0.*epoch 7"):
        resolve_epoch(runs, "target", folds, 7)
    lagging = run_dir(runs, "onehot", "3fold1") / "eval" / "epoch3_metrics.json"
    lagging.rename(lagging.with_suffix(".hidden"))  # fold 1 has not evaluated epoch 3 yet
    with pytest.raises(RunError, match=r"onehot_3fold1: newest evaluated epoch 2, the other folds' 3"):
        resolve_epoch(runs, "onehot", folds, "last")  # never a silent fall-back to epoch 2 for every fold
    assert resolve_epoch(runs, "onehot", folds, 2) == 2
    lagging.with_suffix(".hidden").rename(lagging)
    with pytest.raises(RunError, match=r"nosuch_3fold0: run directory not found"):
        build_features(root, runs, {"nosuch": "last"})
    (run_dir(runs, "target", "all") / "eval" / "epoch3_test.npz").unlink()
    with pytest.raises(RunError, match=r"target_all/eval/epoch3_test.npz: missing"):
        build_features(root, runs, {"target": "last"}, test_features="all")
    fs = build_features(root, runs, {"target": "last"}, test_features="fold_mean")
    assert list(fs.test) == ["fold_mean"] and fs.notes


def test_loading_is_cached_until_the_file_changes(synth):
    root, runs = synth
    run = run_dir(runs, "target", "3fold0")
    first = load_outputs(run, 1, "oof")
    assert load_outputs(run, 1, "oof") is first
    save_npz(run / "eval" / "epoch1_oof.npz", first.ids, np.zeros_like(first.outputs) + 7)
    again = load_outputs(run, 1, "oof")
    assert again is not first and float(again.outputs[0, 0, 0]) == 7


def test_features_are_out_of_fold_and_aggregate_the_views(synth):
    root, runs = synth
    fs = build_features(root, runs, {"target": "last", "onehot": "last"}, aggregations="mean,max,min,var",
                        raw_views=True, infold=True)
    train = pd.read_csv(root / "train.csv", dtype={"object_id": str})
    assert list(fs.train.index) == train["object_id"].tolist()
    assert fs.train.shape[1] == (4 + 8) * 1 + (4 + 8) * 4
    # one object: its features are its held-out fold run's views, aggregated
    oid = fs.train.index[5]
    fold = int(fs.folds[5])
    out = load_outputs(run_dir(runs, "onehot", f"3fold{fold}"), 3, "oof")
    views = out.outputs[list(out.ids).index(oid)]
    np.testing.assert_allclose(fs.train.loc[oid, "onehot_var_2"], views[:, 2].var(), rtol=1e-5)
    np.testing.assert_allclose(fs.train.loc[oid, "onehot_max_0"], views[:, 0].max(), rtol=1e-5)
    np.testing.assert_allclose(fs.train.loc[oid, "onehot_hv_1"], views[3, 1], rtol=1e-5)
    held = pd.read_csv(split_paths(root, f"3fold{fold}")[1], dtype={"object_id": str})["object_id"]
    assert oid in set(held)
    # fold_mean test features = mean of the fold runs' aggregated test features
    tid = fs.test["fold_mean"].index[0]
    per_fold = []
    for i in range(3):
        t = load_outputs(run_dir(runs, "target", f"3fold{i}"), 3, "test")
        per_fold.append(t.outputs[list(t.ids).index(tid), :, 0].min())
    np.testing.assert_allclose(fs.test["fold_mean"].loc[tid, "target_min_0"], np.mean(per_fold), rtol=1e-5)
    # in-fold tables: fold k's own train rows only
    for k, table in enumerate(fs.infold):
        assert set(table.index).isdisjoint(set(held)) if k == fold else True
        assert len(table) == int((fs.folds != k).sum())
    frame = aggregate_views(np.arange(16, dtype=np.float32).reshape(1, 8, 2), ["mean", "var"], prefix="x_")
    assert list(frame.columns) == ["x_mean_0", "x_mean_1", "x_var_0", "x_var_1"]
    np.testing.assert_allclose(frame.iloc[0], [7, 8, 21, 21])


def test_pseudo_rows_never_enter_a_validation_part(synth):
    root, _ = synth
    test_ids = pd.read_csv(root / "test.csv", dtype={"object_id": str})["object_id"].to_numpy()
    rng = np.random.default_rng(4)
    probs = rng.dirichlet([1, 1, 1, 1], size=len(test_ids))
    train = pd.read_csv(root / "train.csv", dtype={"object_id": str})
    rows = pseudo_rows(test_ids, probs.argmax(axis=1), probs.max(axis=1), 0.45, train, train_columns(root),
                       "art_series_id")
    assert 0 < len(rows) < len(test_ids)
    assert (probs[np.isin(test_ids, rows["object_id"])].max(axis=1) >= 0.45).all()
    np.testing.assert_array_equal(rows["target"], probs[np.isin(test_ids, rows["object_id"])].argmax(axis=1))
    assert rows["art_series_id"].str.startswith("pseudo-").all() and rows["sorting_date"].notna().all()
    written = write_pseudo_splits(root, 3, 1, rows)
    assert len(written) == 2 * len(split_names(3))
    pseudo_ids = set(rows["object_id"])
    for split in split_names(3):
        new_train, new_held = read_split(root, f"{split}_pseudo1")   # the layout reader accepts them
        old_train, _ = read_split(root, split)
        old_test_path = split_paths(root, split)[1]
        assert split_paths(root, f"{split}_pseudo1")[1].read_bytes() == old_test_path.read_bytes()
        if split != "all":
            assert pseudo_ids.isdisjoint(new_held["object_id"])
        assert pseudo_ids <= set(new_train["object_id"])
        assert len(new_train) == len(old_train) + len(rows)
        assert (new_train.set_index("object_id").loc[list(pseudo_ids), "pseudo"] == 1).all()
        assert (new_train.set_index("object_id").loc[old_train["object_id"], "pseudo"] == 0).all()
    # a second round built on the first replaces the pseudo rows instead of stacking them up
    write_pseudo_splits(root, 3, 2, rows.iloc[:3], base_suffix="_pseudo1")
    assert len(read_split(root, "3fold0_pseudo2")[0]) == len(read_split(root, "3fold0")[0]) + 3
    # ... or, cumulative, keeps the first round's rows and relabels those the new round names again
    relabelled = rows.iloc[:3].assign(target=(rows["target"].iloc[:3] + 1) % 4)
    write_pseudo_splits(root, 3, 2, relabelled, base_suffix="_pseudo1", cumulative=True)
    round2 = read_split(root, "3fold0_pseudo2")[0].set_index("object_id")
    assert len(round2) == len(read_split(root, "3fold0")[0]) + len(rows) and round2.index.is_unique
    np.testing.assert_array_equal(round2.loc[relabelled["object_id"], "target"], relabelled["target"])
    with pytest.raises(ValueError, match="train.csv row"):
        write_pseudo_splits(root, 3, 3, rows.assign(object_id=train["object_id"].iloc[: len(rows)].to_numpy()))


def test_stacking_imports_no_torch():
    """Every module of the stacking, reports and ablation rooms, the ensemble and the baselines, and the shared
    readers and scorer they use, import without torch (the synthetic runs of these tests may: they take their
    metrics from the task table)."""
    code = ("import importlib, pkgutil, sys, stack, ablation, fold0123.ensemble, fold0123.baselines, "
            "fold0123.data.answers, fold0123.data.pixel_stats\n"
            "for room in ('stacking', 'reports', 'ablation'):\n"
            "    package = importlib.import_module(f'fold0123.{room}')\n"
            "    for m in pkgutil.iter_modules(package.__path__):\n"
            "        importlib.import_module(f'fold0123.{room}.{m.name}')\n"
            "sys.exit('torch imported' if 'torch' in sys.modules else 0)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_runs_without_done_are_refused_naming_each_unless_allowed(synth):
    """A fold run still training (or failed) was stacked with no warning (issue 22): every chosen run without
    DONE is named in one line, before any feature is built; `allow_unfinished: true` stacks them anyway."""
    from fold0123.common import rundir
    from fold0123.common.config import load_config
    from fold0123.common.schema import StackConfig
    from tests.conftest import ROOT

    root, runs = synth
    rundir.done_path(run_dir(runs, "target", "3fold1")).unlink()
    rundir.done_path(run_dir(runs, "onehot", "all")).unlink()
    with pytest.raises(RunError) as err:
        build_features(root, runs, {"target": "last", "onehot": "last"})
    assert str(err.value) == (
        f"2 run(s) without DONE (still training or failed): {run_dir(runs, 'target', '3fold1')}, "
        f"{run_dir(runs, 'onehot', 'all')}; finish them, or set allow_unfinished: true to stack them")
    fs = build_features(root, runs, {"target": "last", "onehot": "last"}, allow_unfinished=True)
    assert [c.exp for c in fs.runs] == ["target", "onehot"]
    cfg = load_config(ROOT / "parameters/stack.yml", ["allow_unfinished=true"], schema=StackConfig)
    assert cfg.allow_unfinished and not StackConfig.model_fields["allow_unfinished"].default
