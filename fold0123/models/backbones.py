"""Feature extractors by name: torchvision ResNets (random init by default), anything else through timm.

atmaCup #11 banned pretrained weights, so `pretrained=False` is the default and ImageNet weights are an opt-in
for users with internet. A backbone ends in global pooling and returns `[B, feature_dim]`: the head is the
task's business (`models.network`).

torchvision ResNets take two more options (the config's `stem` and `width`), for small images trained from
scratch: `stem="small"` is the CIFAR ResNets' stem (a 3x3 stride-1 conv, no max-pool: a 32 px image enters layer1
at 32x32 instead of 8x8), `stem="strided"` the same conv at stride 2 (a 64 px image enters layer1 at 32x32: the
small stem's cost on twice the resolution), and `width` is layer1's channels, later stages doubling (64 is
torchvision's). Each keeps torchvision's layer names (conv1, bn1, maxpool, layer1..layer4), which models.stages
and models.transfer key on; the defaults build exactly torchvision's model. timm backbones take `drop_path`
(stochastic depth)."""
from __future__ import annotations

import torch.nn as nn
import torchvision
from torchvision.models.resnet import BasicBlock, Bottleneck

from fold0123.common.errors import Fold0123Error

# name -> (block, blocks per stage, groups, width_per_group): the arguments torchvision's builders give ResNet
_RESNET_ARGS = {
    "resnet18": (BasicBlock, (2, 2, 2, 2), 1, 64),
    "resnet34": (BasicBlock, (3, 4, 6, 3), 1, 64),
    "resnet50": (Bottleneck, (3, 4, 6, 3), 1, 64),
    "resnet101": (Bottleneck, (3, 4, 23, 3), 1, 64),
    "resnet152": (Bottleneck, (3, 8, 36, 3), 1, 64),
    "resnext50_32x4d": (Bottleneck, (3, 4, 6, 3), 32, 4),
    "resnext101_32x8d": (Bottleneck, (3, 4, 23, 3), 32, 8),
    "wide_resnet50_2": (Bottleneck, (3, 4, 6, 3), 1, 128),
    "wide_resnet101_2": (Bottleneck, (3, 4, 23, 3), 1, 128),
}
TORCHVISION_RESNETS = tuple(_RESNET_ARGS)
# stem -> its first conv's (kernel, stride); every stem but torchvision's own drops the max-pool after it
_STEM_CONV = {"imagenet": (7, 2), "small": (3, 1), "strided": (3, 2)}
STEMS = tuple(_STEM_CONV)
TORCHVISION_WIDTH = 64


class BackboneError(Fold0123Error):
    pass


class SizedResNet(torchvision.models.ResNet):
    """torchvision's ResNet with layer1 `width` channels wide (layer2..4 doubling) and, with `stem="small"`
    (`"strided"`), a 3x3 stride-1 (stride-2) stem conv and no max-pool. Same modules, names and forward as
    torchvision's."""

    def __init__(self, block, layers, width: int = TORCHVISION_WIDTH, stem: str = "imagenet", **kwargs):
        self._width = width  # read by _make_layer during ResNet.__init__
        super().__init__(block, list(layers), **kwargs)
        kernel, stride = _STEM_CONV[stem]
        # torchvision builds its stem 64 channels wide before the layers: rebuild it at `width` (initialised as
        # ResNet.__init__ does; a fresh batch norm is already weight 1, bias 0)
        self.conv1 = nn.Conv2d(3, width, kernel_size=kernel, stride=stride, padding=kernel // 2, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.bn1 = self._norm_layer(width)
        if stem != "imagenet":
            self.maxpool = nn.Identity()
        self.fc = nn.Linear(self.inplanes, self.fc.out_features)  # inplanes: layer4's output channels

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
        if planes == TORCHVISION_WIDTH:  # layer1 (torchvision's 64 planes): its input is the stem's `width`
            self.inplanes = self._width
        return super()._make_layer(block, planes * self._width // TORCHVISION_WIDTH, blocks, stride, dilate)


def build_backbone(name: str = "resnet34", pretrained: bool = False,
                   image_size: int | tuple[int, int] | None = None, stem: str = "imagenet",
                   width: int = TORCHVISION_WIDTH, drop_path: float = 0.0) -> tuple[nn.Module, int]:
    """`(module without classifier, feature_dim)`. torchvision ResNets keep their layer names (`layer3`,
    `layer4`) and take `stem` and `width` (see the module docstring; feature_dim is 8 * width * the block's
    expansion); other names go to `timm.create_model(name, num_classes=0)`, given `img_size=image_size` when the
    model takes one (ViTs, Swin: their patch grid and position embeddings depend on it; CNNs take any size) and
    `drop_path_rate=drop_path` when it is above 0. models.stages groups either kind into stages for freezing and
    layer-wise lr decay. An option the backbone does not have is a one-line BackboneError naming the key."""
    _check_options(name, pretrained, stem, width, drop_path)
    try:
        if name in TORCHVISION_RESNETS:
            if stem == "imagenet" and width == TORCHVISION_WIDTH:
                model = torchvision.models.get_model(name, weights="DEFAULT" if pretrained else None)
            else:
                block, layers, groups, width_per_group = _RESNET_ARGS[name]
                model = SizedResNet(block, layers, width, stem, groups=groups, width_per_group=width_per_group)
            feature_dim = model.fc.in_features
            model.fc = nn.Identity()
            return model, feature_dim
        import timm
        if not timm.is_model(name):
            raise BackboneError(f"unknown backbone {name!r}: not a torchvision ResNet "
                                f"({', '.join(TORCHVISION_RESNETS)}) nor a timm model name")
        model = _create_timm(timm, name, pretrained, image_size, drop_path)
        # models with a pre-logits layer (MobileNetV3's conv_head) output head_hidden_size, not num_features
        return model, int(getattr(model, "head_hidden_size", None) or model.num_features)
    except (OSError, RuntimeError, ConnectionError) as err:
        if pretrained:
            raise BackboneError(f"could not load pretrained weights for {name!r} (needs internet or a filled "
                                f"torch/huggingface cache): {str(err).splitlines()[0]}") from None
        raise


def _check_options(name: str, pretrained: bool, stem: str, width: int, drop_path: float) -> None:
    """The options each kind of backbone has: stem and width are torchvision-ResNet ones, drop_path a timm one,
    and ImageNet weights fit only torchvision's own stem and width."""
    if stem not in STEMS:
        raise BackboneError(f"stem: {stem!r} is not one of {', '.join(STEMS)}")
    changed = [f"{key}: {value}" for key, value, default in (("stem", stem, "imagenet"),
                                                             ("width", width, TORCHVISION_WIDTH)) if value != default]
    if name not in TORCHVISION_RESNETS:
        if changed:
            raise BackboneError(f"{changed[0]} is an option of torchvision's ResNets only "
                                f"({', '.join(TORCHVISION_RESNETS)}), not of backbone {name!r}")
        return
    if drop_path > 0:
        raise BackboneError(f"drop_path: {drop_path} is a timm-backbone option (drop_path_rate); torchvision's "
                            f"{name!r} has none (set drop_path: 0, or use a timm backbone such as resnet18d)")
    narrowest = -(-TORCHVISION_WIDTH // _RESNET_ARGS[name][3])  # a bottleneck is width * width_per_group / 64 wide
    if width < narrowest:
        raise BackboneError(f"width: {width} is too narrow for {name!r}: its bottlenecks need {narrowest} or more")
    if pretrained and changed:
        raise BackboneError(f"{changed[0]}: the ImageNet weights of {name!r} (pretrained: true) fit only "
                            f"torchvision's own stem and width (stem: imagenet, width: {TORCHVISION_WIDTH})")


def _create_timm(timm, name: str, pretrained: bool, image_size: int | tuple[int, int] | None,
                 drop_path: float = 0.0) -> nn.Module:
    """timm.create_model with `img_size` for the models whose constructor has one (timm passes unknown keyword
    arguments on to the constructor, which refuses them: that refusal is the test). Those that can also take
    `dynamic_img_size` and `dynamic_img_pad` (ViTs) get them, so that they accept what the pipeline feeds them
    besides `image_size`: the jigsaw pretext's images cropped to whole tiles (30 of 32 px) and a rectangle's
    rotated views ([w, h] batches). At `image_size` itself they compute exactly what a fixed-size model does.
    `drop_path_rate` is passed only when `drop_path` is above 0, so that models without it build by default;
    one without it refuses a rate in one line."""
    extra = {"drop_path_rate": drop_path} if drop_path > 0 else {}
    attempts = [] if image_size is None else [
        {"img_size": image_size, "dynamic_img_size": True, "dynamic_img_pad": True},
        {"img_size": image_size, "dynamic_img_size": True}, {"img_size": image_size}]
    try:
        for sized in attempts:
            try:
                return timm.create_model(name, pretrained=pretrained, num_classes=0, **sized, **extra)
            except TypeError as err:
                if not any(key in str(err) for key in sized):
                    raise
        return timm.create_model(name, pretrained=pretrained, num_classes=0, **extra)
    except TypeError as err:
        if extra and "drop_path_rate" in str(err):
            raise BackboneError(f"drop_path: {drop_path}: timm's {name!r} has no stochastic depth (no "
                                f"drop_path_rate); set drop_path: 0") from None
        raise
