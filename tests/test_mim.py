"""task: simmim (issue 21): the masked-image pretext for timm ViTs: what it hides, what it scores, a tiny run that
learns, a resumed run that hides what an uninterrupted one did, and its backbone transferred whole."""
from __future__ import annotations

import pytest
import torch

from fold0123.common import rundir
from fold0123.common.config import ConfigError
from fold0123.common.errors import UsageError
from fold0123.data.datasets import normalize
from fold0123.engine.trainer import train
from fold0123.models.checkpoints import read_checkpoint
from fold0123.models.mim import GREY, hide_patches, mim_loss
from tests.conftest import make_recipe_root, tiny_config

VIT = "vit_tiny_patch16_224"
torch.set_num_threads(1)


def test_hiding_covers_whole_patches_and_the_loss_scores_only_them():
    images = torch.randint(0, 256, (3, 3, 32, 48), dtype=torch.uint8)
    shown, targets = hide_patches(images, 16, 0.5, torch.Generator().manual_seed(0))
    again, _ = hide_patches(images, 16, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(shown, again)  # the run's generator decides: a resume hides the same patches
    hidden = targets[:, 3:]
    assert torch.equal(targets[:, :3], normalize(images))
    per_patch = torch.nn.functional.unfold(hidden, 16, stride=16)  # [3, 256, 6]
    assert ((per_patch == 0) | (per_patch == 1)).all() and (per_patch.std(dim=1) == 0).all()  # whole patches
    assert (per_patch[:, 0].sum(dim=1) == 3).all()  # round(0.5 x 6) of each image's 6 patches
    assert (shown[hidden.bool().expand_as(shown)] == GREY).all()
    assert torch.equal(shown[~hidden.bool().expand_as(shown)], images[~hidden.bool().expand_as(images)])
    truth = torch.nn.functional.unfold(targets[:, :3], 16, stride=16).transpose(1, 2)
    assert mim_loss(16, truth, targets) == 0
    wrong = truth + per_patch[:, :1].transpose(1, 2) * 2.0  # off by 2 on the hidden patches only
    assert mim_loss(16, wrong, targets) == pytest.approx(2.0)
    assert mim_loss(16, truth + (1 - per_patch[:, :1].transpose(1, 2)) * 5.0, targets) == 0  # shown: not scored
    with pytest.raises(ConfigError, match="30x32 images are not whole 16 px patches"):
        hide_patches(images[..., :30, :32], 16, 0.5)


def test_a_vit_pretrains_by_masked_image_modelling_and_transfers_its_backbone(tmp_path):
    dataroot = make_recipe_root(tmp_path / "data")
    keys = ("task=simmim", f"backbone={VIT}", "width=64", "epochs=4", "lr=2e-3", "warmup_epochs=0")
    pretext = train(tiny_config("jigsaw", dataroot, tmp_path, *keys), "all", "cpu", progress=False)
    losses = [float(line.split()[2]) for line in rundir.loss_log_path(pretext).read_text().splitlines()[1:]]
    assert losses[-1] < losses[0]
    assert any(k.startswith("head.linear") for k in read_checkpoint(rundir.checkpoint_path(pretext, 4))["model"])
    cfg = tiny_config("target", dataroot, tmp_path, f"backbone={VIT}", "width=64", "epochs=1",
                      f"transfer_from={pretext}", "freeze=head")
    run = train(cfg, "3fold0", "cpu", progress=False)
    learnt = read_checkpoint(rundir.checkpoint_path(pretext, 4))["model"]
    tuned = read_checkpoint(rundir.checkpoint_path(run, 1))["model"]
    backbone = [k for k in tuned if k.startswith("backbone.")]
    assert backbone and all(torch.equal(tuned[k], learnt[k]) for k in backbone)  # frozen: the pretext's, whole
    with pytest.raises(ConfigError, match="task simmim: backbone 'resnet18' has no patch tokens; use a timm ViT"):
        train(tiny_config("jigsaw", dataroot, tmp_path / "cnn", "task=simmim"), "all", "cpu", progress=False)
    with pytest.raises(UsageError, match="--split 3fold0: a simmim pretext trains on split all"):
        train(tiny_config("jigsaw", dataroot, tmp_path / "fold", *keys), "3fold0", "cpu", progress=False)
