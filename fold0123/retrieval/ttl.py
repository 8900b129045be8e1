"""Test-time learning from a cache: before predicting, take K contrastive steps on cached (query text, image)
pairs, on a copy of the model, then predict; the saved checkpoint is never written.

The cache is a folder in the MUGE layout holding one split per predicted split (`test`, and `valid` to choose the
settings on): `{split}_texts.jsonl` with each query's text_id, its text and the image_ids of the cached images for
it, and `{split}_imgs.tsv` with those images. For the bundled set (preprocessing.muge_emoji, `{dataroot}_cache`)
that is each valid and test text paired with the same emoji drawn by another artist (Apple's), as a web image
search for the text would return it; a competition's cache would be what a search engine returned for each
query, fetched once so the run is offline.

What moves is a setting (parameters/ttl.yml, common.schema.TtlConfig): every weight (`all`), the head only
(`heads`: image projection, text tower, temperature), the text tower only (`text`: the gallery's embeddings stay
exactly those of the trained model, only the queries move), or the two output projections (`projections`).
When the backbone does not move, the cached images' backbone features are computed once and a step costs only
the head, so a step can take every cached pair (`batch_size: 0`). The settings are chosen on the valid split's
cache against the valid answers (retrieval.ttl_select), never on the test answers.

The original solution fine-tuned its saved model in place and so overwrote its weights and its validation
numbers; here the model is built fresh from the checkpoint (retrieval.predict.load_run_model) and deep-copied
before any step, batch-norm statistics stay frozen (eval mode: the few cached images must not redefine them), and
tests/test_retrieval_flow.py checks that the checkpoint's bytes are unchanged afterwards.

    python -m fold0123.retrieval.ttl --run RUN --cache datasets/emoji_muge_cache [--conf parameters/ttl.yml]
        [--set steps=300 --set adapt=text ...] [--split test] [--out DIR] [--save]

`--save` keeps the adapted model too, as `{out}/{split}_ttl.pth`, a checkpoint like the run's epochs (its config,
task state and epoch, the adapted weights, and a `ttl` record of the source, cache and settings), so it can be
evaluated, ensembled or trained further (`transfer_from`); the run's own checkpoint is still never written.
"""
from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from fold0123.common import muge
from fold0123.common.config import add_config_args, config_from_args
from fold0123.common.errors import Fold0123Error, cli_main
from fold0123.common.schema import TtlConfig
from fold0123.data.datasets import normalize
from fold0123.data.muge import read_split
from fold0123.data.muge_images import decode_image
from fold0123.engine.trainer import LossWatch
from fold0123.models import clip
from fold0123.models.checkpoints import EMA_KEY, read_checkpoint, save_checkpoint
from fold0123.retrieval.predict import checkpoint_of, load_run_model, similarity, write_outputs

DEFAULT_CONF = Path(__file__).resolve().parents[2] / "parameters" / "ttl.yml"

# which weights a setting trains, by their state-dict name (models.network: backbone.*, head.*; models.clip)
ADAPT: dict[str, Callable[[str], bool]] = {
    "all": lambda name: True,
    "heads": lambda name: name.startswith("head."),
    "text": lambda name: name.startswith("head.text."),
    "projections": lambda name: name.startswith(("head.image.", "head.text.project.")),
}


def moves_backbone(adapt: str) -> bool:
    """Whether setting `adapt` trains the backbone (else its features of the cached images are computed once)."""
    return ADAPT[adapt]("backbone.")


def cache_pairs(cache: str | Path, split: str, size: int) -> tuple[np.ndarray, list[str]]:
    """uint8 `[n, size, size, 3]` images and their texts, one row per cached (text, image) pair."""
    data = read_split(cache, split, decode=False) if muge.texts_jsonl(cache, split).is_file() else None
    if data is None:
        raise Fold0123Error(f"{muge.texts_jsonl(cache, split)}: no cache here (a MUGE-layout folder, see "
                            f"fold0123.retrieval.ttl)")
    missing = next((t for t in data.texts if not t.image_ids), None)
    if missing is not None:
        raise Fold0123Error(f"{muge.texts_jsonl(cache, split)}: text_id {missing.text_id} has no 'image_ids': a cache "
                            f"pairs every query with the images fetched for it")
    decoded = {i: decode_image(b64, size, f"{muge.images_tsv(cache, split)}: image_id {i}")
               for i, b64 in data.images.items()}
    pairs = [(decoded[i], t.text) for t in data.texts for i in t.image_ids]
    return np.stack([p[0] for p in pairs]), [p[1] for p in pairs]


@torch.no_grad()
def backbone_features(model, pixels: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The backbone's features of uint8 `[n, 3, S, S]` images (eval mode), computed once when it stays frozen."""
    device = next(model.parameters()).device
    out = [model.backbone(normalize(pixels[i:i + batch_size].to(device))) for i in range(0, len(pixels), batch_size)]
    return torch.cat(out)


def adapt(model, task, cfg, images: np.ndarray, texts: list[str], opts: TtlConfig, seed: int = 0,
          on_step: Callable[[int, object], None] | None = None):
    """A copy of `model` after `opts.steps` AdamW steps of the clip loss on batches of the cached pairs, and the
    losses; `on_step(step, copy)` is called after each step (retrieval.ttl_select scores a trajectory with it)."""
    model = copy.deepcopy(model)
    task.head = model.head  # the loss and the text encoder must use the copy's towers
    model.eval()  # frozen batch-norm statistics
    wanted = ADAPT[opts.adapt]
    params = []
    for name, param in model.named_parameters():
        param.requires_grad = wanted(name)
        if param.requires_grad:
            params.append(param)
    device = next(model.parameters()).device
    targets = torch.from_numpy(task.text_targets(cfg, texts)).to(device)
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2)
    frozen = not moves_backbone(opts.adapt)
    features = backbone_features(model, pixels) if frozen else None
    optimizer = torch.optim.AdamW(params, lr=opts.lr, weight_decay=opts.weight_decay)
    fixed_scale = None if opts.temperature is None else torch.tensor(1.0 / opts.temperature, device=device)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    watch = LossWatch(f"lower lr ({opts.lr:g}); nothing was written")  # the trainer's divergence check
    for step in range(1, opts.steps + 1):
        pick = (torch.randperm(len(texts), generator=generator)[:opts.batch_size] if opts.batch_size
                else torch.arange(len(texts)))
        inputs = features[pick.to(device)] if frozen else model.backbone(normalize(pixels[pick].to(device)))
        batch = targets[pick.to(device)]
        scale = model.head.scale() if fixed_scale is None else fixed_scale
        loss = clip.clip_loss(model.head(inputs), model.head.text(batch[:, 1:]), batch[:, 0], scale)
        watch.check(float(loss.detach()), f"at test-time learning step {step} of {opts.steps}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(step, model)
    model.eval()
    return model, losses


def test_time_learning(run: str | Path, cache: str | Path, opts: TtlConfig | None = None, split: str = "test",
                       epoch: str | int = "last", out: str | Path | None = None, device: str | None = "cpu",
                       save: bool = False) -> dict:
    """Predict `split` after the steps on the cache; writes `{split}_ttl_similarity.npy` (+ ids) and
    `{split}_ttl_predictions.jsonl` into `out` (default `{run}/retrieval/`), and with `save` the adapted model as a
    checkpoint of its own, `{split}_ttl.pth` there (save_adapted). Returns their paths and the losses."""
    opts = opts or TtlConfig()
    cfg, task, model = load_run_model(run, epoch, device)
    images, texts = cache_pairs(cache, split, cfg.image_size)
    adapted, losses = adapt(model, task, cfg, images, texts, opts, seed=cfg.seed)
    text_ids, image_ids, sim = similarity(cfg, task, adapted, split)
    out = Path(out or Path(run) / "retrieval")
    paths = write_outputs(out, split, text_ids, image_ids, sim, tag="_ttl")
    if save:
        paths["checkpoint"] = save_adapted(checkpoint_of(Path(run), epoch), adapted, out / f"{split}_ttl.pth",
                                           {"split": split, "cache": str(cache), "losses": losses, **opts.model_dump()})
    return {**paths, "losses": losses, "pairs": len(texts)}


def save_adapted(source: Path, adapted, path: Path, ttl: dict) -> Path:
    """The adapted copy as a checkpoint like its source (the run's config and task state, the epoch), its weights
    the copy's, `ttl` saying how it was made: evaluate.py, the predictions (load_model with the file), a soup or
    `transfer_from` read it as they read an epoch's. The source file is never written."""
    state = dict(read_checkpoint(source))
    state["model"] = {name: value.detach().cpu() for name, value in adapted.state_dict().items()}
    state.pop(EMA_KEY, None)  # the source's moving average is not the adapted model's
    state["ttl"] = {**ttl, "source": str(source)}
    return save_checkpoint(path, state)


@cli_main
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--cache", required=True, help="a MUGE-layout folder of cached (text, image) pairs")
    add_config_args(parser, required=False)
    parser.add_argument("--split", default="test")
    parser.add_argument("--epoch", default="last")
    parser.add_argument("--out", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--save", action="store_true", help="also write the adapted model as {out}/{split}_ttl.pth")
    args = parser.parse_args(argv)
    args.conf = args.conf or DEFAULT_CONF
    opts = config_from_args(args, TtlConfig)
    result = test_time_learning(args.run, args.cache, opts, args.split, args.epoch, args.out, args.device, args.save)
    losses = result["losses"]
    print(f"{result['predictions']} ({opts.steps} steps, adapt {opts.adapt}, lr {opts.lr:g}, on {result['pairs']} "
          f"cached pairs" + (f", loss {losses[0]:.3f} -> {losses[-1]:.3f})" if losses else ")"))


if __name__ == "__main__":
    main()
