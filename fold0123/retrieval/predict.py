"""Predict a MUGE split with a trained clip run: its similarity matrix (.npy + id orders) and the MUGE JSONL.

    python -m fold0123.retrieval.predict --run runs/demo/retrieval_train [--epoch last] [--split test] [--out DIR]

Texts come from `{split}_texts.jsonl` (test texts need no answers), the gallery is every image of the split's
LMDB (in increasing id order) through the run's image cache, identity view. Writes into `--out` (default
`{run}/retrieval/`): `{split}_similarity.npy`, `{split}_similarity.ids.json`, `{split}_predictions.jsonl`.
The library functions are what retrieval.ttl and the demo reuse.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from fold0123.common import muge, rundir
from fold0123.common.errors import UsageError, cli_main
from fold0123.data.muge import read_texts
from fold0123.data.muge_lmdb import gallery_ids
from fold0123.engine.evaluator import load_model, predict_images
from fold0123.engine.setup import resolve_device
from fold0123.retrieval.predictions import predictions_path, save_similarity, write_predictions


def checkpoint_of(run: Path, epoch: str | int = "last") -> Path:
    found = rundir.list_checkpoints(run)
    if not found:
        raise UsageError(f"{run}: no epoch checkpoints")
    if epoch == "last":
        return found[-1][1]
    try:
        epoch = int(epoch)
    except ValueError:
        raise UsageError(f"--epoch {epoch}: an epoch number or 'last'") from None
    path = rundir.checkpoint_path(run, epoch)
    if not path.is_file():
        raise UsageError(f"{path}: no such checkpoint")
    return path


def load_run_model(run: str | Path, epoch: str | int = "last", device: str | None = "cpu"):
    """(cfg, task, model in eval mode) of a clip run's checkpoint (engine.evaluator.load_model)."""
    run = Path(run)
    cfg = rundir.read_run_config(run)
    if cfg.task != "clip":
        raise UsageError(f"{run}: a {cfg.task} run; retrieval needs a clip run")
    return load_model(run, checkpoint_of(run, epoch), resolve_device(device), cfg)


def gallery(cfg, split: str, answers: bool = False):
    """(texts, image ids) of one split of the run's dataroot: its texts (with the image_ids of their answers when
    `answers`; test texts need none) and its gallery, every image of its LMDB in increasing id order."""
    return read_texts(muge.texts_jsonl(cfg.dataroot, split), need_images=answers), gallery_ids(cfg.dataroot, split)


def similarity(cfg, task, model, split: str = "test"):
    """(text ids, image ids, float32 similarity [texts, images]) of one split of the run's dataroot."""
    texts, image_ids = gallery(cfg, split)
    images = predict_images(model, task, task.image_cache(cfg), [str(i) for i in image_ids],
                            next(model.parameters()).device, 256, views=False)
    text = task.encode_texts(cfg, [t.text for t in texts])
    return [t.text_id for t in texts], image_ids, (text @ images.T).astype(np.float32)


def write_outputs(out: str | Path, split: str, text_ids, image_ids, sim: np.ndarray, tag: str = "") -> dict:
    out = Path(out)
    matrix = save_similarity(out / f"{split}{tag}_similarity.npy", sim, text_ids, image_ids)
    jsonl = write_predictions(predictions_path(out, f"{split}{tag}"), text_ids, image_ids, sim)
    return {"similarity": matrix, "predictions": jsonl}


def predict(run: str | Path, split: str = "test", epoch: str | int = "last", out: str | Path | None = None,
            device: str | None = "cpu") -> dict:
    cfg, task, model = load_run_model(run, epoch, device)
    text_ids, image_ids, sim = similarity(cfg, task, model, split)
    return write_outputs(out or Path(run) / "retrieval", split, text_ids, image_ids, sim)


@cli_main
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--epoch", default="last")
    parser.add_argument("--split", default="test", choices=muge.SPLITS)
    parser.add_argument("--out", default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    print(predict(args.run, args.split, args.epoch, args.out, args.device)["predictions"])


if __name__ == "__main__":
    main()
