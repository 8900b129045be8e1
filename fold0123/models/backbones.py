"""Feature extractors by name: torchvision ResNets (random init by default), anything else through timm.

atmaCup #11 banned pretrained weights, so `pretrained=False` is the default and ImageNet weights are an opt-in
for users with internet. A backbone ends in global pooling and returns `[B, feature_dim]`: the head is the
task's business (`models.network`).
"""
from __future__ import annotations

import torch.nn as nn
import torchvision

from fold0123.common.errors import Fold0123Error

TORCHVISION_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                       "resnext50_32x4d", "resnext101_32x8d", "wide_resnet50_2", "wide_resnet101_2")


class BackboneError(Fold0123Error):
    pass


def build_backbone(name: str = "resnet34", pretrained: bool = False,
                   image_size: int | tuple[int, int] | None = None) -> tuple[nn.Module, int]:
    """`(module without classifier, feature_dim)`. torchvision ResNets keep their layer names (`layer3`,
    `layer4`); other names go to `timm.create_model(name, num_classes=0)`, given `img_size=image_size` when the
    model takes one (ViTs, Swin: their patch grid and position embeddings depend on it; CNNs take any size).
    models.stages groups either kind into stages for freezing and layer-wise lr decay."""
    try:
        if name in TORCHVISION_RESNETS:
            model = torchvision.models.get_model(name, weights="DEFAULT" if pretrained else None)
            feature_dim = model.fc.in_features
            model.fc = nn.Identity()
            return model, feature_dim
        import timm
        if not timm.is_model(name):
            raise BackboneError(f"unknown backbone {name!r}: not a torchvision ResNet "
                                f"({', '.join(TORCHVISION_RESNETS)}) nor a timm model name")
        model = _create_timm(timm, name, pretrained, image_size)
        # models with a pre-logits layer (MobileNetV3's conv_head) output head_hidden_size, not num_features
        return model, int(getattr(model, "head_hidden_size", None) or model.num_features)
    except (OSError, RuntimeError, ConnectionError) as err:
        if pretrained:
            raise BackboneError(f"could not load pretrained weights for {name!r} (needs internet or a filled "
                                f"torch/huggingface cache): {str(err).splitlines()[0]}") from None
        raise


def _create_timm(timm, name: str, pretrained: bool, image_size: int | tuple[int, int] | None) -> nn.Module:
    """timm.create_model with `img_size` for the models whose constructor has one (timm passes unknown keyword
    arguments on to the constructor, which refuses them: that refusal is the test). Those that can also take
    `dynamic_img_size` and `dynamic_img_pad` (ViTs) get them, so that they accept what the pipeline feeds them
    besides `image_size`: the jigsaw pretext's images cropped to whole tiles (30 of 32 px) and a rectangle's
    rotated views ([w, h] batches). At `image_size` itself they compute exactly what a fixed-size model does."""
    attempts = [] if image_size is None else [
        {"img_size": image_size, "dynamic_img_size": True, "dynamic_img_pad": True},
        {"img_size": image_size, "dynamic_img_size": True}, {"img_size": image_size}]
    for sized in attempts:
        try:
            return timm.create_model(name, pretrained=pretrained, num_classes=0, **sized)
        except TypeError as err:
            if not any(key in str(err) for key in sized):
                raise
    return timm.create_model(name, pretrained=pretrained, num_classes=0)
