"""Retrieval after training (issue 11): predictions from a run, the ensemble of saved matrices reproducing a
submission bit for bit, and test-time learning on a copy that leaves the checkpoint's bytes alone."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from fold0123.common import muge
from fold0123.common.errors import LayoutError
from fold0123.engine.trainer import train
from fold0123.preprocessing import pack_lmdb
from fold0123.retrieval import ensemble, predict, predictions, score, ttl
from tests.muge_fixtures import make_muge_root
from tests.test_retrieval_model import tiny_retrieval


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("retrieval_flow")
    root = make_muge_root(base / "muge")
    pack_lmdb.pack(root, muge.SPLITS)
    a = train(tiny_retrieval(root, base / "runs", "epochs=3", "exp=a"), "train", device="cpu", progress=False)
    b = train(tiny_retrieval(root, base / "runs", "epochs=3", "exp=b", "seed=1", "clip.text_layers=0"), "train",
              device="cpu", progress=False)
    return {"root": root, "a": a, "b": b, "answers": muge.texts_jsonl(base / "muge_private", "test"),
            "cache": base / "muge_cache", "base": base}


def test_predict_writes_the_muge_files_the_scorer_reads(runs):
    paths = predict.predict(runs["a"], "test")
    sim, text_ids, image_ids = predictions.load_similarity(paths["similarity"])
    assert sim.shape == (16, 16) and image_ids == sorted(image_ids)
    result = score.score(paths["predictions"], runs["answers"])
    assert 0 <= result["r1"] <= result["r5"] <= result["r10"] <= 1 and result["n"] == 16


def test_ensemble_of_saved_matrices_reproduces_the_submission_exactly(runs, tmp_path):
    a = predict.predict(runs["a"], "test", out=tmp_path / "a")["similarity"]
    b = predict.predict(runs["b"], "test", out=tmp_path / "b")["similarity"]
    first = ensemble.ensemble([a, b], tmp_path / "sub1", weights=[0.7, 0.3])
    again = ensemble.ensemble([a, b], tmp_path / "sub2", weights=[0.7, 0.3])
    assert first["predictions"].read_bytes() == again["predictions"].read_bytes()
    assert first["similarity"].read_bytes() == again["similarity"].read_bytes()
    # the saved ensemble matrix alone reproduces the same submission
    alone = ensemble.ensemble([first["similarity"]], tmp_path / "sub3")
    assert alone["predictions"].read_bytes() == first["predictions"].read_bytes()
    # weights matter, and a matrix with its columns in another order is aligned, not mixed up
    sim, t, i = predictions.load_similarity(b)
    predictions.save_similarity(tmp_path / "b_shuffled.npy", sim[:, ::-1], t, i[::-1])
    same = ensemble.ensemble([a, tmp_path / "b_shuffled.npy"], tmp_path / "sub4", weights=[0.7, 0.3])
    assert np.array_equal(np.load(same["similarity"]), np.load(first["similarity"]))
    predictions.save_similarity(tmp_path / "other.npy", sim, [x + 1 for x in t], i)
    with pytest.raises(LayoutError, match="ids differ"):
        ensemble.combine([a, tmp_path / "other.npy"])


def test_test_time_learning_helps_and_leaves_the_checkpoint_untouched(runs, tmp_path):
    checkpoint = predict.checkpoint_of(runs["a"])
    before = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    stat = checkpoint.stat()
    plain = score.score(predict.predict(runs["a"], "test", out=tmp_path)["predictions"], runs["answers"])
    result = ttl.test_time_learning(runs["a"], runs["cache"], steps=15, lr=1e-3, out=tmp_path)
    adapted = score.score(result["predictions"], runs["answers"])
    assert hashlib.sha256(checkpoint.read_bytes()).hexdigest() == before
    assert checkpoint.stat().st_mtime_ns == stat.st_mtime_ns
    assert result["losses"][-1] < result["losses"][0]
    assert adapted["mr"] >= plain["mr"]
    # predicting again from the checkpoint gives the unadapted numbers: nothing leaked into the saved model
    again = score.score(predict.predict(runs["a"], "test", out=tmp_path / "again")["predictions"], runs["answers"])
    assert again == plain
