"""Competitions other than atmaCup #11: the spec (competition.yml), K-class and regression layouts, folds without
groups, the classify task and the ensemble's submission, end to end on a tiny K = 7 dataroot."""
from __future__ import annotations

import re
import subprocess

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from fold0123.common.errors import LayoutError
from fold0123.data.competition import read_competition, score
from fold0123.data.folds import write_folds
from fold0123.data.layout import read_split, read_train
from fold0123.models.tasks import get_task
from tests.conftest import ROOT, make_class_dataroot, tiny_config


def test_no_package_module_hard_codes_atmacups_four_classes():
    """Everything below the adapters asks the spec; only the atmaCup emoji builder knows its four eras."""
    found = subprocess.run(["grep", "-rnE", r"N_CLASSES|clip\(.*, 0, 3\)|\brange\(4\)", "--include=*.py",
                            str(ROOT / "fold0123")], capture_output=True, text=True).stdout
    assert found == "", found


def test_spec_defaults_are_atmacup_and_a_bad_spec_is_one_line(tmp_path):
    atmacup = read_competition(tmp_path)
    assert (atmacup.kind, atmacup.metric, atmacup.n_classes, atmacup.group_column) == ("ordinal", "rmse", 4,
                                                                                        "art_series_id")
    assert atmacup.train_columns == ("object_id", "sorting_date", "art_series_id", "target")
    for text, message in (("kind: multilabel\n", "key 'kind'"), ("kind: regression\nmetric: accuracy\n", "rmse"),
                          ("classes: [a, a]\n", "duplicate class"), ("kind: [\n", "not valid YAML"),
                          ("metrik: rmse\n", "key 'metrik'"),
                          ("kind: ordinal\nmetric: rmse\nkind: regression\n",
                           "key 'kind' given twice \\(lines 1 and 3\\)")):
        (tmp_path / "competition.yml").write_text(text)
        with pytest.raises(LayoutError, match=message) as err:
            read_competition(tmp_path)
        assert "\n" not in str(err.value) and "competition.yml" in str(err.value)


def test_metrics_against_their_definitions():
    y = np.array([0, 1, 2, 2, 6])
    probs = np.eye(7)[[0, 2, 2, 1, 6]] * 0.5 + 0.5 / 7
    assert score("accuracy", y, probs) == pytest.approx(0.6)
    assert score("macro_f1", y, probs) == pytest.approx(f1_score(y, probs.argmax(1), average="macro"))
    # top-5: the true class among the five most probable; a uniform row ranks classes by index (stable)
    uniform = np.full((5, 7), 1 / 7)
    assert score("top5_accuracy", y, uniform) == pytest.approx(0.8)
    assert score("rmse", y, y + 1.0) == pytest.approx(1.0)


def test_a_k_class_layout_validates_by_its_spec_and_folds_without_groups(tmp_path):
    root = make_class_dataroot(tmp_path / "data", k=7)
    competition = read_competition(root)
    assert competition.n_classes == 7 and competition.train_columns == ("object_id", "target")
    train = read_train(root)  # no sorting_date, no art_series_id: the spec does not ask for them
    assert train["target"].max() == 6
    report = write_folds(root, k=3, batch_size=None, seed=0)
    assert len(report.overall) == 7
    held_out = [read_split(root, f"3fold{i}")[1] for i in range(3)]
    assert sorted(pd.concat(held_out)["object_id"]) == sorted(train["object_id"])
    for part in held_out:  # stratified: every class in every fold (12 rows per class, 3 folds)
        assert part["target"].nunique() == 7
    bad = pd.read_csv(root / "train.csv")
    bad.loc[3, "target"] = 7
    bad.to_csv(root / "train.csv", index=False)
    with pytest.raises(LayoutError, match=r"train.csv: row 5: column 'target': 7 outside 0..6"):
        read_train(root)


def test_a_regression_target_is_stratified_on_deciles_and_scored_unclipped(tmp_path):
    root = make_class_dataroot(tmp_path / "data", k=7)
    (root / "competition.yml").write_text("kind: regression\nmetric: rmse\nclasses: null\ngroup_column: null\n"
                                          "columns: []\n")
    frame = pd.read_csv(root / "train.csv")
    frame["target"] = frame["target"] * 10.5 - 3.25  # any float, outside 0..3 too
    frame.to_csv(root / "train.csv", index=False)
    assert read_train(root)["target"].min() == -3.25
    write_folds(root, k=3, batch_size=None, seed=0)
    task = get_task("target")
    metrics = task.metrics(np.full((len(frame), 1), 100.0), read_train(root), root)
    assert "rmse_clipped" not in metrics and metrics["rmse"] > 50


@pytest.fixture(scope="module")
def classify_runs(tmp_path_factory):
    """classify runs (resnet18, 32 px, 1 epoch) on the 3 folds and `all` of a K = 7 dataroot, evaluated."""
    import torch

    from fold0123.engine.evaluator import evaluate_checkpoint
    from fold0123.engine.trainer import train

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("classify")
    root = make_class_dataroot(tmp / "data", k=7)
    write_folds(root, k=3, batch_size=None, seed=0)
    runs = tmp / "runs"
    cfg = tiny_config("onehot", root, runs, "exp=classify", "task=classify", "transfer_from=null", "epochs=1",
                      "label_smoothing=0.1")
    for split in ("3fold0", "3fold1", "3fold2", "all"):
        run = train(cfg, split, device="cpu", progress=False)
        evaluate_checkpoint(run, 1, device="cpu")
    return tmp


def test_classify_trains_k_way_and_ranks_by_the_competitions_metric(classify_runs):
    import json

    metrics = json.loads((classify_runs / "runs/classify_3fold0/eval/epoch1_metrics.json").read_text())
    assert metrics["primary"] == "accuracy" and metrics["lower_is_better"] is False
    assert "rmse" not in metrics["views"]["mean"]  # nominal classes have no expected class
    outputs = np.load(classify_runs / "runs/classify_3fold0/eval/epoch1_oof.npz")["outputs"]
    assert outputs.shape[1:] == (8, 7) and np.allclose(outputs.sum(-1), 1, atol=1e-5)


def test_redistribution_for_seven_classes_reaches_the_submission(classify_runs, capsys):
    import stack

    tmp = classify_runs
    argv = ["--conf", str(ROOT / "parameters/tiny/stack.yml")]
    for s in (f"dataroot={tmp / 'data'}", f"checkpoints_dir={tmp / 'runs'}", f"out_dir={tmp / 'out'}",
              f"answers={tmp / 'answers.csv'}", "ensemble.runs={classify: last}", "ensemble.redistribute_k=4",
              "ensemble.submit=redistributed"):
        argv += ["--set", s]
    stack.main(argv)  # the default command: a classification competition ensembles
    out = capsys.readouterr().out
    submission = pd.read_csv(next((tmp / "out").glob("ensemble_*_submission.csv")), dtype={"object_id": str})
    probs = pd.read_csv(next((tmp / "out").glob("ensemble_*_probs.csv")), dtype={"object_id": str})
    assert list(submission.columns) == ["object_id", "target", "label"]
    np.testing.assert_array_equal(submission["target"], probs["label_redistributed"])
    assert (submission["label"] == "c" + submission["target"].astype(str)).all()
    assert np.bincount(submission["target"], minlength=7).min() >= 4  # every class at least K = 4 (35 test rows)
    answers = pd.read_csv(tmp / "answers.csv", dtype={"object_id": str}).set_index("object_id")
    accuracy = float(np.mean(answers.loc[submission["object_id"], "target"].to_numpy() == submission["target"]))
    reported = re.search(r"weighted ensemble, re-distributed\s+([0-9.]+)", out.split("score on the answers:")[1])
    assert float(reported.group(1)) == pytest.approx(accuracy, abs=1e-4)


ATMACUP_SPELLED_OUT = ("name: atmacup11\nkind: ordinal\nmetric: rmse\nclasses: ['0', '1', '2', '3']\n"
                       "group_column: art_series_id\ncolumns: [sorting_date]\n")


@pytest.mark.parametrize("task", ["target", "onehot"])
def test_a_dataroot_without_a_spec_trains_bit_for_bit_as_atmacup_spelled_out(task, tmp_path):
    """The spec's defaults are atmaCup #11: the same tiny run (3fold0, 2 epochs, one thread) on a dataroot without
    competition.yml and on a copy whose competition.yml spells atmaCup out gives the same weights, the same
    out-of-fold outputs and the same metrics, bit for bit. Both runs are made here, on this machine: figures
    recorded on another CPU would differ in their last bits."""
    import shutil

    import torch

    from fold0123.engine.evaluator import evaluate_checkpoint
    from fold0123.engine.trainer import train
    from tests.conftest import make_recipe_root

    torch.set_num_threads(1)
    implicit = make_recipe_root(tmp_path / "implicit")
    explicit = tmp_path / "explicit"
    shutil.copytree(implicit, explicit)
    (explicit / "competition.yml").write_text(ATMACUP_SPELLED_OUT)
    assert read_competition(explicit) == read_competition(implicit)
    results = []
    for dataroot in (implicit, explicit):
        run = train(tiny_config(task, dataroot, dataroot / "runs", "transfer_from=null"), "3fold0", device="cpu",
                    progress=False)
        metrics = evaluate_checkpoint(run, 2, device="cpu")["views"]["mean"]
        weights = torch.load(run / "2.pth", weights_only=True)["model"]
        outputs = np.load(run / "eval" / "epoch2_oof.npz")["outputs"]
        results.append((weights, outputs, metrics))
    (weights_a, outputs_a, metrics_a), (weights_b, outputs_b, metrics_b) = results
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:
        assert torch.equal(weights_a[name], weights_b[name]), name
    np.testing.assert_array_equal(outputs_a, outputs_b)
    assert metrics_a == metrics_b and np.isfinite(metrics_a["rmse"])


def test_a_rectangular_size_trains_on_flips_and_evaluates_all_eight_views(tmp_path):
    import torch

    from fold0123.data.photos import photo_cache
    from fold0123.engine.evaluator import evaluate_checkpoint
    from fold0123.engine.trainer import train

    torch.set_num_threads(1)
    root = make_class_dataroot(tmp_path / "data", k=3, n_train=24, n_test=6)
    write_folds(root, k=3, batch_size=None, seed=0)
    cfg = tiny_config("onehot", root, tmp_path / "runs", "task=classify", "transfer_from=null", "epochs=1",
                      "image_size=[24, 40]", "resize=squish")
    assert photo_cache(cfg).array.shape[1:] == (24, 40, 3)
    run = train(cfg, "3fold0", device="cpu", progress=False)
    evaluate_checkpoint(run, 1, device="cpu")
    outputs = np.load(run / "eval" / "epoch1_oof.npz")["outputs"]
    assert outputs.shape[1:] == (8, 3) and np.allclose(outputs.sum(-1), 1, atol=1e-5)
    assert not np.allclose(outputs[:, 0], outputs[:, 4])  # the transposed views were really evaluated


def test_hand_set_ensemble_weights_name_every_run(classify_runs):
    import stack
    from fold0123.common.schema import EnsembleOptions
    from fold0123.ensemble import _ensemble_weights

    runs = pd.DataFrame({"score": [0.5, 0.6], "lower_is_better": False}, index=["resnet", "convnext"])
    np.testing.assert_allclose(_ensemble_weights(runs, EnsembleOptions(weights={"resnet": 3, "convnext": 1})),
                               [0.75, 0.25])
    scored = _ensemble_weights(runs, EnsembleOptions(factor=1))  # by score: 0.5 : 0.6
    np.testing.assert_allclose(scored, [5 / 11, 6 / 11])
    tmp = classify_runs
    argv = ["ensemble", "--conf", str(ROOT / "parameters/tiny/stack.yml")]
    for s in (f"dataroot={tmp / 'data'}", f"checkpoints_dir={tmp / 'runs'}", f"out_dir={tmp / 'hand'}",
              "ensemble.runs={classify: last}", "ensemble.weights={other: 1}"):
        argv += ["--set", s]
    with pytest.raises(SystemExit, match="not a run: other; no weight: classify"):
        stack.main(argv)


def test_the_ensemble_reports_the_searched_weights_and_its_nested_cv(classify_runs):
    """`ensemble.weights: oof` end to end: the submission's weights are the search's `all` row, and the nested row
    scores every out-of-fold row with the weights of the other folds (tests/test_weight_search.py: the search)."""
    from fold0123.common.config import load_config
    from fold0123.common.schema import StackConfig
    from fold0123.ensemble import NESTED, run_ensemble

    tmp = classify_runs
    cfg = load_config(ROOT / "parameters/tiny/stack.yml", [
        f"dataroot={tmp / 'data'}", f"checkpoints_dir={tmp / 'runs'}", f"out_dir={tmp / 'searched'}",
        "ensemble.runs={classify: last}", "ensemble.pixel_stats=true", "ensemble.weights=oof",
        "ensemble.weight_step=0.25"], schema=StackConfig)
    result = run_ensemble(cfg)
    table = result.weight_search
    assert list(table.index) == ["0", "1", "2", "all"]
    np.testing.assert_allclose(result.runs["weight"].to_numpy(float), table.loc["all", ["classify", "pixels"]])
    sizes = [len(pd.read_csv(tmp / "data" / f"3fold{k}_test.csv")) for k in range(3)]
    expected = np.average(table["score (held out)"].iloc[:3].to_numpy(float), weights=sizes)
    assert result.cv_table.loc[NESTED, "accuracy"] == pytest.approx(expected)
    report = result.report_md.read_text()
    assert "weight_search" in report and NESTED in report and '"weights": "oof"' in report


def test_pseudo_labels_for_seven_classes_carry_the_specs_columns_only(classify_runs, capsys):
    import stack

    tmp = classify_runs
    argv = ["pseudo", "--round", "1", "--conf", str(ROOT / "parameters/tiny/stack.yml")]
    for s in (f"dataroot={tmp / 'data'}", f"checkpoints_dir={tmp / 'runs'}", f"out_dir={tmp / 'pseudo'}",
              "ensemble.runs={classify: last}", "ensemble.pseudo_thr=0.0"):
        argv += ["--set", s]
    stack.main(argv)
    train, _ = read_split(tmp / "data", "3fold0_pseudo1")
    pseudo = train[train["pseudo"] == 1]
    assert len(pseudo) == 35 and pseudo["target"].between(0, 6).all()  # every test row at threshold 0
    assert list(pd.read_csv(tmp / "data" / "3fold0_pseudo1_train.csv").columns[:3]) == ["object_id", "target", "pseudo"]
