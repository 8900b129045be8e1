"""The stacking steps end to end on contract-exact synthetic run directories: stack.py's three commands and
ensemble.ipynb executed headless."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

import stack
from fold0123.data import pixel_stats
from tests.conftest import ROOT, make_runs, make_synthetic_dataroot


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stack")
    root = make_synthetic_dataroot(tmp / "data", n_train=150, n_test=50)
    make_runs(tmp / "runs", root, epochs=2)
    return tmp


def _sets(tmp: Path, out: str) -> list[str]:
    return [f"dataroot={tmp / 'data'}", f"checkpoints_dir={tmp / 'runs'}", f"out_dir={tmp / out}",
            f"answers={tmp / 'answers.csv'}"]


def _argv(tmp: Path, out: str, *extra: str) -> list[str]:
    argv = ["--conf", str(ROOT / "parameters/tiny/stack.yml")]
    for s in _sets(tmp, out) + list(extra):
        argv += ["--set", s]
    return argv


def test_cli_stacks_and_writes_submission_and_report(runs, capsys):
    stack.main(_argv(runs, "cli"))
    printed = capsys.readouterr().out
    assert "CV (OOF RMSE after post-processing)" in printed and "score on the answers" in printed
    assert "_report.html" in printed.split("html: ")[1].splitlines()[0]
    out = runs / "cli"
    (submission,) = [p for p in out.glob("*.csv") if p.name.count("_") == 1]
    assert submission.name.startswith(printed.split("CV (OOF RMSE after post-processing): ")[1][:6])
    frame = pd.read_csv(submission)
    test = pd.read_csv(runs / "data/test.csv", dtype={"object_id": str})
    assert list(frame.columns) == ["target"] and len(frame) == len(test)
    assert frame["target"].between(0, 3).all()
    with_ids = pd.read_csv(submission.with_name(submission.stem + "_ids.csv"), dtype={"object_id": str})
    assert with_ids["object_id"].tolist() == test["object_id"].tolist()
    report = json.loads(submission.with_name(submission.stem + "_report.json").read_text())
    names = [row["name"] for row in report["tables"]["cv"]]
    assert {row["variant"] for row in report["tables"]["answers"]} >= {"out-of-fold stack", "in-fold stack (original)"}
    assert "stack (out-of-fold)" in names and "stack, in-fold variant (original)" in names
    assert any(n.startswith("target [target]") for n in names)
    nested = next(row for row in report["tables"]["cv"] if row["name"].startswith("post-processing tuned on the other"))
    stack_row = next(row for row in report["tables"]["cv"] if row["name"] == "stack (out-of-fold)")
    # the submission's CV is the nested one when post-processing is kept, the clipped stack's when it is not
    facts = report["facts"]
    assert facts["cv"] == pytest.approx(nested["oof"] if facts["postprocess_kept"] else stack_row["oof"], abs=0.02)
    fingerprint = report["facts"]["fingerprint"]  # what made the stack: its config and the runs it read
    assert fingerprint["config"]["lgbm.num_boost_round"] > 0 and "out_dir" not in fingerprint["config"]
    assert any(key.startswith("target_3fold0 epoch ") for key in fingerprint["inputs"])
    for suffix in ("_cv_per_epoch.png", "_importance.png", "_importance.csv", "_report.md", "_report.html",
                   "_epoch_metrics.csv"):
        assert submission.with_name(submission.stem + suffix).is_file()
    oof = pd.read_csv(submission.with_name(submission.stem + "_oof.csv"), dtype={"object_id": str})
    assert len(oof) == 150 and {"target", "fold", "stack", "submitted", "stack_infold"} <= set(oof.columns)
    assert not [p for p in out.iterdir() if ".tmp." in p.name]


def test_a_tuned_stack_reports_each_folds_chosen_parameters(runs, capsys):
    stack.main(_argv(runs, "tuned", "lgbm.tune={trials: 2, space: {num_leaves: {low: 3, high: 9}}}", "infold=false"))
    capsys.readouterr()
    (report,) = (runs / "tuned").glob("*_report.json")
    facts = json.loads(report.read_text())["facts"]
    assert len(facts["lgbm_tuned"]) == 4 and all(3 <= t["num_leaves"] <= 9 for t in facts["lgbm_tuned"])
    assert facts["fingerprint"]["config"]["lgbm.tune.trials"] == 2  # a stack tuned otherwise is another stack
    assert facts["best_iterations"] == [t["rounds"] for t in facts["lgbm_tuned"][:3]]


def test_cli_ensemble_redistribute_and_pseudo(runs, capsys):
    stack.main(["ensemble"] + _argv(runs, "ens", "ensemble.redistribute_k=10", "ensemble.factor=5"))
    printed = capsys.readouterr().out
    assert "weighted ensemble" in printed and "test after" in printed
    (probs,) = (runs / "ens").glob("ensemble_*_probs.csv")
    frame = pd.read_csv(probs)
    assert frame[["p0", "p1", "p2", "p3"]].sum(axis=1).round(5).eq(1).all()
    assert frame["label_redistributed"].value_counts().reindex(range(4), fill_value=0).min() >= 10
    stack.main(["pseudo", "--round", "1"] + _argv(runs, "ens", "ensemble.pseudo_thr=0.6"))
    printed = capsys.readouterr().out
    report = json.loads((runs / "ens/pseudo1_report.json").read_text())
    assert f"pseudo round 1: {report['rows_added']} test rows" in printed and report["rows_added"] > 0
    assert (runs / "data/3fold2_pseudo1_train.csv").is_file()
    # the round's runs (trained on the pseudo splits) stack through the same path; OOF rows stay train.csv's
    make_runs(runs / "runs", runs / "data", epochs=1, split_suffix="_pseudo1")
    stack.main(_argv(runs, "round1", "split_suffix=_pseudo1", "runs={target: last, onehot: last}"))
    assert "stack (out-of-fold)" in capsys.readouterr().out
    assert len(list((runs / "round1").glob("*_ids.csv"))) == 1


def test_cli_errors_are_one_line(runs):
    with pytest.raises(SystemExit, match=r"^error: .*target_3fold0/eval/epoch9_oof.npz.*epoch 9"):
        stack.main(_argv(runs, "bad", "runs.target=9"))
    with pytest.raises(SystemExit, match=r"^error: .*unknown key 'nosuch'"):
        stack.main(_argv(runs, "bad", "nosuch=1"))
    with pytest.raises(SystemExit, match=r"^error: ensemble.pixel_stats: for a classification competition .*is "
                                         r"ordinal\); a stack takes the pixel features with pixel_stats: true$"):
        stack.main(["ensemble"] + _argv(runs, "bad", "ensemble.pixel_stats=true"))


@pytest.mark.integration
def test_notebook_runs_headless_and_writes_a_submission(runs):
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / "ensemble.ipynb", as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    params.source = (f"CONF = {str(ROOT / 'parameters/tiny/stack.yml')!r}\nOVERRIDES = {_sets(runs, 'nb')!r}\n"
                     f"ENSEMBLE = True\nSTAMP = 'nbtest'")
    client = NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT / "fold0123" / "stacking")}})
    client.execute()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert sys.executable in text or str(Path(sys.executable).resolve()) in text  # the venv's kernel ran it
    (submission,) = (runs / "nb").glob("*_nbtest.csv")
    assert len(pd.read_csv(submission)) == 50
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 2


def test_pixel_statistics_join_every_table_as_stack_features(runs, capsys):
    """With `pixel_stats`, each object's photo statistics sit beside the runs' outputs in the train, test and
    in-fold tables, aligned by object_id (photos drawn here from each object's class, so they carry signal)."""
    from tests.conftest import draw_era

    root = runs / "data"
    labels = pd.concat([pd.read_csv(root / "train.csv", dtype={"object_id": str}),
                        pd.read_csv(runs / "answers.csv", dtype={"object_id": str})])
    (root / "photos").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for row in labels.itertuples():
        draw_era(int(row.target), rng, 16).save(root / "photos" / f"{row.object_id}.jpg")
    stack.main(_argv(runs, "px", "pixel_stats=true"))
    capsys.readouterr()
    (importance,) = (runs / "px").glob("*_importance.csv")
    features = pd.read_csv(importance)["feature"]
    pixels = features.str.startswith("px_")
    assert pixels.sum() == len(pixel_stats.FEATURES) and (~pixels).sum() > 0
    assert pixel_stats.dataroot_cache(root).is_file()  # the baselines' and the ensemble's cache too


def test_tag_features_join_the_stack_only_where_test_objects_have_tags(runs, capsys):
    root = runs / "data"
    train = pd.read_csv(root / "train.csv", dtype={"object_id": str})
    answers = pd.read_csv(runs / "answers.csv", dtype={"object_id": str})
    tagged = pd.concat([train[["object_id", "target"]], answers[["object_id", "target"]]])
    for table in ("materials", "techniques"):
        rows = pd.DataFrame({"object_id": tagged["object_id"], "name": [f"{table}{t}" for t in tagged["target"]]})
        rows[rows["object_id"].isin(train["object_id"])].to_csv(root / f"{table}.csv", index=False)
    with pytest.raises(SystemExit, match=r"^error: .*tag_features: the test objects have no tags"):
        stack.main(_argv(runs, "tags", "tag_features=true"))
    for table in ("materials", "techniques"):  # now with the test objects' tags too (an emoji --test-tags build)
        pd.DataFrame({"object_id": tagged["object_id"], "name": [f"{table}{t}" for t in tagged["target"]]}).to_csv(
            root / f"{table}.csv", index=False)
    stack.main(_argv(runs, "tags", "tag_features=true"))
    capsys.readouterr()
    (importance,) = (runs / "tags").glob("*_importance.csv")
    assert pd.read_csv(importance)["feature"].str.startswith("tag_").sum() == 8  # 4 classes x 2 tables
