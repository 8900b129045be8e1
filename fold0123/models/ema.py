"""An exponential moving average of a model's weights: timm's `ModelEmaV3`, built from a run config's `ema:`.

The trainer updates it after every optimiser step with the global step (1-based: the number of steps taken), as
timm's own train.py does. ModelEmaV3 then uses decay 0 at step 1 (the average starts as a copy of the weights
after the first step) and `ema.decay` from step 2 on; with `ema.warmup` the decay ramps up as
min(ema.decay, 1 - step^(-2/3)) (timm's use_warmup with its default gamma 1 and power 2/3). Parameters and
floating-point buffers (BN running statistics) are averaged, integer buffers copied. The average lives on the
model's device, outside any DistributedDataParallel wrapper (on rank 0 alone, the one that saves it).

Its weights are saved beside the raw ones in every `{epoch}.pth` as `model_ema` (plain `Network` keys, like
`model`); that is also all a resume needs, with the global step resume.pth already holds (models.checkpoints).
"""
from __future__ import annotations

from pathlib import Path

import torch
from timm.utils import ModelEmaV3

from fold0123.common.schema import EmaOptions
from fold0123.models.checkpoints import load_weights


def build_ema(model: torch.nn.Module, options: EmaOptions) -> ModelEmaV3 | None:
    """The EMA of `model` (the plain model, on its device) for `options` (a RunConfig's `ema`); None with decay 0."""
    if options.decay <= 0:
        return None
    return ModelEmaV3(model, decay=options.decay, use_warmup=options.warmup)


def ema_weights(ema: ModelEmaV3) -> dict:
    """The averaged state dict on the CPU, keyed as the model's own: what `{epoch}.pth` holds as EMA_KEY."""
    return {key: value.detach().cpu() for key, value in ema.module.state_dict().items()}


def load_ema_weights(ema: ModelEmaV3, weights: dict, path: str | Path) -> None:
    """Put saved EMA weights back (a resume); CheckpointError naming `path` when they do not fit the model."""
    load_weights(ema.module, weights, path, "EMA model")
