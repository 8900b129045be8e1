"""timm backbones as first-class citizens: a ConvNeXt and a ViT at 32 px train an epoch through the real trainer,
a ViT pretrains on the jigsaw and transfers, `freeze: last_half` (alias layer34) freezes by stage (the last half of
the stages or blocks trains), layer-wise lr decay gives each stage its lr, and a resumed layer-decay run ends
bit-identical to an uninterrupted one."""
import pytest
import torch
import torch.nn as nn

from fold0123.common import rundir
from fold0123.common.config import ConfigError
from fold0123.common.schema import RunConfig
from fold0123.engine.optim import build_optimizer
from fold0123.engine.trainer import epoch_seed, train
from fold0123.models.checkpoints import read_checkpoint
from fold0123.models.network import Network, build_model
from fold0123.models.tasks import get_task
from fold0123.models.transfer import apply_freeze
from tests.conftest import assert_backbone_transferred, killed_in_epoch_2_then_resumed, make_recipe_root, tiny_config

torch.set_num_threads(1)
CONVNEXT, VIT = "convnext_atto", "vit_tiny_patch16_224"


def model(backbone: str, **changes) -> Network:
    torch.manual_seed(0)
    return build_model(RunConfig(exp="t", backbone=backbone, image_size=32, **changes), get_task("target"))


def trainable(net) -> set[str]:
    return {name for name, p in net.named_parameters() if p.requires_grad}


def names(net, *prefixes) -> set[str]:
    return {name for name, _ in net.named_parameters() if name.startswith(prefixes)}


def test_a_vit_is_built_at_the_config_image_size():
    net = model(VIT)
    assert net.backbone.patch_embed.img_size == (32, 32)
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 1)
    torch.manual_seed(0)
    rect = build_model(RunConfig(exp="t", backbone=VIT, image_size=[32, 48]), get_task("target"))
    assert rect.backbone.patch_embed.img_size == (32, 48)
    assert rect(torch.zeros(2, 3, 48, 32)).shape == (2, 1)  # a rotated view of the rectangle
    assert model(CONVNEXT)(torch.zeros(2, 3, 32, 32)).shape == (2, 1)  # a CNN takes no img_size


@pytest.mark.parametrize("backbone, trained, frozen", [
    ("resnet18", ("backbone.layer3.", "backbone.layer4."), ("backbone.conv1.", "backbone.bn1.", "backbone.layer1.",
                                                             "backbone.layer2.")),
    (CONVNEXT, ("backbone.stages.2.", "backbone.stages.3.", "backbone.head.norm."),
     ("backbone.stem.", "backbone.stages.0.", "backbone.stages.1.")),
    (VIT, tuple(f"backbone.blocks.{i}." for i in range(6, 12)) + ("backbone.norm.",),
     tuple(f"backbone.blocks.{i}." for i in range(6)) + ("backbone.patch_embed.", "backbone.cls_token",
                                                         "backbone.pos_embed")),
])
def test_freeze_last_half_trains_the_last_half_of_the_stages(backbone, trained, frozen):
    net = model(backbone)
    everything = names(net, "")
    apply_freeze(net, "last_half", 1)
    assert trainable(net) == names(net, "head.", *trained)
    apply_freeze(net, "none", 1)
    apply_freeze(net, "layer34", 1)  # the atmaCup name of the same mode
    assert trainable(net) == names(net, "head.", *trained)
    assert names(net, *frozen) and not (trainable(net) & names(net, *frozen))
    assert names(net, *frozen) | names(net, "head.", *trained) == everything  # nothing left out
    apply_freeze(net, "head", 1)
    assert trainable(net) == {"head.weight", "head.bias"}
    apply_freeze(net, "fine_tune", 2, unfreeze_epoch=2)
    assert trainable(net) == everything


def test_a_backbone_without_stages_is_a_one_line_error_naming_the_key():
    net = Network(nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()), nn.Linear(4, 1))
    with pytest.raises(ConfigError, match="^freeze: layer34: backbone Sequential has no stages or blocks") as err:
        apply_freeze(net, "layer34", 1)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="^layer_decay: backbone Sequential has no stages"):
        build_optimizer(net, RunConfig(exp="t", layer_decay=0.5))
    apply_freeze(net, "head", 1)  # the name-agnostic modes still work
    assert trainable(net) == {"head.weight", "head.bias"}


def test_layer_decay_gives_each_stage_its_lr_head_first():
    net = model(CONVNEXT)
    groups = build_optimizer(net, RunConfig(exp="t", lr=1e-3, layer_decay=0.5)).param_groups
    ids = {id(p): name for name, p in net.named_parameters()}
    by_group = [{ids[id(p)] for p in g["params"]} for g in groups]
    assert [g["depth"] for g in groups] == [0, 1, 2, 3, 4, 5]
    assert [g["lr"] for g in groups] == pytest.approx([1e-3 * 0.5 ** d for d in range(6)])
    assert by_group[0] == {"head.weight", "head.bias"}
    assert by_group[1] == names(net, "backbone.stages.3.", "backbone.head.norm.")
    assert by_group[2] == names(net, "backbone.stages.2.")
    assert by_group[4] == names(net, "backbone.stages.0.") and by_group[5] == names(net, "backbone.stem.")
    assert sum(len(g) for g in by_group) == len(ids)  # each parameter in exactly one group
    vit = build_optimizer(model(VIT), RunConfig(exp="t", lr=1e-3, layer_decay=0.8)).param_groups
    assert len(vit) == 1 + 12 + 1  # head, one group per block, stem: a ViT decays per block
    # off (the default): today's optimiser, one group over model.parameters() in order
    (group,) = build_optimizer(net, RunConfig(exp="t", lr=1e-3)).param_groups
    assert [id(p) for p in group["params"]] == [id(p) for p in net.parameters()] and group["lr"] == 1e-3


@pytest.fixture(scope="module")
def dataroot(tmp_path_factory):
    return make_recipe_root(tmp_path_factory.mktemp("timm") / "data", tags=False)


@pytest.mark.parametrize("backbone", [CONVNEXT, VIT])
def test_a_convnext_and_a_vit_train_one_tiny_epoch_frozen_by_stage_with_layer_decay(backbone, dataroot, tmp_path):
    cfg = tiny_config("target", dataroot, tmp_path, "transfer_from=null", f"backbone={backbone}", "width=64",
                      "epochs=1", "freeze=layer34", "layer_decay=0.5")
    run = train(cfg, "3fold0", device="cpu", progress=False)
    assert rundir.done_path(run).is_file()
    torch.manual_seed(epoch_seed(cfg.seed, 0))  # the trainer's initialisation
    init = build_model(cfg, get_task("target")).state_dict()
    tuned = read_checkpoint(rundir.checkpoint_path(run, 1))["model"]
    apply_freeze(net := build_model(cfg, get_task("target")), "layer34", 1)
    should_train = trainable(net)
    frozen = [k for k, _ in net.named_parameters() if k not in should_train]
    assert frozen and all(torch.equal(tuned[k], init[k]) for k in frozen)
    moved = [k for k in should_train if not torch.equal(tuned[k], init[k])]
    assert "head.weight" in moved and any(k.startswith("backbone.") for k in moved)
    groups = torch.load(rundir.resume_path(run), weights_only=True)["optimizer"]["param_groups"]
    head_lr = groups[0]["lr"]
    assert [g["lr"] / head_lr for g in groups] == pytest.approx([0.5 ** g["depth"] for g in groups])
    assert float(rundir.loss_log_path(run).read_text().splitlines()[-1].split()[3]) == pytest.approx(head_lr,
                                                                                                    rel=1e-5)


def test_a_vit_pretrains_on_the_jigsaw_and_transfers_its_backbone(dataroot, tmp_path):
    """The jigsaw crops 32 px images to whole tiles (30 px): a ViT built at 32 px must take them (timm's dynamic
    size, padded to whole patches), and its backbone must reach the task run whole."""
    jigsaw = train(tiny_config("jigsaw", dataroot, tmp_path, f"backbone={VIT}", "width=64", "epochs=1"), "all", "cpu",
                   progress=False)
    cfg = tiny_config("target", dataroot, tmp_path, f"backbone={VIT}", "width=64", "epochs=1",
                      f"transfer_from={jigsaw}", "freeze=head")
    run = train(cfg, "3fold0", "cpu", progress=False)
    assert_backbone_transferred(jigsaw, run, cfg, "backbone.pos_embed")


def test_a_resumed_layer_decay_run_ends_bit_identical(dataroot, tmp_path, monkeypatch):
    keys = ("transfer_from=null", f"backbone={CONVNEXT}", "width=64", "epochs=2", "layer_decay=0.6")
    full = train(tiny_config("target", dataroot, tmp_path / "full", *keys), "3fold0", "cpu", progress=False)
    cut = killed_in_epoch_2_then_resumed(tiny_config("target", dataroot, tmp_path / "cut", *keys), "3fold0",
                                         monkeypatch)
    a, b = (read_checkpoint(rundir.checkpoint_path(r, 2))["model"] for r in (full, cut))
    assert all(torch.equal(a[k], b[k]) for k in a)
    ga, gb = (torch.load(rundir.resume_path(r), weights_only=True)["optimizer"]["param_groups"] for r in (full, cut))
    assert [(g["lr"], g["depth"]) for g in ga] == [(g["lr"], g["depth"]) for g in gb] and len(ga) == 6
