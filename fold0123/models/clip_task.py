"""The `clip` task: text-to-image retrieval on a MUGE-layout dataroot, trained by train.py like every task.

How it meets the task-agnostic engine (the hooks of models.task's Task, engine.trainer, engine.evaluator):
- `training_data(cfg, split)`: the pairs of the run split's MUGE splits (common.muge.RUN_SPLITS: `train`, or
  `all` = train + valid) from the packed LMDB, each with its target row `[text key, token ids...]` (the key marks
  identical strings, which the loss does not treat as negatives). Images come from the memmap cache that
  data.muge_images decodes once from the LMDB (or, with `clip.reader: lmdb`, straight from the LMDB).
- `make_head`: the run's WordPiece tokenizer (fitted on the train split's texts when the run starts, data.tokenizer,
  and kept as `{run}/tokenizer.json`) and models.clip's ClipHead; the vocabulary's size and digest are the task
  state, checked when a checkpoint is loaded.
- `part_frames` / `image_cache`: the evaluator's parts are the splits' galleries (`oof` = valid for split
  `train`; `test`; `train`), one row per image; its npz files hold the 8-view image embeddings as usual.
- `metrics`: the held-out split's texts are encoded by the head's text tower and ranked against the whole
  gallery: text->image and image->text Recall@1/5/10 and MR (data.recall); primary `t2i_mr`, the MUGE metric,
  read from the identity view (`primary_view`): the watcher's line, the monitor and metrics.json's
  `primary_view` say so, since a flip changes what an emoji means and the 8-view mean scores far lower.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from fold0123.common import muge, rundir
from fold0123.common.io import write_text
from fold0123.common.errors import LayoutError, UsageError
from fold0123.common.schema import RunConfig
from fold0123.data import tokenizer as tok
from fold0123.data.muge import read_texts
from fold0123.data.datasets import ImageDataset
from fold0123.data.muge_images import LmdbPairs, muge_cache
from fold0123.data.muge_lmdb import LmdbSplit, gallery_ids
from fold0123.data.recall import retrieval_metrics
from fold0123.models import clip
from fold0123.models.task import Task

TOKENIZER = "tokenizer.json"


@dataclass
class ClipTask(Task):
    primary_view: str = "identity"  # a flipped emoji is another emoji: the 8-view mean is no one's embedding
    _tokenizer: object = field(default=None, repr=False)

    # --- text
    def tokenizer_path(self, cfg: RunConfig) -> Path | None:
        """`{run}/tokenizer.json`: `run` when the checkpoint was loaded from one, else the run directory of `cfg`;
        None for a config that names no split (a model built outside any run, as unit tests do)."""
        if self.run is not None:
            return Path(self.run) / TOKENIZER
        return rundir.run_dir(cfg, cfg.split) / TOKENIZER if cfg.split else None

    def adopt(self, source: Path, run: Path) -> None:
        """The source run's tokenizer.json into `run`, so the text tower's embeddings keep their tokens' meaning."""
        own, theirs = Path(run) / TOKENIZER, Path(source).parent / TOKENIZER
        if not theirs.is_file():
            raise LayoutError(f"{theirs}: missing: `transfer: full` of a clip model needs the tokenizer of the run "
                              f"it came from, beside its checkpoint")
        write_text(own, theirs.read_text())
        self._tokenizer = None

    def tokenizer(self, cfg: RunConfig):
        """The run's WordPiece tokenizer: read from the run directory, or fitted on the train split's texts and
        written there (a fresh run). Fitting is not reproducible from run to run (the trainer's ties depend on
        hash order), so the file, not a refit, is what evaluation and prediction use; the task state holds its
        vocabulary's size and digest, so a replaced file is an error."""
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            path = self.tokenizer_path(cfg)
            if path is not None and path.is_file():
                self._tokenizer = Tokenizer.from_file(str(path))
            elif self.state:
                raise LayoutError(f"{path}: the run's tokenizer is missing (it is written beside the checkpoints "
                                  f"when the run starts; a checkpoint moved elsewhere needs it beside it)")
            else:
                texts = [t.text for t in read_texts(muge.texts_jsonl(cfg.dataroot, "train"))]
                self._tokenizer = tok.fit_tokenizer(texts, cfg.clip.vocab_size)
                if path is not None:
                    write_text(path, self._tokenizer.to_str())
        return self._tokenizer

    def text_targets(self, cfg: RunConfig, texts) -> np.ndarray:
        """`[n, 1 + max_length]` int64: the text's key, then its token ids."""
        keys = np.asarray([tok.text_key(t) for t in texts], dtype=np.int64)[:, None]
        return np.concatenate([keys, tok.encode(self.tokenizer(cfg), texts, cfg.clip.max_length)], axis=1)

    @torch.no_grad()
    def encode_texts(self, cfg: RunConfig, texts, batch_size: int = 256) -> np.ndarray:
        """L2-normalised text embeddings `[n, embed_dim]` float32 from the head's text tower."""
        head = self._head()
        device = next(head.parameters()).device
        tokens = torch.from_numpy(tok.encode(self.tokenizer(cfg), list(texts), cfg.clip.max_length))
        out = [F.normalize(head.text(tokens[i:i + batch_size].to(device)).float(), dim=-1).cpu()
               for i in range(0, len(tokens), batch_size)]
        return torch.cat(out).numpy() if out else np.zeros((0, cfg.clip.embed_dim), np.float32)

    # --- model
    def make_head(self, feature_dim, cfg):
        tokenizer = self.tokenizer(cfg)
        size, digest = tokenizer.get_vocab_size(), tok.vocab_digest(tokenizer)
        if self.state and (int(self.state.get("vocab_size", -1)) != size or self.state.get("vocab_digest") != digest):
            raise LayoutError(f"{self.tokenizer_path(cfg)}: another vocabulary ({size} tokens) than the "
                              f"checkpoint's ({int(self.state.get('vocab_size', -1))}): not this run's tokenizer")
        self.state = {"vocab_size": float(size), "vocab_digest": digest}
        opts = cfg.clip
        self.head = clip.ClipHead(feature_dim, size, opts.embed_dim, opts.text_dim, opts.temperature,
                                  opts.text_layers, opts.text_heads, opts.max_length)
        return self.head

    def _head(self) -> nn.Module:
        if self.head is None:
            raise ValueError("clip: build the model with models.network.build_model(cfg, task) first "
                             "(the loss and metrics use its text tower)")
        return self.head

    def loss(self, outputs, targets):
        head = self._head()
        targets = targets.to(outputs.device).long()
        text = head.text(targets[:, 1:])
        self._last = (outputs.detach(), text.detach(), targets[:, 0])  # for batch_stats, without a second pass
        return clip.clip_loss(outputs, text, targets[:, 0], head.scale())

    batch_stat_names = ("acc_i2t", "acc_t2i")  # unannotated: a class attribute, not a dataclass field

    def batch_stats(self, outputs, targets) -> dict[str, float]:
        """In-batch image-to-text and text-to-image accuracy of the pairs the last `loss` call saw."""
        return clip.in_batch_accuracy(*self._last)

    # --- data
    def check_split(self, cfg: RunConfig, split: str) -> None:
        if split not in muge.RUN_SPLITS:
            raise UsageError(f"--split {split}: a clip run trains on {' or '.join(muge.RUN_SPLITS)} "
                             f"(train: hold out valid; all: train + valid)")

    def training_data(self, cfg: RunConfig, split: str):
        """The pairs of the run split's MUGE splits."""
        self.check_split(cfg, split)
        datasets = []
        for name in muge.RUN_SPLITS[split]:
            reader = LmdbSplit(cfg.dataroot, name)
            pairs = reader.pairs()
            reader.close()
            targets = self.text_targets(cfg, [p[2] for p in pairs])
            if cfg.clip.reader == "lmdb":
                datasets.append(LmdbPairs(cfg.dataroot, name, targets, cfg.image_size))
            else:
                datasets.append(ImageDataset(self.image_cache(cfg), [p[0] for p in pairs], targets, np.int64))
        return datasets[0] if len(datasets) == 1 else torch.utils.data.ConcatDataset(datasets)

    def image_cache(self, cfg: RunConfig):
        return muge_cache(cfg.dataroot, muge.SPLITS, cfg.image_size, rundir.cache_dir(cfg.checkpoints_dir))

    def part_frames(self, cfg: RunConfig) -> dict:
        """One row per gallery image (`object_id` = the image id as a string, `muge_split`) per part."""
        def gallery(name):
            return pd.DataFrame({"object_id": [str(i) for i in gallery_ids(cfg.dataroot, name)], "muge_split": name})

        frames = {"train": gallery("train"), "test": gallery("test")}
        if muge.HELD_OUT.get(cfg.split):
            frames["oof"] = gallery(muge.HELD_OUT[cfg.split])
        return frames


def gallery_positives(texts, image_ids) -> list[list[int]]:
    column = {int(i): c for c, i in enumerate(image_ids)}
    return [[column[i] for i in (t.image_ids or ()) if i in column] for t in texts]


def _metrics(task: ClipTask, embeddings, frame, dataroot, cfg):
    split = str(frame["muge_split"].iloc[0])
    texts = read_texts(muge.texts_jsonl(dataroot, split))
    images = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    text = task.encode_texts(cfg, [t.text for t in texts]).astype(np.float64)
    out = retrieval_metrics(text @ images.T, gallery_positives(texts, frame["object_id"]))
    out["logit_scale"] = float(task._head().scale().detach())
    return out


def make_clip_task() -> ClipTask:
    return ClipTask("clip", "t2i_mr", False, lambda cfg: cfg.clip.embed_dim,
                    lambda task, frame, root, cfg: np.zeros((len(frame), 0), np.float32), None,
                    lambda task, out: F.normalize(out, dim=-1), _metrics)
