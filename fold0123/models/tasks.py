"""The task table: per task, what the head outputs, the targets, the loss, the saved predictions and the metrics
(the `Task` base and how the engine uses it: models.task).

Saved predictions (DESIGN.md's contract): target -> predicted target (d=1); classify (alias onehot, its atmaCup
name) -> class probabilities (d=K, the competition's classes: data.competition); sortingdate -> year,
de-standardised with the train statistics in `state` (d=1); materialstechniques -> the predicted word2vec vector
(d=w2v_dim); tags -> each frequent tag token's probability (d=the tokens at least tags_min_objects objects carry:
data.tags.read_tag_targets); jigsaw -> per-tile position probabilities (d=81, read as [tile, position]); clip ->
the L2-normalised image embedding (d=clip.embed_dim, models.clip_task).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score

from fold0123.common.config import ConfigError
from fold0123.common.errors import LayoutError
from fold0123.common.schema import RunConfig
from fold0123.data import jigsaw
from fold0123.data.competition import read_competition, score
from fold0123.data.datasets import ImageDataset
from fold0123.data.photos import photo_cache
from fold0123.data.layout import read_split
from fold0123.data.metrics import expected_class, rmse
from fold0123.data.tags import read_tag_targets, read_tag_vectors
from fold0123.models import arcface
from fold0123.models.clip_task import make_clip_task
from fold0123.models.mim import make_mim_task
from fold0123.models.task import Frame, Task


def _column(frame: Frame, column: str) -> np.ndarray:
    if column not in frame.columns:
        raise LayoutError(f"frame has no {column!r} column (has {', '.join(map(str, frame.columns))}): "
                          f"metrics and targets need a labelled split part")
    return frame[column].to_numpy(dtype=np.float64)


# --- target: the label as a number (atmaCup's ordinal class, or a regression target), MSE / RMSE ------------

def _target_metrics(task, preds, frame, dataroot, cfg):
    y = _column(frame, "target")
    out = {"rmse": rmse(preds[:, 0], y)}
    bounds = read_competition(dataroot).target_range
    if bounds is not None:  # what the prediction scores once clipped into the labels' range, as submitted
        out["rmse_clipped"] = rmse(np.clip(preds[:, 0], *bounds), y)
    return out


def _make_target() -> Task:
    return Task("target", "rmse", True, lambda cfg: 1,
                lambda task, frame, root, cfg: _column(frame, "target")[:, None],
                F.mse_loss, lambda task, out: out, _target_metrics)


# --- classify (atmaCup: onehot): K-way classification ------------------------------------------------------

def _n_classes(cfg: RunConfig) -> int:
    n = read_competition(cfg.dataroot).n_classes
    if n < 2:
        raise ConfigError(f"task {cfg.task!r}: {cfg.dataroot}'s competition has no classes (a regression target): "
                          f"use task target")
    return n


def _classify_targets(task, frame, root, cfg):
    """One-hot rows, smoothed by `label_smoothing` (cross entropy against them is torch's label-smoothed CE)."""
    n = _n_classes(cfg)
    onehot = np.eye(n, dtype=np.float32)[np.rint(_column(frame, "target")).astype(int)]
    return onehot * (1 - cfg.label_smoothing) + cfg.label_smoothing / n if cfg.label_smoothing else onehot


def _classify_metrics(task, probs, frame, dataroot, cfg):
    """Accuracy and log loss always; the RMSE of the expected class for an ordinal target (atmaCup's primary),
    the competition's own metric otherwise. The log loss is written out: scikit-learn's `log_loss` renormalises
    rows and clips differently, which would move every metrics file's figure."""
    y = _column(frame, "target")
    p_true = np.clip(probs[np.arange(len(y)), np.rint(y).astype(int)], 1e-15, 1.0)
    out = {"accuracy": score("accuracy", y, probs), "logloss": float(-np.mean(np.log(p_true)))}
    competition = read_competition(dataroot)
    if competition.kind == "ordinal":
        out = {"rmse": rmse(expected_class(probs), y), **out}
    elif competition.metric not in out:
        out[competition.metric] = score(competition.metric, y, probs)
    return out


# >>> arcface hook (models/arcface.py): `head: arcface` swaps the linear head for a sub-center ArcFace whose
# margins come from the class counts fitted into `state`; the loss adds them. The default linear head: unchanged.
class ClassifyTask(Task):
    def make_head(self, feature_dim, cfg):
        self.head = (arcface.build_head(feature_dim, _n_classes(cfg), cfg, self.state) if cfg.head == "arcface"
                     else None)
        return self.head

    def loss(self, outputs, targets):
        return super().loss(outputs, targets) if self.head is None else self.head.loss(outputs, targets)


def _classify_fit(task, frame, root, cfg):
    return arcface.fit_state(_column(frame, "target"), _n_classes(cfg), cfg)
# <<< arcface hook


def _make_classify(name: str = "classify") -> Task:
    # cross_entropy with probability targets: one-hot rows give the usual CE, soft rows (pseudo labels) work too;
    # the ArcFace head's logits (s * cosine) go through the same softmax
    return ClassifyTask(name, "rmse", True, _n_classes, _classify_targets, F.cross_entropy,
                        lambda task, out: torch.softmax(out, dim=-1), _classify_metrics, fit_fn=_classify_fit)


# --- sortingdate: the year, standardised with the train part's mean/std ----------------------------------

def _year_fit(task, frame, root, cfg):
    years = _column(frame, "sorting_date")
    return {"mean": float(years.mean()), "std": float(max(years.std(), 1e-6))}


def _year_targets(task, frame, root, cfg):
    return ((_column(frame, "sorting_date") - task.state["mean"]) / task.state["std"])[:, None]


def _year_predict(task, out):
    if not task.state:
        raise ValueError("sortingdate: task.state has no year statistics (load them from the checkpoint's "
                         "'task_state' before predicting)")
    return out * task.state["std"] + task.state["mean"]


def _year_metrics(task, years, frame, dataroot, cfg):
    return {"rmse_years": rmse(years[:, 0], _column(frame, "sorting_date"))}


def _make_sortingdate() -> Task:
    return Task("sortingdate", "rmse_years", True, lambda cfg: 1, _year_targets, F.mse_loss, _year_predict,
                _year_metrics, fit_fn=_year_fit)


# --- materialstechniques: regress the object's tag vector (word2vec.py) ----------------------------------

def _w2v_metrics(task, preds, frame, dataroot, cfg):
    if dataroot is None:
        raise ValueError("materialstechniques metrics need the dataroot (for the tag vectors)")
    truth = read_tag_vectors(dataroot, cfg.w2v_dim, frame["object_id"]).astype(np.float64)
    norms = np.linalg.norm(truth, axis=1) * np.linalg.norm(preds, axis=1)
    tagged = norms > 0  # an object without tags has a zero vector: no direction to compare
    cosine = (truth * preds).sum(1)[tagged] / norms[tagged]
    return {"cosine": float(cosine.mean()) if tagged.any() else float("nan"),
            "mse": float(np.mean((truth - preds) ** 2))}


def _make_materialstechniques() -> Task:
    return Task("materialstechniques", "cosine", False, lambda cfg: cfg.w2v_dim,
                lambda task, frame, root, cfg: read_tag_vectors(root, cfg.w2v_dim, frame["object_id"]),
                F.mse_loss, lambda task, out: out, _w2v_metrics)


# --- tags: each frequent material / technique token as its own yes/no (multi-label BCE) ----------------------

def _tag_targets(task, frame, root, cfg):
    return read_tag_targets(root, cfg.tags_min_objects, frame["object_id"])


def _tag_metrics(task, probs, frame, dataroot, cfg):
    """The mean binary log loss, and the macro average precision over the tokens the rows carry at least once."""
    if dataroot is None or cfg is None:
        raise ValueError("tags metrics need the dataroot and the run config (for the tag tables)")
    truth = read_tag_targets(dataroot, cfg.tags_min_objects, frame["object_id"])
    p = np.clip(probs, 1e-7, 1 - 1e-7)
    present = truth.any(axis=0)
    return {"bce": float(-np.mean(truth * np.log(p) + (1 - truth) * np.log1p(-p))),
            "map": float(average_precision_score(truth[:, present], probs[:, present], average="macro"))
            if present.any() else float("nan")}


def _make_tags() -> Task:
    return Task("tags", "bce", True, lambda cfg: read_tag_targets(cfg.dataroot, cfg.tags_min_objects, []).shape[1],
                _tag_targets, F.binary_cross_entropy_with_logits, lambda task, out: torch.sigmoid(out), _tag_metrics)


# --- jigsaw: the pretext; targets are made per batch -----------------------------------------------------

@dataclass
class JigsawTask(Task):
    """Targets come from shuffling, not from the frame: `batch` makes them (identity + 7 shuffles per image)."""
    _permutations: dict = field(default_factory=dict, repr=False)

    def permutations(self, cfg: RunConfig) -> torch.Tensor | None:
        """`uniform` draws the shuffles from all (grid*grid)! permutations (the original solution); `hamming` /
        `random` from a fixed set of `n_permutations`, seeded by the run's seed (data.jigsaw.permutation_set)."""
        opts = cfg.jigsaw
        if opts.permutation_set == "uniform":
            return None
        key = (opts.permutation_set, opts.n_permutations, opts.grid, cfg.seed)
        if key not in self._permutations:
            self._permutations[key] = jigsaw.permutation_set(key[1], key[2], key[0], key[3])
        return self._permutations[key]

    def check_split(self, cfg, split):
        read_split(cfg.dataroot, "all")

    def training_data(self, cfg, split):
        """The pretext: every photo of the split `all` (train + test), whatever the run's split; labels unused."""
        train, test = read_split(cfg.dataroot, "all")
        ids = list(train["object_id"]) + list(test["object_id"])
        return ImageDataset(photo_cache(cfg, ids), ids, None)

    def batch(self, images, targets, generator=None, cfg=None):
        return jigsaw.jigsaw_batch(images, cfg.jigsaw.permutations_per_image, self.permutations(cfg), generator,
                                   cfg.jigsaw.grid)


def _jigsaw_predict(task, out):
    tiles = int(round(out.shape[-1] ** 0.5))
    return torch.softmax(out.reshape(-1, tiles, tiles), dim=-1).reshape(out.shape)


def _jigsaw_metrics(task, probs, frame, dataroot, cfg):
    """On unshuffled images every tile is in place: how often the model says so (a sanity check of the pretext,
    since evaluation sees the 8 views of whole photos, not shuffles)."""
    tiles = int(round(probs.shape[1] ** 0.5))
    placed = probs.reshape(len(probs), tiles, tiles).argmax(-1) == np.arange(tiles)
    return {"tile_accuracy": float(placed.mean()) if len(probs) else float("nan")}


def _make_jigsaw() -> Task:
    return JigsawTask("jigsaw", "tile_accuracy", False, lambda cfg: cfg.jigsaw.grid ** 4,
                      lambda task, frame, root, cfg: np.zeros((len(frame), 0), np.float32),
                      jigsaw.jigsaw_loss, _jigsaw_predict, _jigsaw_metrics)


TASKS: dict[str, Callable[[], Task]] = {
    "jigsaw": _make_jigsaw,
    "target": _make_target,
    "classify": _make_classify,
    "onehot": lambda: _make_classify("onehot"),
    "sortingdate": _make_sortingdate,
    "materialstechniques": _make_materialstechniques,
    "tags": _make_tags,
    "clip": make_clip_task,  # text-to-image retrieval on a MUGE-layout dataroot (models.clip_task)
    "simmim": make_mim_task,  # the masked-image pretext for timm ViTs (models.mim)
}


CLASS_TASKS = ("classify", "onehot")


def get_task(name: str, state: dict | None = None, dataroot: str | Path | None = None) -> Task:
    """A fresh Task (its own state) by name; pass a checkpoint's `task_state` to restore its statistics, and the
    dataroot to rank a classification task by its competition's metric (atmaCup: the expected class's RMSE)."""
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; expected one of {', '.join(TASKS)}")
    task = TASKS[name]().load_state(state)
    if name in CLASS_TASKS and dataroot is not None:
        competition = read_competition(dataroot)
        if competition.kind == "classification":
            task.primary, task.lower_is_better = competition.metric, competition.lower_is_better
    return task
