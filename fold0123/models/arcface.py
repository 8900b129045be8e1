"""Sub-center ArcFace with class-frequency margins: the classification head of the ACCV 2022 fine-grained
(webfg5000) and Google Landmark 2020 solutions, for noisy, long-tailed classes.

- Sub-centres (Deng et al., ECCV 2020): each class has k unit-norm centres and its cosine is the best of them, so
  a noisy or multi-modal class does not drag one centre between its modes. Weight row `c * k + j` is class c's
  sub-centre j (pytorch-metric-learning's and the Google Landmark code's layout).
- Margin (ArcFace, Deng et al. 2019): in training the true class's logit is s * cos(theta + m_c), every other
  logit s * cos(theta); the loss is the cross-entropy of those. Past theta + m > pi the margined cosine continues
  linearly (cos(theta) - m sin(m)), as insightface does, so the logit keeps falling with the angle.
- Adaptive margins (Ha et al., GLR 2020): m_c = a * n_c^(-1/4) + b with a, b chosen so that the margins span
  [margin_min, margin_max]; a rarer class gets a larger margin (it needs more separation from few images). The
  counts n_c come from the train part's labels and live in the task's `state`, so a checkpoint reloads the same
  margins; equal counts give every class margin_max (plain ArcFace's 0.5), an absent class counts as one image.
- Prediction: the head's output is s * max-cosine, no margin (the margin is a training device); its softmax is
  what the run directory saves and the ensemble weighs.

Everything takes `n_classes` and `class_counts` as arguments: the task decides what the classes are.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

COUNT_KEY = "class_count_{}"  # task state keys: the train part's images per class, as floats


def class_counts(labels, n_classes: int) -> np.ndarray:
    """Images per class `[n_classes]` of integer labels 0..n_classes-1 (a class with no image counts 0)."""
    labels = np.rint(np.asarray(labels, dtype=np.float64)).astype(int)
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels outside 0..{n_classes - 1} (got {labels.min()}..{labels.max()})")
    return np.bincount(labels, minlength=n_classes).astype(np.float64)


def counts_state(counts) -> dict:
    """Class counts as a task state (a plain dict of floats, what checkpoints carry)."""
    return {COUNT_KEY.format(c): float(n) for c, n in enumerate(counts)}


def counts_from_state(state: dict, n_classes: int) -> np.ndarray:
    """The class counts a task state holds; ValueError naming the first missing class."""
    missing = [c for c in range(n_classes) if COUNT_KEY.format(c) not in (state or {})]
    if missing:
        raise ValueError(f"arcface: the task state has no {COUNT_KEY.format(missing[0])} (fit the task on the train "
                         f"part, or load the checkpoint's 'task_state', before building the head)")
    return np.array([float(state[COUNT_KEY.format(c)]) for c in range(n_classes)])


def adaptive_margins(class_counts, margin_min: float = 0.05, margin_max: float = 0.5) -> np.ndarray:
    """Per-class margins (radians): n_c^(-1/4) mapped linearly onto [margin_min, margin_max], the rarest class at
    margin_max and the most frequent at margin_min. Equal counts: margin_max for all (no class is rarer)."""
    counts = np.maximum(np.asarray(class_counts, dtype=np.float64), 1.0)
    t = counts ** -0.25
    spread = t.max() - t.min()
    if spread <= 0:
        return np.full(len(counts), float(margin_max))
    return margin_min + (t - t.min()) / spread * (margin_max - margin_min)


class SubCenterArcFace(nn.Module):
    """`[B, feature_dim]` features -> `[B, n_classes]` logits s * max_j cos(feature, centre_cj), no margin.

    `margins` `[n_classes]` (radians) are what `loss` adds to the true class; a non-persistent buffer, since
    they come from the task state and the config, not from training (a soup or a checkpoint holds the weight
    alone). Dropout (the config's `head_dropout`) acts on the features before they are normalised."""

    def __init__(self, feature_dim: int, n_classes: int, margins, subcenters: int = 3, scale: float = 30.0,
                 dropout: float = 0.0):
        super().__init__()
        margins = torch.as_tensor(np.asarray(margins, dtype=np.float32))
        if margins.shape != (n_classes,):
            raise ValueError(f"arcface: {tuple(margins.shape)} margins for {n_classes} classes")
        self.n_classes, self.subcenters, self.scale = int(n_classes), int(subcenters), float(scale)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.weight = nn.Parameter(torch.empty(n_classes * subcenters, feature_dim))
        bound = 1.0 / math.sqrt(feature_dim)
        nn.init.uniform_(self.weight, -bound, bound)  # the Google Landmark code's init; only directions matter
        self.register_buffer("margins", margins, persistent=False)

    def cosine(self, features: torch.Tensor) -> torch.Tensor:
        """`[B, n_classes]`: each class's best sub-centre cosine, in float32 also under AMP (the margin's
        trigonometry near cos = 1 needs more than bf16's three digits)."""
        with torch.autocast(features.device.type, enabled=False):
            cos = F.linear(F.normalize(self.dropout(features).float()), F.normalize(self.weight.float()))
        return cos.view(-1, self.n_classes, self.subcenters).amax(dim=2)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.scale * self.cosine(features)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the margined logits; `logits` are this head's outputs, `targets` `[B, n_classes]`
        class probabilities (one-hot rows; soft pseudo-label rows mix margined and plain cosines by their weight)."""
        return arcface_loss(logits, targets, self.margins, self.scale)


def margin_logits(logits: torch.Tensor, targets: torch.Tensor, margins: torch.Tensor, scale: float) -> torch.Tensor:
    """Training logits: s * cos(theta + m_c) where `targets` is 1 (the true class), s * cos(theta) where it is 0.

    `logits` are s * cos(theta) as the head outputs them; `margins` `[n_classes]` radians. Past theta + m > pi the
    margined cosine is cos(theta) - m sin(m) (monotone in theta, as insightface's `th`/`mm`)."""
    cos = (logits.float() / scale).clamp(-1 + 1e-7, 1 - 1e-7)
    m = margins.to(cos.device, cos.dtype)
    sin = torch.sqrt(1.0 - cos * cos)
    phi = cos * torch.cos(m) - sin * torch.sin(m)
    phi = torch.where(cos > torch.cos(math.pi - m), phi, cos - torch.sin(m) * m)
    targets = targets.to(cos.device, cos.dtype)
    return scale * (targets * phi + (1.0 - targets) * cos)


def arcface_loss(logits: torch.Tensor, targets: torch.Tensor, margins: torch.Tensor, scale: float) -> torch.Tensor:
    targets = targets.to(logits.device).float()
    return F.cross_entropy(margin_logits(logits, targets, margins, scale), targets)


# ---------------------------------------------------------------------------------------------------- the task hook

def fit_state(labels, n_classes: int, cfg) -> dict:
    """A classification task's state for `cfg`: the class counts of `labels` (the train part) with
    `head: arcface`, nothing otherwise (a linear head needs no state)."""
    return counts_state(class_counts(labels, n_classes)) if cfg.head == "arcface" else {}


def build_head(feature_dim: int, n_classes: int, cfg, state: dict) -> SubCenterArcFace:
    """The head `cfg.arcface` describes, its margins from the class counts in `state` (the task's)."""
    opts = cfg.arcface
    margins = adaptive_margins(counts_from_state(state, n_classes), opts.margin_min, opts.margin_max)
    return SubCenterArcFace(feature_dim, n_classes, margins, opts.subcenters, opts.scale, cfg.head_dropout)
