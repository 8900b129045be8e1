"""The CLIP dual encoder's head and loss: text-to-image retrieval the Chinese-CLIP way (issue 11).

The image tower is the run's backbone (ResNet34 by default, transferable from the jigsaw pretext like every
task) plus a linear projection: that projection is what the model's `forward` returns, so the evaluator saves
image embeddings through the same 8-view path as every other task. The text tower lives in the head too (so it
trains, checkpoints, soups and loads with the model): token embeddings plus learned positions, `text_layers`
pre-norm transformer encoder layers (0 = an embedding bag: the mean of the token embeddings), a masked mean
over the real tokens and a linear projection. It is trained from scratch: there are no hub downloads here.

The loss is the symmetric InfoNCE of CLIP (open_clip's ClipLoss: cross-entropy of the image->text and the
text->image logits, averaged) with a learnable temperature: `logit_scale` starts at log(1/temperature) and is
clamped so that the scale never exceeds 100, as CLIP clamps it (here inside the loss, so no training-loop hook is
needed). One change: pairs whose texts are the same string ("red apple" twice in a batch) are not each other's
negatives: their cross logits are masked out of both softmaxes instead of being pushed apart.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

MAX_LOGIT_SCALE = math.log(100.0)


class TextTower(nn.Module):
    def __init__(self, vocab_size: int, width: int, embed_dim: int, layers: int = 1, heads: int = 4,
                 max_length: int = 32):
        super().__init__()
        self.token = nn.Embedding(vocab_size, width, padding_idx=0)
        self.position = nn.Parameter(torch.zeros(max_length, width))
        nn.init.normal_(self.position, std=0.01)
        self.encoder = None
        if layers > 0:
            layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=2 * width, dropout=0.0,
                                               batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.project = nn.Linear(width, embed_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """`[B, L]` int token ids (0 = padding) -> `[B, embed_dim]`."""
        tokens = tokens.long()
        real = tokens != 0
        real[:, 0] |= ~real.any(1)  # an all-padding text still attends to one position
        x = self.token(tokens) + self.position[: tokens.shape[1]]
        if self.encoder is not None:
            x = self.encoder(x, src_key_padding_mask=~real)
        weights = real.unsqueeze(-1).to(x.dtype)
        pooled = (x * weights).sum(1) / weights.sum(1)
        return self.project(self.norm(pooled))


class ClipHead(nn.Module):
    """The image projection (what `forward` returns), the text tower and the learnable temperature."""

    def __init__(self, feature_dim: int, vocab_size: int, embed_dim: int, text_dim: int, temperature: float,
                 text_layers: int = 1, text_heads: int = 4, max_length: int = 32):
        super().__init__()
        self.image = nn.Linear(feature_dim, embed_dim)
        self.text = TextTower(vocab_size, text_dim, embed_dim, text_layers, text_heads, max_length)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.image(features)

    def scale(self) -> torch.Tensor:
        return self.logit_scale.float().clamp(0, MAX_LOGIT_SCALE).exp()


def clip_loss(image: torch.Tensor, text: torch.Tensor, keys: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of B (image, text) pairs; `keys[i] == keys[j]` marks identical texts, whose
    cross pairs are left out of the negatives (masked), so the only target of row i stays column i."""
    image, text = F.normalize(image.float(), dim=-1), F.normalize(text.float(), dim=-1)
    logits = scale * image @ text.T
    keys = keys.reshape(-1)
    same = keys[:, None] == keys[None, :]
    same.fill_diagonal_(False)
    logits = logits.masked_fill(same, float("-inf"))
    labels = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
