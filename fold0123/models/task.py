"""The `Task` base: what a run's task tells the task-agnostic engine (models.tasks holds the table of tasks).

A run is one task x one split; train.py and evaluate.py stay task-agnostic by going through a `Task`:

    task = get_task(cfg.task)
    dataset = task.training_data(cfg, split)            # the train rows and targets; the first target call fits
                                                         # task.state (jigsaw: every photo, clip: MUGE pairs)
    images, y = task.batch(images_uint8, y, generator, cfg)   # jigsaw shuffles here; others pass through
    loss = task.loss(model(normalize(images)), y)
    checkpoint["task_state"] = task.state                # plain dict of floats (e.g. the year's mean/std)
    ...
    task = get_task(name, checkpoint["task_state"])
    frames, cache = task.part_frames(cfg), task.image_cache(cfg)   # the evaluator's parts and their images
    preds = task.predict(outputs)                        # the run directory's space (models.tasks says which)
    task.metrics(preds.numpy(), frames["oof"], dataroot, cfg)

Every hook has the default of a photo task (a dataroot in a data.layout layout, the photo cache of data.images); a
task overrides what differs, so the engine never asks which task it runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from fold0123.common.schema import RunConfig
from fold0123.data.datasets import ImageDataset
from fold0123.data.images import ImageCache
from fold0123.data.photos import photo_cache
from fold0123.data.layout import read_split, read_test

Frame = pd.DataFrame


@dataclass
class Task:
    """One row of the task table. The function fields are plain functions; `state` is the only mutable part
    and travels in checkpoints (a dict of floats)."""
    name: str
    primary: str
    lower_is_better: bool
    n_outputs_fn: Callable[[RunConfig], int]
    targets_fn: Callable[["Task", Frame, Path, RunConfig], np.ndarray]
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    predict_fn: Callable[["Task", torch.Tensor], torch.Tensor]
    metrics_fn: Callable[["Task", np.ndarray, Frame, Path | None, RunConfig | None], dict]
    fit_fn: Callable[["Task", Frame, Path, RunConfig], dict] | None = None
    state: dict = field(default_factory=dict)
    # which evaluated view the primary metric is read from (common.rundir.primary_view): the 8-view mean, or
    # `identity` for a task whose flips change what an image says (clip: "facing right" is not its mirror)
    primary_view: str = "mean"
    run: Path | None = None  # the run directory of a loaded checkpoint (clip reads its tokenizer there)
    head: nn.Module | None = field(default=None, repr=False)  # what `make_head` built, when the loss needs it

    def n_outputs(self, cfg: RunConfig) -> int:
        return self.n_outputs_fn(cfg)

    def load_state(self, state: dict | None) -> "Task":
        """Restore a checkpoint's `task_state` (plain floats); an empty or missing one changes nothing."""
        if state:
            self.state = {str(k): float(v) for k, v in state.items()}
        return self

    def fit(self, frame: Frame, dataroot: str | Path, cfg: RunConfig) -> dict:
        """Fit the target standardisation on `frame` (the train part), replacing any previous state."""
        self.state = dict(self.fit_fn(self, frame, Path(dataroot), cfg)) if self.fit_fn else {}
        return self.state

    def targets(self, frame: Frame, dataroot: str | Path, cfg: RunConfig) -> np.ndarray:
        """`[len(frame), d]` float32 training targets. The first call (on the train part) fits `state`."""
        if self.fit_fn and not self.state:
            self.fit(frame, dataroot, cfg)
        return np.asarray(self.targets_fn(self, frame, Path(dataroot), cfg), dtype=np.float32)

    def check_split(self, cfg: RunConfig, split: str) -> None:
        """Refuse a split this task cannot train on (its files missing), before the run directory is made."""
        read_split(cfg.dataroot, split)

    def adopt(self, source: Path, run: Path) -> None:
        """Before a `transfer: full` run builds anything: take from the source checkpoint's run what its weights
        need beside them (clip: the tokenizer). Nothing for the other tasks."""

    def training_data(self, cfg: RunConfig, split: str) -> torch.utils.data.Dataset:
        """What a run of `split` trains on: the split's train rows with their targets (made first, so a missing
        split or tag file fails before any decoding), over the photo cache."""
        train, _ = read_split(cfg.dataroot, split)
        ids = list(train["object_id"])
        targets = self.targets(train, cfg.dataroot, cfg)
        return ImageDataset(photo_cache(cfg, ids), ids, targets)

    def part_frames(self, cfg: RunConfig) -> dict:
        """Rows of each evaluated part of the run's split (`oof` only when the held-out rows carry labels)."""
        train, held_out = read_split(cfg.dataroot, cfg.split)
        frames = {"train": train, "test": read_test(cfg.dataroot)}
        if cfg.split != "all" and "target" in held_out.columns:
            frames["oof"] = held_out
        return frames

    def image_cache(self, cfg: RunConfig) -> ImageCache:
        """The images the evaluator and the predictions read (every photo of the dataroot)."""
        return photo_cache(cfg)

    def batch(self, images: torch.Tensor, targets: torch.Tensor, generator: torch.Generator | None = None,
              cfg: RunConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Turn a loaded batch into a training batch: identity except for jigsaw (shuffles + labels)."""
        return images, targets

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(outputs.float(), targets.to(outputs.device))

    batch_stat_names = ()  # a class attribute: extra loss.log / TensorBoard columns (clip: in-batch accuracy)

    def batch_stats(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        """Training statistics of the batch `loss` just scored, one float per name in `batch_stat_names`."""
        return {}

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        """Raw head outputs `[n, n_outputs]` -> predictions `[n, d]` in the space the run directory saves."""
        return self.predict_fn(self, outputs.float())

    def metrics(self, predictions: np.ndarray, frame: Frame, dataroot: str | Path | None = None,
                cfg: RunConfig | None = None) -> dict:
        """Metrics of `predictions` `[n, d]` (already in the saved space, e.g. a mean over views) against the
        labels in `frame` (same row order). Plain floats."""
        predictions = np.asarray(predictions, dtype=np.float64)
        if predictions.ndim != 2 or len(predictions) != len(frame):
            raise ValueError(f"{self.name}: predictions of shape {predictions.shape} for {len(frame)} rows")
        out = self.metrics_fn(self, predictions, frame, Path(dataroot) if dataroot else None, cfg)
        return {k: float(v) for k, v in out.items()}

    def prepare_backbone(self, backbone: nn.Module, cfg: RunConfig) -> None:
        """Before the head is made: what the task needs of the backbone (simmim: its patch tokens). Nothing for
        the others."""

    def make_head(self, feature_dim: int, cfg: RunConfig) -> nn.Module | None:
        """A task-specific head for `models.network.build_model`; None = a linear layer of `n_outputs`."""
        return None
