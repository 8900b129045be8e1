"""A model is a backbone and a head; the head is what a task owns and what transfer replaces.

State dict keys are `backbone.*` and `head.*`, so a pretext checkpoint's backbone can be loaded into any task
(`models.transfer.load_backbone`) and freezing can be said by name (`models.transfer.apply_freeze`).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from fold0123.common.config import ConfigError
from fold0123.common.schema import RunConfig
from fold0123.models.backbones import build_backbone
from fold0123.models.task import Task


def frozen_norm_layers(model: nn.Module) -> list[nn.Module]:
    """Batch-norm layers whose parameters are all frozen: their running statistics must stay fixed too."""
    out = []
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._NormBase):
            params = list(module.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                out.append(module)
    return out


class Network(nn.Module):
    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def train(self, mode: bool = True) -> "Network":
        """Like nn.Module.train, but frozen batch-norm layers stay in eval mode: a frozen layer whose running
        statistics still drift on the new data is not frozen (fastai's `train_bn=False` behaviour)."""
        super().train(mode)
        if mode:
            for module in frozen_norm_layers(self):
                module.eval()
        return self


def build_head(feature_dim: int, n_outputs: int, dropout: float = 0.0) -> nn.Module:
    linear = nn.Linear(feature_dim, n_outputs)
    return nn.Sequential(nn.Dropout(dropout), linear) if dropout > 0 else linear


def build_model(cfg: RunConfig, task: Task) -> Network:
    """The config's backbone (`backbone`, default resnet34; `pretrained`, default False) with a fresh head:
    the task's own (`task.make_head`, e.g. clip's two towers, classify's ArcFace with `head: arcface`) or a linear
    layer of `task.n_outputs(cfg)` outputs (`head_dropout`, default 0). Timm ViTs are built at `image_size`;
    torchvision ResNets take `stem` and `width`, timm backbones `drop_path` (models.backbones)."""
    backbone, feature_dim = build_backbone(cfg.backbone, cfg.pretrained, cfg.image_size, cfg.stem, cfg.width,
                                           cfg.drop_path)
    task.prepare_backbone(backbone, cfg)
    head = task.make_head(feature_dim, cfg)
    if head is None and cfg.head != "linear":
        raise ConfigError(f"head: {cfg.head!r} needs a classification task (classify, onehot), not {task.name!r}")
    if head is None:
        head = build_head(feature_dim, task.n_outputs(cfg), cfg.head_dropout)
    return Network(backbone, head)
