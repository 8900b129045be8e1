"""Masked image modelling, the pretext the ACCV 2022 winners pretrained their ViTs with (issue 21), beside the
jigsaw: `task: simmim` on split `all` (every photo, no labels), then `transfer_from` it as from a jigsaw run.

SimMIM's recipe (Xie et al., 2022) with one simplification: a random `mim.mask_ratio` of each image's patches is
hidden, the ViT encodes the whole image, and a linear head predicts every patch's pixels from its token, scored
by L1 on the hidden patches only. SimMIM swaps a hidden patch's token for a learned mask token; here the patch's
pixels are set to mid-grey (0 after `normalize`) before the patch embedding, a mask token in pixel space, so
timm's ViT runs unchanged and its backbone weights transfer as they are. MAE differs more (the encoder sees the
visible patches only, a deeper decoder): this is the cheaper of the two, which is what a CPU budget can try.

The hiding is drawn per batch from the run's per-epoch generator, so a resumed run hides what an uninterrupted one
did. The evaluator's predictions are each image's reconstruction at one pixel per patch ([n, patches x 3]).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from fold0123.common.config import ConfigError
from fold0123.common.errors import UsageError
from fold0123.common.schema import RunConfig
from fold0123.data.datasets import ImageDataset, normalize
from fold0123.data.layout import read_split
from fold0123.data.photos import photo_cache
from fold0123.models.task import Task

GREY = 128  # normalize's centre: a hidden patch enters the ViT as zeros


@dataclass
class MimTask(Task):
    patch: int = 0    # the ViT's patch side and its prefix tokens (class, registers): read from the backbone
    prefix: int = 0

    def prepare_backbone(self, backbone: nn.Module, cfg: RunConfig) -> None:
        """The ViT returns its patch tokens instead of a pooled vector (timm: global_pool ''), prefix tokens
        dropped by the head; the weights are untouched, so they transfer to any task as they are."""
        patch_embed = getattr(backbone, "patch_embed", None)
        if patch_embed is None or not hasattr(backbone, "num_prefix_tokens"):
            raise ConfigError(f"task simmim: backbone {cfg.backbone!r} has no patch tokens; use a timm ViT (e.g. "
                              f"vit_tiny_patch16_224), or task: jigsaw for a CNN")
        height, width = patch_embed.patch_size
        if height != width:
            raise ConfigError(f"task simmim: {cfg.backbone!r} has {height}x{width} patches; square ones only")
        self.patch, self.prefix = int(height), int(backbone.num_prefix_tokens)
        backbone.global_pool = ""

    def make_head(self, feature_dim: int, cfg: RunConfig) -> nn.Module:
        self.head = nn.Linear(feature_dim, 3 * self.patch ** 2)
        return PatchHead(self.head, self.prefix)

    def check_split(self, cfg: RunConfig, split: str) -> None:
        if split != "all":
            raise UsageError(f"--split {split}: a simmim pretext trains on split all (every photo, no labels)")
        read_split(cfg.dataroot, "all")

    def training_data(self, cfg: RunConfig, split: str):
        self.check_split(cfg, split)
        train, test = read_split(cfg.dataroot, "all")
        ids = list(train["object_id"]) + list(test["object_id"])
        return ImageDataset(photo_cache(cfg, ids), ids, None)

    def batch(self, images, targets, generator=None, cfg=None):
        return hide_patches(images, self.patch, cfg.mim.mask_ratio, generator)

    def loss(self, outputs, targets):
        return mim_loss(self.patch, outputs, targets.to(outputs.device))


class PatchHead(nn.Module):
    """Tokens [B, prefix + N, D] -> each patch's pixels [B, N, 3 p^2] (the prefix tokens carry no patch)."""

    def __init__(self, linear: nn.Linear, prefix: int):
        super().__init__()
        self.linear, self.prefix = linear, prefix

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.linear(tokens[:, self.prefix:])


def hide_patches(images: torch.Tensor, patch: int, ratio: float,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images [B, 3, H, W] -> (the images with round(ratio x N) random patches set to grey, targets
    [B, 4, H, W]: the normalized originals and a 0/1 map of the hidden pixels)."""
    b, _, h, w = images.shape
    if h % patch or w % patch:
        raise ConfigError(f"task simmim: {h}x{w} images are not whole {patch} px patches; set image_size to a "
                          f"multiple of {patch}")
    grid_h, grid_w = h // patch, w // patch
    n = grid_h * grid_w
    hidden = max(1, round(ratio * n))
    order = torch.rand(b, n, generator=generator).argsort(dim=1)[:, :hidden]
    mask = torch.zeros(b, n, dtype=torch.bool).scatter_(1, order, True)
    pixels = mask.reshape(b, 1, grid_h, grid_w).repeat_interleave(patch, 2).repeat_interleave(patch, 3)
    pixels = pixels.to(images.device)
    shown = torch.where(pixels, torch.full_like(images, GREY), images)
    return shown, torch.cat([normalize(images), pixels.float()], dim=1)


def mim_loss(patch: int, predicted: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean L1 between the predicted and the true pixels of the hidden patches (F.unfold's patch order is the
    ViT's: row-major over the grid)."""
    image, pixels = targets[:, :3].float(), targets[:, 3:].float()
    truth = F.unfold(image, patch, stride=patch).transpose(1, 2)                 # [B, N, 3 p^2]
    hidden = F.unfold(pixels, patch, stride=patch).mean(dim=1)                    # [B, N] in {0, 1}
    error = (predicted.float() - truth).abs().mean(dim=-1)
    return (error * hidden).sum() / hidden.sum().clamp(min=1)


def _thumbnail(task: MimTask, predicted: torch.Tensor) -> torch.Tensor:
    """Each patch's predicted mean colour: the reconstruction at one pixel per patch, [B, N x 3]."""
    return predicted.reshape(*predicted.shape[:2], 3, -1).mean(dim=-1).flatten(1)


def _thumbnail_width(cfg: RunConfig) -> int:
    """The predictions' width, for train.py's cost line (before any model exists): the patch side is read from
    the timm name (`..._patch16_...`), 16 when the name does not say."""
    found = re.search(r"patch(\d+)", cfg.backbone)
    patch = int(found.group(1)) if found else 16
    height, width = (cfg.image_size, cfg.image_size) if isinstance(cfg.image_size, int) else cfg.image_size
    return 3 * (height // patch) * (width // patch)


def make_mim_task() -> MimTask:
    # no labels and no held-out rows (split all): no targets to read, no metrics to compute
    return MimTask("simmim", "none", True, _thumbnail_width, lambda task, frame, root, cfg: None, None, _thumbnail,
                   lambda task, preds, frame, root, cfg: {})
