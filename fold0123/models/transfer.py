"""Transfer a pretext backbone into a task model, and the freezing schedules for fine-tuning it.

Freeze modes (`apply_freeze(model, mode, epoch)`, called at the start of every epoch):
- `none`: everything trains.
- `last_half`: only the last half of the backbone's stages and the head train (the original solution's follow-up:
  keep the jigsaw's low-level filters, adapt the high-level ones). ResNet: `backbone.layer3`, `backbone.layer4`;
  ConvNeXt: `stages.2`, `stages.3`; ViT: the last half of `blocks` (models.stages says what a stage is).
  `layer34` is its atmaCup name (the write-up's "freeze layer3/4/fc"): the same mode, kept so that configs and
  runs that name it stay valid and current.
- `head`: only the head trains (a linear probe of the pretext features).
- `fine_tune`: head only before `unfreeze_epoch`, everything from it on (fastai's `fine_tune(freeze_epochs=1)`
  is `unfreeze_epoch=2`).
Frozen parameters get `requires_grad=False` (optimizers skip parameters without gradients, so one optimizer
over all parameters is fine) and frozen batch-norm layers are put in eval mode so their statistics stay put.
"""
from __future__ import annotations

from pathlib import Path

import torch.nn as nn

from fold0123.common.config import ConfigError
from fold0123.models.checkpoints import CheckpointError, load_weights, read_checkpoint
from fold0123.models.stages import backbone_stages

FREEZE_MODES = ("none", "last_half", "layer34", "head", "fine_tune")
HEAD = "head."


def load_backbone(model: nn.Module, checkpoint_path: str | Path) -> int:
    """Copy the `backbone.*` weights of a checkpoint into `model.backbone`; the head keeps its fresh init.

    Returns the number of tensors loaded. The backbone must match exactly (same architecture): a silent partial
    load would look like training from scratch.
    """
    checkpoint = read_checkpoint(checkpoint_path)
    backbone = {k[len("backbone."):]: v for k, v in checkpoint["model"].items() if k.startswith("backbone.")}
    if not backbone:
        raise CheckpointError(f"{checkpoint_path}: no 'backbone.*' weights in the checkpoint's model")
    return load_weights(model.backbone, backbone, checkpoint_path, "backbone")


def load_full(model: nn.Module, checkpoint_path: str | Path) -> int:
    """Copy every weight of a checkpoint into `model` (`transfer: full`): the head too, e.g. a trained CLIP model's
    two towers, projections and temperature, to fine-tune it further. The whole model must match exactly."""
    return load_weights(model, read_checkpoint(checkpoint_path)["model"], checkpoint_path, "model")


def trainable_names(model: nn.Module, mode: str | None, epoch: int, unfreeze_epoch: int = 2) -> set[str] | None:
    """Names of the parameters of `model` (a models.network.Network) that train in `mode` at (1-based) `epoch`;
    None means all of them."""
    if mode not in (None, *FREEZE_MODES):
        raise ConfigError(f"unknown freeze mode {mode!r}; expected one of {', '.join(FREEZE_MODES)}")
    if mode in (None, "none") or (mode == "fine_tune" and epoch >= unfreeze_epoch):
        return None
    names = {name for name, _ in model.named_parameters() if name.startswith(HEAD)}
    if mode in ("last_half", "layer34"):
        names |= {f"backbone.{name}" for name in backbone_stages(model.backbone, f"freeze: {mode}").last_half()}
    return names


def apply_freeze(model: nn.Module, mode: str | None, epoch: int, unfreeze_epoch: int = 2) -> list[str]:
    """Set `requires_grad` for `mode` at `epoch` and keep frozen batch norms in eval; returns trainable names."""
    chosen = trainable_names(model, mode, epoch, unfreeze_epoch)
    if chosen is not None and not chosen:
        raise ConfigError(f"freeze mode {mode!r}: the model has no parameters named {HEAD}*")
    names = []
    for name, param in model.named_parameters():
        param.requires_grad = chosen is None or name in chosen
        if param.requires_grad:
            names.append(name)
    model.train(model.training)  # Network.train: frozen batch norms stay in eval
    return names
