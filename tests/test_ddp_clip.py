"""The clip task's loss across ranks (issue 18; models.clip): 2 gloo ranks, each holding its share of a global
batch of pairs and gathering every rank's embeddings for its negatives, give the single-process loss on the full
batch, and, through DistributedDataParallel with the trainer's loss weights, the single-process gradients of the
embeddings and of every parameter (image projection, text tower, temperature).

The shares are unequal (7 pairs: 3 and 4), as the trainer's last micro-batch can make them, and two texts repeat
across the ranks, so the masking of identical texts must see the other rank's keys. The ranks run in processes
forked by `torch.multiprocessing.start_processes` (conftest sets OMP_NUM_THREADS=1 before torch starts).
"""
from __future__ import annotations

import os

import pytest
import torch

from fold0123.engine import distributed
from fold0123.engine.distributed import DistEnv
from fold0123.engine.trainer import rank_weight
from fold0123.models import clip
from tests.test_ddp import free_port

N, WORLD = 7, 2
KEYS = torch.tensor([1, 2, 3, 1, 4, 5, 2])  # texts 0 and 3, 1 and 6 are the same string: across the two ranks
TOLERANCE = 1e-5  # measured: loss 1.4e-7, parameter gradients 9.5e-7, embedding gradients 2.4e-7 (float32 sums)


def batch():
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(N, 8, generator=gen)
    tokens = torch.randint(1, 20, (N, 5), generator=gen)
    tokens[2, 3:] = 0  # some padding
    return features, tokens


def head() -> clip.ClipHead:
    torch.manual_seed(1)
    return clip.ClipHead(feature_dim=8, vocab_size=20, embed_dim=6, text_dim=8, temperature=0.07, text_layers=1,
                         text_heads=2, max_length=5)


def one_process():
    """The loss on the full batch and its gradients: embeddings (image, text) and parameters."""
    model = head()
    features, tokens = batch()
    image, text = model(features), model.text(tokens)
    image.retain_grad()
    text.retain_grad()
    loss = clip.clip_loss(image, text, KEYS, model.scale())
    loss.backward()
    return {"loss": loss.detach(), "image": image.grad, "text": text.grad,
            "params": {k: p.grad.clone() for k, p in model.named_parameters()}}


def _rank(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=WORLD)
    env = DistEnv(rank, WORLD, rank)
    assert clip.world_size() == WORLD
    model = torch.nn.parallel.DistributedDataParallel(head())
    features, tokens = batch()
    part = distributed.rank_part(N, env)
    mine = part.stop - part.start
    # as the trainer: the image embedding from the DDP forward, the text tower's from the head itself
    image, text = model(features[part]), model.module.text(tokens[part])
    image.retain_grad()
    text.retain_grad()
    loss = clip.clip_loss(image, text, KEYS[part], model.module.scale())
    (loss * rank_weight(1.0, N, mine, env)).backward()  # the trainer's weight of this rank's mean loss
    summed, count = distributed.sum_over_ranks(env, [float(loss.detach()) * mine, float(mine)], torch.device("cpu"))
    torch.save({"loss": summed / count, "image": image.grad, "text": text.grad, "part": (part.start, part.stop),
                "params": {k: p.grad.clone() for k, p in model.module.named_parameters()}}, f"{out}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_one_process_takes_the_plain_path():
    assert clip.world_size() == 1
    model = head()
    features, tokens = batch()
    image, text = torch.nn.functional.normalize(model(features)), torch.nn.functional.normalize(model.text(tokens))
    logits = model.scale() * image @ text.T
    same = KEYS[:, None] == KEYS[None, :]
    same.fill_diagonal_(False)
    logits = logits.masked_fill(same, float("-inf"))
    labels = torch.arange(N)
    expected = (torch.nn.functional.cross_entropy(logits, labels)
                + torch.nn.functional.cross_entropy(logits.T, labels)) / 2
    loss = clip.clip_loss(model(features), model.text(tokens), KEYS, model.scale())
    assert float(loss.detach()) == float(expected.detach())


def test_two_ranks_give_the_one_process_loss_and_gradients_on_the_full_batch(tmp_path):
    single = one_process()
    torch.multiprocessing.start_processes(_rank, (free_port(), str(tmp_path)), nprocs=WORLD, start_method="fork")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    assert [r["part"] for r in ranks] == [(0, 3), (3, 7)]
    for r in ranks:
        assert r["loss"] == pytest.approx(float(single["loss"]), abs=TOLERANCE)
        for name, grad in single["params"].items():  # DDP's average: the same on both ranks, the 1-process step
            assert float((r["params"][name] - grad).abs().max()) < TOLERANCE, name
    # each rank's embeddings get W times the global loss's gradient (the SUM backward); DDP's mean divides it again
    for key in ("image", "text"):
        gathered = torch.cat([r[key] for r in ranks]) / WORLD
        assert float((gathered - single[key]).abs().max()) < TOLERANCE, key
    assert float(single["params"]["logit_scale"].abs()) > 1e-3  # the temperature's gradient is not trivially zero
