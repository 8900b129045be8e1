"""CLIP-style image-text contrastive task over the tag lists (materials and techniques).

The "text" of an object is its bag of tags; a small text encoder (a linear embedding of the multi-hot tag
vector, mean-pooled, then an MLP) maps it into the image embedding's space, and the symmetric InfoNCE loss
pulls each photo towards its own tags and away from the batch's other objects. Objects with the same tag set
(skin-tone variants, the many untagged objects) are all positives of each other: a soft target, so identical
texts are not pushed apart. The saved prediction is the L2-normalised image embedding (`clip.embed_dim`).

The vocabulary is rebuilt from the dataroot (every tag token, spelled by data.tags.tag_token as word2vec spells
it, ordered by table then name; index 0 = "no tags"), so the checkpoint needs no strings; its size is in the task
state to check the rebuild.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from fold0123.data.tags import read_tokens

NO_TAGS = "<no tags>"


def vocabulary(dataroot: str | Path) -> list[str]:
    """NO_TAGS, then every token ordered by (table, name): the order, and so each token's index, that the
    earlier `material:<name>` spelling had, so text towers trained before the spelling changed still load."""
    tokens = read_tokens(dataroot)
    return [NO_TAGS] + [token for _, _, token in sorted(set(zip(tokens["table"], tokens["name"], tokens["token"])))]


def multi_hot(dataroot: str | Path, object_ids, vocab: list[str]) -> np.ndarray:
    """`[n, len(vocab)]` float32 tag indicators; an object without tags gets the NO_TAGS token."""
    index = {token: i for i, token in enumerate(vocab)}
    rows = {str(i): r for r, i in enumerate(object_ids)}
    out = np.zeros((len(rows), len(vocab)), np.float32)
    tags = read_tokens(dataroot)
    tags = tags[tags["object_id"].isin(rows)]
    known = tags["token"].isin(index)
    # explicit int64: with no tagged object among `object_ids` (test objects of a train-only-tags dataroot) the
    # selections are empty and would otherwise come out as object arrays, which numpy refuses as indices
    out[tags["object_id"][known].map(rows).to_numpy(np.int64), tags["token"][known].map(index).to_numpy(np.int64)] = 1.0
    out[out.sum(1) == 0, 0] = 1.0
    return out


class TextEncoder(nn.Module):
    def __init__(self, vocab_size: int, text_dim: int, embed_dim: int):
        super().__init__()
        self.embed = nn.Linear(vocab_size, text_dim, bias=False)  # == EmbeddingBag(mean) over the tag tokens
        self.mlp = nn.Sequential(nn.LayerNorm(text_dim), nn.GELU(), nn.Linear(text_dim, embed_dim))

    def forward(self, tags: torch.Tensor) -> torch.Tensor:
        tags = tags.float()
        return self.mlp(self.embed(tags / tags.sum(1, keepdim=True).clamp_min(1.0)))


class ClipHead(nn.Module):
    """The image projection (what `forward` returns), the text tower and the learnable temperature."""

    def __init__(self, feature_dim: int, vocab_size: int, embed_dim: int, text_dim: int, temperature: float):
        super().__init__()
        self.image = nn.Linear(feature_dim, embed_dim)
        self.text = TextEncoder(vocab_size, text_dim, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1.0 / temperature))))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.image(features)


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, tags: torch.Tensor,
                     logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE with soft targets: objects with identical tag sets are each other's positives."""
    image, text = F.normalize(image.float(), dim=-1), F.normalize(text.float(), dim=-1)
    logits = image @ text.T * logit_scale.float().clamp(max=np.log(100.0)).exp()
    same = (torch.cdist(tags.float(), tags.float(), p=1) == 0).float()
    target = same / same.sum(1, keepdim=True)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


@torch.no_grad()
def retrieval_metrics(image: np.ndarray, text: np.ndarray, tags: np.ndarray) -> dict:
    """Image -> text retrieval among the frame's objects: a hit is any object with the same tag set."""
    image = image / np.maximum(np.linalg.norm(image, axis=1, keepdims=True), 1e-12)
    text = text / np.maximum(np.linalg.norm(text, axis=1, keepdims=True), 1e-12)
    similarity = image @ text.T
    same = (np.abs(tags[:, None, :] - tags[None, :, :]).sum(-1) == 0)
    order = np.argsort(-similarity, axis=1)
    hits = np.take_along_axis(same, order, axis=1)
    first_hit = hits.argmax(1)
    k5 = min(5, len(image))
    return {"recall_at_1": float(hits[:, 0].mean()), f"recall_at_{5}": float(hits[:, :k5].any(1).mean()),
            "median_rank": float(np.median(first_hit + 1)), "cosine": float(np.mean((image * text).sum(1)))}
