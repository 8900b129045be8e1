"""Test-time learning from a cache: before predicting, take K contrastive steps on cached (query text, image)
pairs, on a copy of the model, then predict; the saved checkpoint is never written.

The cache is a folder in the MUGE layout holding one split (`test` by default): `{split}_texts.jsonl` with each
query's text_id, its text and the image_ids of the cached images for it, and `{split}_imgs.tsv` with those
images. For the bundled set (preprocessing.muge_emoji, `{dataroot}_cache`) that is each test text paired with
the same emoji drawn by another artist (Apple's), as a web image search for the text would return it; a
competition's cache would be what a search engine returned for each query, fetched once so the run is offline.

The original solution fine-tuned its saved model in place and so overwrote its weights and its validation
numbers; here the model is built fresh from the checkpoint (retrieval.predict.load_run_model) and deep-copied
before any step, batch-norm statistics stay frozen (eval mode: the few cached images must not redefine them), and
tests/test_retrieval_flow.py checks that the checkpoint's bytes are unchanged afterwards.

    python -m fold0123.retrieval.ttl --run RUN --cache datasets/emoji_muge_cache --steps 30 [--lr 1e-4] [--out DIR]
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import numpy as np
import torch

from fold0123.common import muge
from fold0123.common.errors import Fold0123Error, error_line
from fold0123.data.datasets import normalize
from fold0123.data.muge import read_split
from fold0123.data.muge_images import decode_image
from fold0123.retrieval.predict import load_run_model, similarity, write_outputs


def cache_pairs(cache: str | Path, split: str, size: int) -> tuple[np.ndarray, list[str]]:
    """uint8 `[n, size, size, 3]` images and their texts, one row per cached (text, image) pair."""
    data = read_split(cache, split, decode=False) if muge.texts_jsonl(cache, split).is_file() else None
    if data is None:
        raise Fold0123Error(f"{muge.texts_jsonl(cache, split)}: no cache here (a MUGE-layout folder, see "
                            f"fold0123.retrieval.ttl)")
    decoded = {i: decode_image(b64, size, f"{muge.images_tsv(cache, split)}: image_id {i}")
               for i, b64 in data.images.items()}
    pairs = [(decoded[i], t.text) for t in data.texts for i in t.image_ids]
    return np.stack([p[0] for p in pairs]), [p[1] for p in pairs]


def adapt(model, task, cfg, images: np.ndarray, texts: list[str], steps: int, lr: float, batch_size: int = 64,
          seed: int = 0):
    """A copy of `model` after `steps` AdamW steps of the clip loss on random batches of the cached pairs."""
    model = copy.deepcopy(model)
    task.head = model.head  # the loss and the text encoder must use the copy's towers
    model.eval()  # frozen batch-norm statistics; every weight still trains
    for param in model.parameters():
        param.requires_grad = True
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    targets = torch.from_numpy(task.text_targets(cfg, texts))
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        pick = torch.randperm(len(texts), generator=generator)[:batch_size]
        loss = task.loss(model(normalize(pixels[pick].to(device))), targets[pick])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    model.eval()
    return model, losses


def test_time_learning(run: str | Path, cache: str | Path, steps: int = 30, lr: float = 1e-4, split: str = "test",
                       epoch: str | int = "last", out: str | Path | None = None, device: str | None = "cpu") -> dict:
    """Predict `split` after K steps on the cache; writes `{split}_ttl_similarity.npy` (+ ids) and
    `{split}_ttl_predictions.jsonl` into `out` (default `{run}/retrieval/`). Returns their paths and the losses."""
    cfg, task, model, _ = load_run_model(run, epoch, device)
    images, texts = cache_pairs(cache, split, cfg.image_size)
    adapted, losses = adapt(model, task, cfg, images, texts, steps, lr, seed=cfg.seed)
    text_ids, image_ids, sim = similarity(cfg, task, adapted, split)
    paths = write_outputs(out or Path(run) / "retrieval", split, text_ids, image_ids, sim, tag="_ttl")
    return {**paths, "losses": losses, "pairs": len(texts)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--cache", required=True, help="a MUGE-layout folder of cached (text, image) pairs")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--split", default="test")
    parser.add_argument("--epoch", default="last")
    parser.add_argument("--out", default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    try:
        result = test_time_learning(args.run, args.cache, args.steps, args.lr, args.split, args.epoch, args.out,
                                    args.device)
    except Fold0123Error as err:
        sys.exit(error_line(err))
    print(f"{result['predictions']} ({args.steps} steps on {result['pairs']} cached pairs, "
          f"loss {result['losses'][0]:.3f} -> {result['losses'][-1]:.3f})")


if __name__ == "__main__":
    main()
