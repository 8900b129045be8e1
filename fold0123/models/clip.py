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

Under W ranks (a torchrun launch: a default process group of world size > 1) the negatives are the whole global
micro-batch, as open_clip's `gather_features` with `local_loss`: each rank gathers every rank's image and text
embeddings (and text keys) and computes its own m x n logits, its rows against the n gathered columns, with the
labels offset by where its rows start. The gather is `GatherRows`: all_gather forward; backward all_reduce (SUM)
of the gathered tensor's gradient, this rank's rows of it (Lightning's `_AllGather`; torch.distributed.nn's
all_gather backward needs all_to_all, which gloo lacks). Why SUM is the right scale: the trainer weights rank r's
mean loss by W * m_r / n and DistributedDataParallel averages the parameters' gradients over the W ranks; the
SUM hands each rank W times the global loss's gradient with respect to its own rows, and the average divides by W
again, so W ranks take exactly the 1-process step on the same n pairs (tests/test_ddp_clip.py). A mean in the
backward would shrink every cross-rank term by W, a gather without gradient (open_clip's default) would drop them
(its issue 616 is this scaling). One process: no collective, the plain n x n loss.
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist
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


def world_size() -> int:
    """The default process group's size (1 when there is none: one process)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _gather_padded(x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Every rank's `x` (rank order, `sizes[r]` rows each), concatenated; the parts are padded to the longest for
    the collective, which needs equal shapes (a rank's share of a micro-batch may be one row shorter)."""
    padded = x.new_zeros((max(sizes), *x.shape[1:]))
    padded[: len(x)] = x
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[:size] for part, size in zip(parts, sizes)])


class GatherRows(torch.autograd.Function):
    """all_gather with a gradient: forward every rank's rows concatenated; backward the gathered gradient summed
    over the ranks (all_reduce), this rank's rows of it (see the module's docstring for why SUM)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: list[int], start: int) -> torch.Tensor:
        ctx.rows = slice(start, start + len(x))
        return _gather_padded(x, sizes)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rows], None, None


def rank_sizes(n: int, device: torch.device) -> tuple[list[int], int]:
    """Every rank's row count and where this rank's rows start in the gathered batch."""
    mine = torch.tensor([n], dtype=torch.int64, device=device)
    every = [torch.zeros_like(mine) for _ in range(world_size())]
    dist.all_gather(every, mine)
    sizes = [int(v) for v in every]
    return sizes, sum(sizes[: dist.get_rank()])


def clip_loss(image: torch.Tensor, text: torch.Tensor, keys: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of B (image, text) pairs; `keys[i] == keys[j]` marks identical texts, whose
    cross pairs are left out of the negatives (masked), so the only target of row i stays column i. Under W
    ranks: this rank's rows against every rank's pairs (the module's docstring); its mean over its own rows."""
    image, text = F.normalize(image.float(), dim=-1), F.normalize(text.float(), dim=-1)
    keys = keys.reshape(-1)
    if world_size() == 1:
        logits = scale * image @ text.T
        same = keys[:, None] == keys[None, :]
        same.fill_diagonal_(False)
        logits = logits.masked_fill(same, float("-inf"))
        labels = torch.arange(len(logits), device=logits.device)
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    sizes, start = rank_sizes(len(image), image.device)
    all_image, all_text = GatherRows.apply(image, sizes, start), GatherRows.apply(text, sizes, start)
    all_keys = _gather_padded(keys, sizes)
    labels = torch.arange(start, start + len(image), device=image.device)
    same = keys[:, None] == all_keys[None, :]
    same[torch.arange(len(image), device=image.device), labels] = False
    image_to_text = (scale * image @ all_text.T).masked_fill(same, float("-inf"))
    text_to_image = (scale * text @ all_image.T).masked_fill(same, float("-inf"))
    return (F.cross_entropy(image_to_text, labels) + F.cross_entropy(text_to_image, labels)) / 2


@torch.no_grad()
def in_batch_accuracy(image: torch.Tensor, text: torch.Tensor, keys: torch.Tensor) -> dict[str, float]:
    """Chinese-CLIP's training accuracies over this batch's own pairs (this rank's, under DDP): the share of images
    whose most similar text is theirs (`acc_i2t`) and of texts whose most similar image is theirs (`acc_t2i`);
    an identical text (same key) counts as theirs, as the loss does not treat it as a negative. Apart from the
    gallery Recall@K the evaluator reports, which ranks every image of a split."""
    similarity = F.normalize(image.float(), dim=-1) @ F.normalize(text.float(), dim=-1).T
    keys = keys.reshape(-1)
    i2t = (keys[similarity.argmax(dim=1)] == keys).float().mean()
    t2i = (keys[similarity.argmax(dim=0)] == keys).float().mean()
    return {"acc_i2t": float(i2t), "acc_t2i": float(t2i)}

