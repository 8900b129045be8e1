"""Training augmentation beyond the dihedral views, from torchvision.transforms.v2: per-image crops, policies,
colour jitter and erasing, and MixUp / CutMix of images with their targets (the `augmentation` and `mixup` keys).

Why it is shaped this way:
- It runs on the uint8 batch on the training device, after the loader (whose workers only slice the memmap
  cache, data.datasets): on a GPU the ops cost a pass over the bytes there, not per-sample Python in the loader.
- A v2 transform given a batch draws one set of parameters for all of it; each image here draws its own, the
  augmentation a per-sample loader would give (one call per image: cheap beside the forward pass at these sizes).
- v2 draws from torch's global generator, which train_epoch seeds with (seed, epoch) at the start of every epoch,
  so a resumed epoch draws the crops and mixes an uninterrupted one drew (the bit-exact resume holds).
- MixUp / CutMix mix float target rows, whatever they mean: the class tasks' one-hot rows (already label-smoothed,
  and smoothing is linear, so it composes), the regression targets and the tag vectors alike. Class-index targets
  (jigsaw's tile labels, clip's token ids) cannot be mixed and are refused.
"""
from __future__ import annotations

import torch
from torchvision.transforms import v2

from fold0123.common.config import ConfigError
from fold0123.common.schema import AugmentationOptions, MixOptions, RunConfig


def image_transform(options: AugmentationOptions, size: tuple[int, int]) -> v2.Compose | None:
    """The per-image uint8 transform `options` ask for, at the cache's `size` (h, w); None when all are off."""
    steps = []
    if options.crop_scale is not None:
        steps.append(v2.RandomResizedCrop(size, scale=tuple(options.crop_scale), ratio=tuple(options.crop_ratio),
                                          antialias=True))
    if options.policy == "trivialaugment":
        steps.append(v2.TrivialAugmentWide())
    elif options.policy == "randaugment":
        steps.append(v2.RandAugment(magnitude=options.magnitude))
    if options.color_jitter > 0:
        strength = options.color_jitter
        steps.append(v2.ColorJitter(brightness=strength, contrast=strength, saturation=strength))
    return v2.Compose(steps) if steps else None


def erasing_transform(options: AugmentationOptions) -> v2.RandomErasing | None:
    """RandomErasing on the normalised float image, erasing to 0 (the normalised mean grey); None when off."""
    return v2.RandomErasing(p=options.erasing, value=0.0) if options.erasing > 0 else None


def per_image(transform, batch: torch.Tensor) -> torch.Tensor:
    """`transform` applied to each image of `[B, C, H, W]` with its own random draw."""
    return torch.stack([transform(image) for image in batch])


def batch_mixer(options: MixOptions) -> v2.Transform | None:
    """MixUp, CutMix, or one of the two at random per batch; None when both alphas are 0."""
    mixers = ([v2.MixUp(alpha=options.mixup_alpha)] if options.mixup_alpha > 0 else []) + (
        [v2.CutMix(alpha=options.cutmix_alpha)] if options.cutmix_alpha > 0 else [])
    if not mixers:
        return None
    return mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)


def mixing_epoch(options: MixOptions, epoch: int, epochs: int) -> bool:
    """Whether `epoch` (1-based) of `epochs` mixes: not in the last `off_epochs` (timm's mixup-off-epoch)."""
    return epoch <= epochs - options.off_epochs


def mix(mixer: v2.Transform, prob: float, images: torch.Tensor,
        targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MixUp / CutMix of float `images` `[B, C, H, W]` and float target rows `[B, d]`, for a share `prob` of the
    batches; a batch of one, or one not drawn, passes through."""
    if not targets.dtype.is_floating_point:
        raise ConfigError("mixup: this task's targets are class indices (jigsaw, clip), which cannot be mixed: set "
                          "mixup.mixup_alpha and mixup.cutmix_alpha to 0")
    if images.shape[0] < 2 or (prob < 1 and float(torch.rand(())) >= prob):
        return images, targets
    rows = targets.reshape(targets.shape[0], -1)
    images, rows = mixer(images, rows)
    return images, rows.reshape(targets.shape)


class BatchAugmenter:
    """What train_epoch applies to a training batch, built once per run from the config."""

    def __init__(self, cfg: RunConfig):
        size = cfg.image_size
        self.images = image_transform(cfg.augmentation, (size, size) if isinstance(size, int) else tuple(size))
        self.erasing = erasing_transform(cfg.augmentation)
        self.mixer = batch_mixer(cfg.mixup)
        self.options = cfg.mixup
        self.epochs = cfg.epochs

    def uint8(self, images: torch.Tensor) -> torch.Tensor:
        """Crops, policy and jitter of a uint8 batch (before normalisation)."""
        return images if self.images is None else per_image(self.images, images)

    def float(self, x: torch.Tensor, targets: torch.Tensor, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Erasing and mixing of the normalised batch and its targets."""
        if self.erasing is not None:
            x = per_image(self.erasing, x)
        if self.mixer is not None and mixing_epoch(self.options, epoch, self.epochs):
            x, targets = mix(self.mixer, self.options.prob, x, targets)
        return x, targets
