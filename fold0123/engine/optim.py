"""The optimiser and the lr schedule of a run: AdamW, with layer-wise lr decay as an option (`layer_decay` < 1).

Layer-wise decay (BEiT; the ACCV 2022 and most ViT fine-tuning recipes): the head learns at `lr`, the backbone's
last stage at lr * decay, the one before at lr * decay^2, ..., the stem at lr * decay^(stages + 1), so the
pretrained low-level filters move least. The stages are models.stages' (the same grouping `freeze: last_half`
halves); a ViT decays per block. Groups are ordered head first, so `param_groups[0]["lr"]` (what loss.log shows)
is the head's, the peak lr of the schedule as without decay. `layer_decay: 1` builds exactly the optimiser of
one group over `model.parameters()` that runs had before the option existed (bit-identical training).

The schedule (`lr_factor`) is a torch LambdaLR stepped per optimiser step; its state is resume.pth's `scheduler`.

Why not timm's (pinned) `param_groups_layer_decay` and schedulers, which do nearly the same:
- `param_groups_layer_decay` groups by the model's fine `group_matcher` (or timm's auto-grouping for a model
  without one: our Network, torchvision ResNets), not by models.stages' coarse stages that freezing shares; it
  orders groups stem first, by default drops weight decay from 1-D parameters, and hands out `lr_scale`, which
  only timm's schedulers read. Every layer-decay run would train differently, and the head-first order is promised.
- timm's `CosineLRScheduler` warms up from `warmup_lr_init` at step 0, ours at lr / warmup (step s gets
  (s + 1) / warmup: no step at lr 0), and it has no one-cycle with a linear rise and a cosine fall; swapping
  it would change every run's lrs (tests/test_train.py pins the curve), and its state is not a torch
  scheduler's, so existing resume.pth files would no longer resume.
"""
from __future__ import annotations

import math

import torch

from fold0123.common.config import ConfigError
from fold0123.common.schema import RunConfig
from fold0123.models.stages import stage_depths


def layer_decay_groups(model: torch.nn.Module, lr: float, decay: float) -> list[dict]:
    """AdamW parameter groups of a models.network.Network: one per depth (0 = the head), each with its `lr`
    and its `depth`, head first; each group's parameters in `named_parameters` order."""
    depths = {f"backbone.{name}": d for name, d in stage_depths(model.backbone).items()}
    groups: dict[int, list] = {}
    for name, param in model.named_parameters():
        groups.setdefault(depths.get(name, 0), []).append(param)
    return [{"params": params, "lr": lr * decay ** depth, "depth": depth} for depth, params in sorted(groups.items())]


def build_optimizer(model: torch.nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    if cfg.layer_decay >= 1:
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(layer_decay_groups(model, cfg.lr, cfg.layer_decay), lr=cfg.lr,
                             weight_decay=cfg.weight_decay)


def lr_factor(schedule: str, step: int, total: int, warmup: int) -> float:
    """Multiplier of the peak lr at optimiser step `step` (0-based): linear warm-up, then cosine to zero;
    `onecycle` rises from lr/25 over the warm-up (30% of training when warmup is 0) and anneals to lr/25e4."""
    total = max(1, total)
    if schedule == "cosine":
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "onecycle":
        rise = warmup if warmup > 0 else max(1, int(0.3 * total))
        start, end = 1 / 25, 1 / 25e4
        if step < rise:
            return start + (1 - start) * step / rise
        progress = min(1.0, (step - rise) / max(1, total - rise))
        return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * progress))
    raise ConfigError(f"unknown schedule {schedule!r}; expected cosine or onecycle")


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: RunConfig,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """`cfg.schedule` over `cfg.epochs` of `steps_per_epoch` optimiser steps (or `max_steps`), after
    `warmup_epochs` of warm-up."""
    total, warmup = cfg.max_steps or steps_per_epoch * cfg.epochs, int(round(cfg.warmup_epochs * steps_per_epoch))
    schedule = cfg.schedule
    lr_factor(schedule, 0, total, warmup)  # validates the name before any work
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(schedule, step, total, warmup))
