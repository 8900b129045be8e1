"""Evaluation outputs that scale (issue 23): what `eval.views` and `eval.dtype` keep, read back by every reader,
the stack refusing what a form cannot give, and the eval files mapped rather than read whole."""
from __future__ import annotations

import shutil
import zipfile

import numpy as np
import pytest
import yaml

from fold0123.common import rundir
from fold0123.engine.evaluator import evaluate_checkpoint
from fold0123.stacking.features import build_features
from fold0123.stacking.runs import RunError, load_outputs, run_dir
from tests.conftest import make_runs, make_synthetic_dataroot, save_npz, session_runs

FORMS = [("all", "float32"), ("mean", "float16"), ("mean_identity", "float32"), ("mean_identity", "float16")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return session_runs(tmp_path_factory)


def with_eval(run, **keys):
    """The run's config.yml with `eval` keys changed (they are volatile: the run stays fresh)."""
    path = rundir.config_path(run)
    cfg = yaml.safe_load(path.read_text())
    cfg.setdefault("eval", {}).update(keys)
    path.write_text(yaml.safe_dump(cfg))


def test_every_form_round_trips_and_scores_as_the_8_views_do(runs, tmp_path):
    written, sizes = {}, {}
    for form, dtype in FORMS:
        run = shutil.copytree(runs["target"], tmp_path / f"{form}_{dtype}" / runs["target"].name)
        with_eval(run, views=form, dtype=dtype)
        metrics = evaluate_checkpoint(run, 2, device="cpu")
        out = load_outputs(run, 2, "test")
        assert out.views == rundir.VIEW_FORMS[form] and out.form == form
        assert out.outputs.dtype == np.dtype(dtype) and isinstance(out.outputs, np.memmap)  # mapped, not read
        written[form, dtype] = (metrics, out)
        sizes[form, dtype] = out.outputs.nbytes
    base_metrics, base = written["all", "float32"]
    for (form, dtype), (metrics, out) in written.items():
        for view in ("mean", "identity"):  # scored before anything was dropped (torch's mean or numpy's)
            assert metrics["views"][view] == pytest.approx(base_metrics["views"][view], rel=1e-6)
        tol = 2e-3 if dtype == "float16" else 1e-6
        np.testing.assert_allclose(out.view("mean"), base.view("mean"), rtol=tol, atol=tol)
        if form != "mean":
            np.testing.assert_allclose(out.view("identity"), base.view("identity"), rtol=tol, atol=tol)
    assert np.array_equal(base.view("identity"), base.rows()[:, 0])
    assert sizes["mean", "float16"] * 16 == sizes["all", "float32"]
    with pytest.raises(RunError, match=r"_test.npz: holds the views \['mean'\] \(eval.views: mean\), not 'h'"):
        written["mean", "float16"][1].view("h")


@pytest.fixture
def synth(tmp_path):
    root = make_synthetic_dataroot(tmp_path / "data", n_train=90, n_test=30)
    make_runs(tmp_path / "runs", root, tasks=("target", "onehot"), epochs=1, train_epochs=[])
    return root, tmp_path / "runs"


def as_mean_float16(runs):
    """Every eval file of `runs` rewritten as `eval.views: mean`, float16 would have written it."""
    for path in sorted(runs.glob("*/eval/*.npz")):
        with np.load(path) as data:
            ids, outputs = data["ids"], data["outputs"]
        save_npz(path, ids, outputs.mean(axis=1, keepdims=True).astype(np.float16), views=["mean"])


def test_the_stack_takes_the_mean_from_any_form_and_refuses_what_a_form_lacks(synth):
    root, runs = synth
    chosen = {"target": "last", "onehot": "last"}
    full = build_features(root, runs, chosen, aggregations="mean", infold=False)
    as_mean_float16(runs)
    mean = build_features(root, runs, chosen, aggregations="mean", infold=False)
    np.testing.assert_allclose(mean.train.to_numpy(), full.train.to_numpy(), rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(mean.test["all"].to_numpy(), full.test["all"].to_numpy(), rtol=2e-3, atol=2e-3)
    assert list(mean.train.columns) == list(full.train.columns)
    for aggregations, raw in (("mean,var", False), ("mean", True)):
        with pytest.raises(RunError, match=r"target_3fold0/eval/epoch1_oof.npz: holds the views \['mean'\] "
                                           r"\(eval.views: mean\), so aggregations other than mean .* cannot come "
                                           r"from it: use aggregations: \[mean\]") as err:
            build_features(root, runs, chosen, aggregations=aggregations, raw_views=raw, infold=False)
        assert "\n" not in str(err.value)


def test_a_compressed_or_malformed_file_is_still_read_or_named(synth, tmp_path):
    root, runs = synth
    path = run_dir(runs, "target", "3fold0") / "eval" / "epoch1_oof.npz"
    before = load_outputs(path.parent.parent, 1, "oof")
    ids, outputs = before.ids.copy(), before.rows()
    with open(path, "wb") as f:
        np.savez_compressed(f, ids=ids, outputs=outputs)
    assert zipfile.ZipFile(path).getinfo("outputs.npy").compress_type == zipfile.ZIP_DEFLATED
    again = load_outputs(path.parent.parent, 1, "oof")
    assert not isinstance(again.outputs, np.memmap) and np.array_equal(again.rows(), outputs)
    save_npz(path, ids, outputs, views=["mean", "h"])
    with pytest.raises(RunError, match=r"epoch1_oof.npz: 'views' \['mean', 'h'\] is none of the forms"):
        load_outputs(path.parent.parent, 1, "oof")
    save_npz(path, ids, outputs[:, :2], views=["mean", "identity"])
    assert load_outputs(path.parent.parent, 1, "oof").form == "mean_identity"
    save_npz(path, ids, outputs > 0)
    with pytest.raises(RunError, match=r"'outputs' must be numbers \(float32 or float16\), got dtype bool"):
        load_outputs(path.parent.parent, 1, "oof")


def two_members(runs):
    """A second onehot experiment beside the first: its views perturbed and renormalised, so the mixture differs
    from either member."""
    rng = np.random.default_rng(3)
    for run in sorted(runs.glob("onehot_*")):
        copy = shutil.copytree(run, runs / run.name.replace("onehot", "other"))
        cfg = yaml.safe_load(rundir.config_path(copy).read_text())
        rundir.config_path(copy).write_text(yaml.safe_dump({**cfg, "exp": "other"}))
        for path in copy.glob("eval/*.npz"):
            with np.load(path) as data:
                ids, outputs = data["ids"], data["outputs"]
            outputs = outputs * rng.uniform(0.5, 1.5, outputs.shape).astype(np.float32)
            save_npz(path, ids, outputs / outputs.sum(axis=2, keepdims=True))


def test_the_chunked_ensemble_is_the_whole_array_ensemble_for_every_chunk_and_form(synth):
    from fold0123.common.config import load_config
    from fold0123.common.schema import StackConfig
    from fold0123.ensemble import ensemble_probabilities
    from tests.conftest import ROOT

    root, runs = synth
    two_members(runs)
    cfg = load_config(ROOT / "parameters/tiny/stack.yml", [f"dataroot={root}", f"checkpoints_dir={runs}",
                                                            "ensemble.runs={onehot: last, other: last}",
                                                            "ensemble.weights={onehot: 0.7, other: 0.3}",
                                                            "ensemble.redistribute_k=3"], schema=StackConfig)
    whole = ensemble_probabilities(cfg, chunk=10**9)
    features = build_features(root, runs, {"onehot": "last", "other": "last"}, aggregations="mean", infold=False)
    expected = sum(w * features.view_mean_oof[e].astype(float) for e, w in whole.runs["weight"].items())
    np.testing.assert_allclose(whole.oof, expected, rtol=1e-6, atol=1e-7)
    for chunk in (1, 7, 64):
        part = ensemble_probabilities(cfg, chunk=chunk)
        assert np.array_equal(part.oof, whole.oof) and np.array_equal(part.test, whole.test)
        assert np.array_equal(part.labels, whole.labels)  # scores: the expected class's matmul may round apart
        np.testing.assert_allclose(part.cv_table.to_numpy(float), whole.cv_table.to_numpy(float), rtol=1e-12)
    as_mean_float16(runs)
    small = ensemble_probabilities(cfg, chunk=7)
    np.testing.assert_allclose(small.oof, whole.oof, atol=2e-3)
    np.testing.assert_allclose(small.test, whole.test, atol=2e-3)
    assert (small.test_summary.labels == whole.test_summary.labels).mean() >= 0.9


def test_wide_probabilities_stream_to_npy_and_a_bad_answers_file_leaves_nothing(synth, tmp_path):
    from fold0123.common.config import load_config
    from fold0123.common.schema import StackConfig
    from fold0123.data.layout import LayoutError
    from fold0123.ensemble import ensemble_probabilities, run_ensemble
    from tests.conftest import ROOT

    root, runs = synth
    sets = [f"dataroot={root}", f"checkpoints_dir={runs}", "ensemble.runs={onehot: last}", f"out_dir={tmp_path / 'o'}",
            "ensemble.probabilities=npy", f"answers={root.parent / 'answers.csv'}"]
    cfg = load_config(ROOT / "parameters/tiny/stack.yml", sets, schema=StackConfig)
    kept = ensemble_probabilities(cfg, chunk=5)
    result = run_ensemble(cfg, stamp="s")
    assert result.oof is None and result.test is None  # streamed, never whole in memory
    assert result.probs_csv.name == "ensemble_s_probs.npy"
    np.testing.assert_array_equal(np.load(result.probs_csv), kept.test)
    assert np.array_equal(result.labels, kept.test.argmax(axis=1)) and result.answers_table is not None
    bad = tmp_path / "bad.csv"
    bad.write_text("object_id,target\nnope,1\n")
    cfg = load_config(ROOT / "parameters/tiny/stack.yml", sets + [f"out_dir={tmp_path / 'b'}", f"answers={bad}"],
                      schema=StackConfig)
    with pytest.raises(LayoutError, match="test predictions: "):
        run_ensemble(cfg, stamp="s")
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())


def test_pseudo_labels_come_from_the_plain_mean_unless_asked(synth, tmp_path):
    """Issue 21: the ACCV winners built pseudo labels from the ensemble without the score factor."""
    import json

    from fold0123.common.config import load_config
    from fold0123.common.schema import StackConfig
    from fold0123.ensemble import run_pseudo
    from tests.conftest import ROOT

    root, runs = synth
    two_members(runs)
    for metrics in runs.glob("other_3fold*/eval/epoch1_metrics.json"):  # `other` 1.5x the RMSE out of fold
        data = json.loads(metrics.read_text())
        data["views"]["mean"] = {k: v * 1.5 for k, v in data["views"]["mean"].items()}
        metrics.write_text(json.dumps(data))
    sets = [f"dataroot={root}", f"checkpoints_dir={runs}", "ensemble.runs={onehot: last, other: last}",
            f"out_dir={tmp_path / 'o'}", "ensemble.factor=25", "ensemble.pseudo_thr=0.3"]
    for extra, plain in (([], True), (["ensemble.pseudo_factor=25"], False)):
        cfg = load_config(ROOT / "parameters/tiny/stack.yml", sets + extra, schema=StackConfig)
        run_pseudo(cfg, 1)
        weights = json.loads((tmp_path / "o" / "pseudo1_report.json").read_text())["weights"]
        assert (weights == {"onehot": 0.5, "other": 0.5}) == plain
        assert plain or weights["onehot"] > 0.99


def test_a_streamed_npz_is_what_np_savez_writes(tmp_path):
    """engine.evaluator.NpzStream writes a part a batch at a time; np.load and the mapped readers read it as they
    read np.savez's files, and a part that gets fewer rows than announced is not renamed into place."""
    from fold0123.engine.evaluator import write_part

    rng = np.random.default_rng(0)
    ids = [f"id{i}" for i in range(10)]
    views = rng.random((10, 8, 3)).astype(np.float32)
    path = tmp_path / "run" / "eval" / "epoch1_oof.npz"
    means, identities = write_part(path, ids, iter([views[:4], views[4:]]), "mean_identity", "float16")
    with np.load(path) as data:
        assert list(data["ids"]) == ids and list(data["views"]) == ["mean", "identity"]
        np.testing.assert_array_equal(data["outputs"], views[:, :2].astype(np.float16))
    out = load_outputs(tmp_path / "run", 1, "oof")
    assert isinstance(out.outputs, np.memmap) and np.array_equal(out.rows(), views[:, :2].astype(np.float16))
    np.testing.assert_array_equal(np.concatenate(means), views[:, 0])
    np.testing.assert_array_equal(np.concatenate(identities), views[:, 1])
    with pytest.raises(ValueError, match="9 rows of 'outputs' written, 10 announced"):
        write_part(tmp_path / "cut.npz", ids, iter([views[:9]]), "all", "float32")
    assert not (tmp_path / "cut.npz").exists()
    write_part(tmp_path / "run" / "eval" / "epoch2_oof.npz", [], iter([]), "mean", "float32")
    assert load_outputs(tmp_path / "run", 2, "oof").outputs.shape == (0, 1, 0)


def test_a_loaded_file_reads_as_it_was_when_a_re_evaluation_replaces_it(synth):
    """The mapped reader reads through the handle it opened: a file renamed over it meanwhile (evaluate.py
    writing the same epoch again) changes nothing for a reader that already holds it, half way or not."""
    root, runs = synth
    run = run_dir(runs, "target", "3fold0")
    held = load_outputs(run, 1, "oof")
    before = held.rows()
    save_npz(run / "eval" / "epoch1_oof.npz", held.ids, before + 1.0)  # atomically renamed over it
    assert np.array_equal(held.rows(), before) and np.array_equal(held.view("mean", [2, 0]), before[[2, 0]].mean(1))
    assert np.array_equal(load_outputs(run, 1, "oof").rows(), before + 1.0)  # a new load sees the new file
