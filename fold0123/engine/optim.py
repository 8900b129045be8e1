"""The optimiser of a run: AdamW, with layer-wise lr decay as an option (`layer_decay` < 1).

Layer-wise decay (BEiT; the ACCV 2022 and most ViT fine-tuning recipes): the head learns at `lr`, the backbone's
last stage at lr * decay, the one before at lr * decay^2, ..., the stem at lr * decay^(stages + 1), so the
pretrained low-level filters move least. The stages are models.stages' (the same grouping `freeze: last_half`
halves); a ViT decays per block. Groups are ordered head first, so `param_groups[0]["lr"]` (what loss.log shows)
is the head's, the peak lr of the schedule as without decay. `layer_decay: 1` builds exactly the optimiser of
one group over `model.parameters()` that runs had before the option existed (bit-identical training).
"""
from __future__ import annotations

import torch

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
