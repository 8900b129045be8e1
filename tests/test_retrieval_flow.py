"""Retrieval after training (issue 11): predictions from a run, the ensemble of saved matrices reproducing a
submission bit for bit, and test-time learning on a copy that leaves the checkpoint's bytes alone."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from fold0123.common import muge
from fold0123.common.errors import Fold0123Error, LayoutError, UsageError
from fold0123.common.schema import TtlConfig
from fold0123.data.muge import read_texts
from fold0123.data.recall import first_positive_rank, recall_at
from fold0123.engine.evaluator import load_model
from fold0123.engine.trainer import train
from fold0123.models.checkpoints import read_checkpoint
from fold0123.preprocessing import pack_lmdb
from fold0123.retrieval import ensemble, predict, predictions, score, ttl, ttl_select
from tests.conftest import make_muge_root
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
    result = ttl.test_time_learning(runs["a"], runs["cache"], TtlConfig(steps=15, lr=1e-3), out=tmp_path,
                                    save=True)
    adapted = score.score(result["predictions"], runs["answers"])
    # --save: the adapted copy is a checkpoint of its own, and predicting from it gives the adapted similarity
    saved = read_checkpoint(result["checkpoint"])
    assert saved["ttl"]["source"] == str(checkpoint) and saved["ttl"]["steps"] == 15
    cfg, task, model = load_model(runs["a"], result["checkpoint"], torch.device("cpu"))
    _, _, sim = predict.similarity(cfg, task, model, "test")
    np.testing.assert_allclose(sim, np.load(result["similarity"]), rtol=1e-5, atol=1e-6)
    assert hashlib.sha256(checkpoint.read_bytes()).hexdigest() == before
    assert checkpoint.stat().st_mtime_ns == stat.st_mtime_ns
    assert result["losses"][-1] < result["losses"][0]
    assert adapted["mr"] >= plain["mr"]
    # predicting again from the checkpoint gives the unadapted numbers: nothing leaked into the saved model
    again = score.score(predict.predict(runs["a"], "test", out=tmp_path / "again")["predictions"], runs["answers"])
    assert again == plain


@pytest.mark.parametrize("mode, moves", [("text", ("head.text.",)), ("heads", ("head.",)),
                                         ("projections", ("head.image.", "head.text.project."))])
def test_each_adapt_setting_moves_only_its_weights(runs, mode, moves):
    cfg, task, model = predict.load_run_model(runs["a"])
    images, texts = ttl.cache_pairs(runs["cache"], "test", cfg.image_size)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adapted, losses = ttl.adapt(model, task, cfg, images, texts, TtlConfig(steps=3, lr=1e-2, adapt=mode,
                                                                           batch_size=0))
    after = adapted.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(moves) for k in changed), sorted(changed)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the original is untouched
    assert len(losses) == 3 and losses[-1] < losses[0]


def test_settings_are_chosen_on_valid_and_never_on_test(runs, tmp_path, capsys):
    base = TtlConfig(lr=3e-3)
    rows = ttl_select.select(runs["a"], runs["cache"], base, ["adapt=text,heads", "batch_size=0"], [2, 4])
    assert rows[0]["steps"] == 0 and rows[0]["gain"] == 0.0
    assert sorted((r["adapt"], r["steps"]) for r in rows[1:]) == [("heads", 2), ("heads", 4), ("text", 2),
                                                                  ("text", 4)]
    assert [r["mr"] for r in rows[1:]] == sorted((r["mr"] for r in rows[1:]), reverse=True)
    # the scores are the valid answers' recall after that many steps: the 4-step text row, redone by hand
    cfg, task, model = predict.load_run_model(runs["a"])
    images, texts = ttl.cache_pairs(runs["cache"], "valid", cfg.image_size)
    adapted, _ = ttl.adapt(model, task, cfg, images, texts, base.model_copy(update={"steps": 4, "adapt": "text",
                                                                                     "batch_size": 0}), cfg.seed)
    by_hand = predict.similarity(cfg, task, adapted, "valid")
    truth = {t.text_id: t.image_ids for t in read_texts(muge.texts_jsonl(runs["root"], "valid"))}
    column = {i: c for c, i in enumerate(by_hand[1])}
    ranks = first_positive_rank(by_hand[2], [[column[i] for i in truth[t]] for t in by_hand[0]])
    row = next(r for r in rows if r["adapt"] == "text" and r["steps"] == 4)
    assert row["mr"] == pytest.approx(recall_at(ranks)["mr"])
    with pytest.raises(UsageError, match="valid"):
        ttl_select.select(runs["a"], runs["cache"], base, ["adapt=text"], [2], split="test")
    ttl_select.main(["--run", str(runs["a"]), "--cache", str(runs["cache"]), "--grid", "adapt=text",
                     "--steps", "1,2", "--out", str(tmp_path / "rows.json")])
    assert "best: --set steps=" in capsys.readouterr().out and (tmp_path / "rows.json").is_file()


def test_a_diverging_test_time_learning_stops_in_one_line_writing_nothing(runs, tmp_path, monkeypatch):
    """issue 22: a loss that is not finite (lr far too high) names its step; no prediction is written."""
    real = ttl.clip.clip_loss
    monkeypatch.setattr(ttl.clip, "clip_loss", lambda *a, **k: real(*a, **k) * float("nan"))
    with pytest.raises(Fold0123Error) as err:
        ttl.test_time_learning(runs["a"], runs["cache"], TtlConfig(steps=3, lr=1e-3), out=tmp_path / "out")
    assert "\n" not in str(err.value) and "step 1 of 3" in str(err.value)
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit, match="--epoch abc"):
        predict.main(["--run", str(runs["a"]), "--epoch", "abc", "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
