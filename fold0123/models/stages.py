"""A backbone's parameters in stages, input to output: what `freeze: last_half` and layer-wise lr decay act on.

Freezing "the high-level half" and decaying the lr "per depth" need the same thing from any architecture: the
parameter names of its stem and of each stage (or block) in order. Where they come from:
- torchvision ResNets: `layer1` .. `layer4` are the stages; everything before them (conv1, bn1) is the stem.
- timm models: their `group_matcher(coarse=True)` (what timm's own layer-decay uses): `stem` and one group per
  stage (ConvNeXt `stages.N`, Swin `layers.N`, ResNet `layerN`) or per block (ViT `blocks.N`, EfficientNet
  `blocks.N`). Parameters after the last stage that no group claims (ConvNeXt's `head.norm`, a ViT's final
  `norm`) belong to the last stage: they sit on top of it, and train and decay with it.
A backbone with neither has no stage structure: `backbone_stages` raises a one-line ConfigError naming the key.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch.nn as nn

from fold0123.common.config import ConfigError

RESNET_STAGES = ("layer1", "layer2", "layer3", "layer4")


@dataclass(frozen=True)
class Stages:
    """Parameter names (as in the backbone's own `named_parameters`, without the `backbone.` prefix)."""
    stem: tuple[str, ...]
    stages: tuple[tuple[str, ...], ...]  # input to output; every backbone parameter is in the stem or one stage

    def last_half(self) -> tuple[str, ...]:
        """The parameters of the last half of the stages (ResNet: layer3 and layer4; with an odd count the
        smaller half, at least one stage)."""
        n = max(1, len(self.stages) // 2)
        return tuple(name for stage in self.stages[-n:] for name in stage)


def _is_torchvision_resnet(backbone: nn.Module) -> bool:
    return not hasattr(backbone, "group_matcher") and all(hasattr(backbone, s) for s in RESNET_STAGES)


def _matches(name: str, spec) -> bool:
    """Whether `name` matches a timm group_matcher spec: a regex, or a list of (regex, suffix)."""
    if spec is None:
        return False
    specs = [spec] if isinstance(spec, str) else [s[0] for s in spec]
    return any(re.match(s, name) for s in specs)


def backbone_stages(backbone: nn.Module, what: str = "freeze") -> Stages:
    """The stem and the stages of `backbone` (see the module docstring); `what` names the config key that
    needs them, for the error when there are none."""
    names = [name for name, _ in backbone.named_parameters()]
    if _is_torchvision_resnet(backbone):
        stages = tuple(tuple(n for n in names if n.startswith(f"{s}.")) for s in RESNET_STAGES)
        staged = {n for stage in stages for n in stage}
        return Stages(tuple(n for n in names if n not in staged), stages)
    if hasattr(backbone, "group_matcher"):
        from timm.models import group_parameters

        matcher = backbone.group_matcher(coarse=True)
        groups = [list(g) for _, g in sorted(group_parameters(backbone, matcher).items()) if g]
        stem = []
        if groups and isinstance(matcher, dict) and all(_matches(n, matcher.get("stem")) for n in groups[0]):
            stem = groups.pop(0)
        if len(groups) > 1 and isinstance(matcher, dict) and not any(
                _matches(n, matcher.get("blocks")) for n in groups[-1]):
            tail = groups.pop()  # unclaimed parameters after the last stage (a final norm) join it
            groups[-1] += tail
        if groups:
            return Stages(tuple(stem), tuple(tuple(g) for g in groups))
    raise ConfigError(f"{what}: backbone {type(backbone).__name__} has no stages or blocks to split (not a "
                      f"torchvision ResNet, no timm group_matcher); use freeze none/head/fine_tune, layer_decay 1")


def stage_depths(backbone: nn.Module, what: str = "layer_decay") -> dict[str, int]:
    """Backbone parameter name -> its depth below the head: the last stage 1, the one before it 2, ..., the stem
    len(stages) + 1 (the head, not in the backbone, is depth 0)."""
    found = backbone_stages(backbone, what)
    depths = {name: len(found.stages) + 1 for name in found.stem}
    for i, stage in enumerate(found.stages):
        for name in stage:
            depths[name] = len(found.stages) - i
    return depths
