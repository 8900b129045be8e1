"""The clip task (issue 11): the symmetric InfoNCE with identical texts masked, the clamped temperature, and a
tiny text-image training through train.py's library function whose evaluator beats chance on the whole gallery."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fold0123.common import rundir
from fold0123.common.config import load_config
from fold0123.common.errors import LayoutError
from fold0123.common.schema import RunConfig
from fold0123.engine.evaluator import evaluate_checkpoint
from fold0123.engine.trainer import train
from fold0123.models import clip
from fold0123.models.checkpoints import read_checkpoint
from fold0123.models.tasks import get_task
from fold0123.preprocessing import pack_lmdb
from tests.conftest import ROOT, make_muge_root

torch.set_num_threads(1)


def tiny_retrieval(dataroot, runs, *overrides) -> RunConfig:
    return load_config(ROOT / "parameters" / "tiny" / "retrieval.yml",
                       [f"dataroot={dataroot}", f"checkpoints_dir={runs}", *overrides], schema=RunConfig)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("retrieval")
    root = make_muge_root(base / "muge")
    pack_lmdb.pack(root, ["train", "valid", "test"])
    cfg = tiny_retrieval(root, base / "runs")
    run = train(cfg, "train", device="cpu", progress=False)
    return {"root": root, "runs": base / "runs", "run": run, "cfg": cfg}


def test_identical_texts_are_not_negatives():
    torch.manual_seed(0)
    image, text = torch.randn(4, 8), torch.randn(4, 8)
    text[1] = text[0]  # rows 0 and 1 carry the same string
    distinct = clip.clip_loss(image, text, torch.tensor([0, 1, 2, 3]), torch.tensor(10.0))
    same = clip.clip_loss(image, text, torch.tensor([5, 5, 2, 3]), torch.tensor(10.0))
    # by hand: the cross logits of the identical pair leave both softmaxes
    logits = 10.0 * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[0, 1] = mask[1, 0] = True
    logits = logits.masked_fill(mask, float("-inf"))
    labels = torch.arange(4)
    expected = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    assert torch.allclose(same, expected) and not torch.allclose(same, distinct)


def test_in_batch_accuracy_counts_a_pairs_own_text_and_its_identical_twins():
    image = torch.eye(4)
    assert clip.in_batch_accuracy(image, image, torch.arange(4)) == {"acc_i2t": 1.0, "acc_t2i": 1.0}
    text = image[[1, 0, 2, 3]]  # pairs 0 and 1 swapped: each image's best text is the other's
    assert clip.in_batch_accuracy(image, text, torch.arange(4)) == {"acc_i2t": 0.5, "acc_t2i": 0.5}
    assert clip.in_batch_accuracy(image, text, torch.tensor([7, 7, 2, 3])) == {"acc_i2t": 1.0, "acc_t2i": 1.0}


def test_logit_scale_is_clamped_at_100_as_clip_does():
    head = clip.ClipHead(8, 10, 4, 8, temperature=1e-4, text_layers=0)
    assert float(head.scale().detach()) == pytest.approx(100.0)
    assert float(clip.ClipHead(8, 10, 4, 8, temperature=0.07).scale().detach()) == pytest.approx(1 / 0.07, rel=1e-5)


def test_infonce_decreases_and_retrieval_beats_chance_through_train(trained):
    run = trained["run"]
    losses = {}
    for line in rundir.loss_log_path(run).read_text().splitlines()[1:]:
        epoch, _, loss = line.split()[:3]
        losses.setdefault(int(epoch), []).append(float(loss))
    means = [np.mean(losses[e]) for e in sorted(losses)]
    assert means[-1] < 0.8 * means[0]
    # in-batch accuracy beside the loss (Chinese-CLIP's), kept apart from the gallery's Recall@K
    log = [line.split() for line in rundir.loss_log_path(run).read_text().splitlines()]
    assert log[0] == ["epoch", "step", "loss", "lr", "images_per_s", "acc_i2t", "acc_t2i"]
    accuracy = np.array([[float(v) for v in line[5:]] for line in log[1:]])
    assert ((accuracy >= 0) & (accuracy <= 1)).all() and accuracy[-3:].mean() >= accuracy[:3].mean()
    assert (run / "tokenizer.json").is_file()
    metrics = evaluate_checkpoint(run, 6, device="cpu")
    mean = metrics["views"]["identity"]
    assert metrics["primary"] == "t2i_mr" and metrics["n"] == 16
    # chance on a gallery of 16: R@1 = 1/16, MR = 1/3
    assert mean["t2i_r1"] > 4 / 16 and mean["i2t_r1"] > 4 / 16 and mean["t2i_mr"] > 2 * mean["chance_t2i_mr"]
    npz = np.load(rundir.eval_npz_path(run, "epoch6", "test"))
    assert npz["outputs"].shape == (16, 8, 32)


def test_a_replaced_tokenizer_is_refused(trained, tmp_path):
    from fold0123.models.checkpoints import read_checkpoint
    from fold0123.models.network import build_model

    state = read_checkpoint(rundir.checkpoint_path(trained["run"], 6))["task_state"]
    cfg = rundir.read_run_config(trained["run"])
    task = get_task("clip", state)
    task.run = tmp_path  # no tokenizer.json there
    with pytest.raises(LayoutError, match="tokenizer is missing"):
        build_model(cfg, task)
    other = get_task("clip")
    other.run = tmp_path
    build_model(cfg.model_copy(update={"clip": cfg.clip.model_copy(update={"vocab_size": 40})}), other)  # writes one
    task = get_task("clip", state)
    task.run = tmp_path
    with pytest.raises(LayoutError, match="not this run's tokenizer"):
        build_model(cfg, task)


def test_the_primary_metric_is_read_from_the_identity_view(trained, capsys):
    """A flipped emoji is another emoji: clip's metrics.json says `primary_view: identity`, and the watcher's
    line, evaluate.py's summary and the monitor read t2i_mr from that view, not from the 8-view mean."""
    import evaluate
    from fold0123.launcher.monitor import held_out_metrics, metric_line

    run = trained["run"]
    for done in (run / "eval").glob("epoch6_*"):  # the watcher's step skips an evaluated epoch: evaluate it anew
        done.unlink()
    (metrics,) = evaluate._evaluate_quietly(run, 6, device="cpu")  # clip trains without an EMA: one tag
    written = rundir.read_metrics(run, "epoch6")
    assert written["primary_view"] == "identity" and rundir.primary_view(written) == "identity"
    identity, mean = written["views"]["identity"]["t2i_mr"], written["views"]["mean"]["t2i_mr"]
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["view"] == "identity" and line["t2i_mr"] == identity and line["epoch"] == 6
    assert evaluate._summary(metrics).startswith(f"train epoch 6: t2i_mr {identity} (identity), {mean} (8-view")
    shown = held_out_metrics(run)[-1]
    assert shown.value == identity and shown.view == "identity"
    assert "identity view, the task's primary" in metric_line([shown])
    assert rundir.primary_view({"views": {}}) == "mean"  # every other task's files: unchanged, the mean


def test_the_lmdb_reader_gives_the_cached_samples_in_forked_workers(trained):
    """`clip.reader: lmdb` decodes straight from the LMDB per sample: the same bytes as the memmap cache, also
    in DataLoader workers forked after the parent opened the environment (each reopens it)."""
    from fold0123.data.datasets import ImageDataset
    from fold0123.data.muge_images import LmdbPairs

    cfg = trained["cfg"]
    cached = get_task("clip").training_data(cfg.model_copy(update={"split": "train"}), "train")
    task = get_task("clip")
    task.run = trained["run"]
    lmdb_cfg = cfg.model_copy(update={"clip": cfg.clip.model_copy(update={"reader": "lmdb"})})
    direct = task.training_data(lmdb_cfg, "train")
    n = len(cached)
    assert isinstance(direct, LmdbPairs) and isinstance(cached, ImageDataset) and n == len(direct) == 48
    direct[0]  # the parent opens the environment before the workers fork
    loader = torch.utils.data.DataLoader(direct, batch_size=16, num_workers=2,
                                         multiprocessing_context="fork")
    batches = list(loader)
    images, targets = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    assert torch.equal(images, torch.stack([cached[i][0] for i in range(n)]))
    assert torch.equal(targets, torch.stack([cached[i][1] for i in range(n)]))


def test_a_full_transfer_starts_from_every_weight_and_the_tokenizer_of_a_trained_clip_model(trained, tmp_path):
    """Issue 21: `transfer: full` goes on from a trained retrieval model (both towers, the projections, the
    temperature, its tokenizer), where the default takes its image backbone only."""
    source = trained["run"]
    last = read_checkpoint(rundir.checkpoint_path(source, 6))["model"]
    starts = {}
    for mode in ("full", "backbone"):
        cfg = tiny_retrieval(trained["root"], tmp_path / mode, f"transfer_from={source}", f"transfer={mode}",
                             "epochs=1", "lr=1e-9", "warmup_epochs=0")
        run = train(cfg, "train", device="cpu", progress=False)
        starts[mode] = read_checkpoint(rundir.checkpoint_path(run, 1))["model"]
        same_tokenizer = (run / "tokenizer.json").read_bytes() == (source / "tokenizer.json").read_bytes()
        assert same_tokenizer == (mode == "full")
    weights = [n for n in last if "running_" not in n and "num_batches" not in n]  # batch-norm statistics move
    for name in weights:  # an lr of 1e-9 moves no weight visibly in one epoch
        assert torch.allclose(starts["full"][name].float(), last[name].float(), atol=1e-5), name
    heads = [n for n in weights if n.startswith("head.")]
    assert heads and any(not torch.allclose(starts["backbone"][n].float(), last[n].float(), atol=1e-5)
                         for n in heads if starts["backbone"][n].shape == last[n].shape)
