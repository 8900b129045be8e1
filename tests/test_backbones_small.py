"""The recipe's backbone options: torchvision ResNets with the small (CIFAR) stem and a chosen `width`, timm
backbones with `drop_path`. The small stem keeps a 32 px image 32x32 into layer1, `width` sets the channels and
feature_dim, the defaults build exactly torchvision's model, options a backbone lacks are refused in one line,
and a small, narrow ResNet trains through the real trainer and pretrains on the jigsaw for a task run to take."""
import pytest
import torch
import torchvision
from timm.layers import DropPath

from fold0123.common import rundir
from fold0123.common.schema import RunConfig
from fold0123.engine.optim import build_optimizer
from fold0123.engine.trainer import train
from fold0123.models.backbones import BackboneError, build_backbone
from fold0123.models.checkpoints import CheckpointError, read_checkpoint
from fold0123.models.network import build_model
from fold0123.models.tasks import get_task
from fold0123.models.transfer import apply_freeze, load_backbone
from tests.conftest import assert_backbone_transferred, make_recipe_root, tiny_config

torch.set_num_threads(1)


def model(backbone: str = "resnet18", **changes):
    torch.manual_seed(0)
    return build_model(RunConfig(exp="t", backbone=backbone, image_size=32, **changes), get_task("target"))


def shapes(module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def layer_sizes(backbone, side: int = 32) -> dict[str, tuple[int, ...]]:
    """Each stage's output shape for a batch of 2 `side` px images (forward hooks)."""
    seen = {}
    for name in ("layer1", "layer2", "layer3", "layer4"):
        getattr(backbone, name).register_forward_hook(
            lambda module, args, out, name=name: seen.__setitem__(name, tuple(out.shape)))
    backbone(torch.zeros(2, 3, side, side))
    return seen


def test_the_small_stem_keeps_a_32px_image_32x32_into_layer1():
    imagenet = layer_sizes(model().backbone)
    assert imagenet["layer1"] == (2, 64, 8, 8) and imagenet["layer4"] == (2, 512, 1, 1)
    net = model(stem="small", width=16)
    assert net.backbone.conv1.kernel_size == (3, 3) and net.backbone.conv1.stride == (1, 1)
    assert net.backbone.conv1.bias is None and isinstance(net.backbone.maxpool, torch.nn.Identity)
    small = layer_sizes(net.backbone)
    assert small == {"layer1": (2, 16, 32, 32), "layer2": (2, 32, 16, 16), "layer3": (2, 64, 8, 8),
                     "layer4": (2, 128, 4, 4)}
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 1)
    assert layer_sizes(model(stem="small").backbone)["layer1"] == (2, 64, 32, 32)  # torchvision's width


def test_the_strided_stem_takes_a_64px_image_into_layer1_at_32x32():
    net = model(stem="strided", width=16)
    assert net.backbone.conv1.kernel_size == (3, 3) and net.backbone.conv1.stride == (2, 2)
    assert isinstance(net.backbone.maxpool, torch.nn.Identity)
    assert layer_sizes(net.backbone, side=64) == layer_sizes(model(stem="small", width=16).backbone, side=32)
    assert layer_sizes(net.backbone, side=64)["layer1"] == (2, 16, 32, 32)


@pytest.mark.parametrize("name, width, feature_dim", [("resnet18", 16, 128), ("resnet18", 24, 192),
                                                      ("resnet50", 16, 512), ("resnext50_32x4d", 32, 1024)])
def test_width_sets_the_channels_and_feature_dim(name, width, feature_dim):
    backbone, dim = build_backbone(name, width=width)
    assert dim == feature_dim == 8 * width * backbone.layer1[0].expansion
    assert backbone.conv1.out_channels == backbone.bn1.num_features == width
    assert backbone(torch.zeros(2, 3, 32, 32)).shape == (2, feature_dim)
    ref = torchvision.models.get_model(name)
    ref.fc = torch.nn.Identity()
    assert list(shapes(backbone)) == list(shapes(ref))  # torchvision's names, in its order


def test_the_defaults_build_exactly_torchvisions_resnet18():
    net = model()
    torch.manual_seed(0)
    ref = torchvision.models.resnet18()
    ref.fc = torch.nn.Identity()
    assert shapes(net.backbone) == shapes(ref) and list(shapes(net.backbone)) == list(shapes(ref))
    assert all(torch.equal(v, ref.state_dict()[k]) for k, v in net.backbone.state_dict().items())  # same init
    for name in ("resnet18", "resnet50", "wide_resnet50_2"):  # the small stem at width 64: only conv1 differs
        ref = torchvision.models.get_model(name)
        dim = ref.fc.in_features
        ref.fc = torch.nn.Identity()
        ours, our_dim = build_backbone(name, stem="small")
        assert list(shapes(ours).items()) == list({**shapes(ref), "conv1.weight": (64, 3, 3, 3)}.items())
        assert our_dim == dim


def test_a_small_narrow_resnet_freezes_and_decays_by_stage():
    net = model(stem="small", width=16)
    apply_freeze(net, "last_half", 1)
    trained = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trained == {n for n, _ in net.named_parameters() if n.startswith(("head.", "backbone.layer3.",
                                                                              "backbone.layer4."))}
    groups = build_optimizer(net, RunConfig(exp="t", layer_decay=0.5)).param_groups
    assert [g["depth"] for g in groups] == [0, 1, 2, 3, 4, 5]


def test_drop_path_reaches_a_timm_model():
    rates = {round(m.drop_prob, 6) for m in model("resnet10t", drop_path=0.1).modules() if isinstance(m, DropPath)}
    assert rates and max(rates) == pytest.approx(0.1)  # timm spreads the rate over the blocks, the last at 0.1
    assert not any(isinstance(m, DropPath) for m in model("resnet10t").modules())  # 0: not passed, timm's default


@pytest.mark.parametrize("backbone, changes, message", [
    ("resnet18", {"drop_path": 0.1}, r"^drop_path: 0.1 is a timm-backbone option .*'resnet18'"),
    ("resnet10t", {"stem": "small"}, r"^stem: small is an option of torchvision's ResNets only .*'resnet10t'"),
    ("convnext_atto", {"width": 32}, r"^width: 32 is an option of torchvision's ResNets only .*'convnext_atto'"),
    ("resnet18", {"pretrained": True, "width": 32}, r"^width: 32: the ImageNet weights of 'resnet18'"),
    ("resnet34", {"pretrained": True, "stem": "small"}, r"^stem: small: the ImageNet weights of 'resnet34'"),
    ("resnext50_32x4d", {"width": 8}, r"^width: 8 is too narrow for 'resnext50_32x4d': its bottlenecks need 16"),
    ("vgg11", {"drop_path": 0.1}, r"^drop_path: 0.1: timm's 'vgg11' has no stochastic depth"),
])
def test_an_option_the_backbone_lacks_is_refused_in_one_line(backbone, changes, message):
    with pytest.raises(BackboneError, match=message) as err:
        model(backbone, **changes)
    assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def dataroot(tmp_path_factory):
    return make_recipe_root(tmp_path_factory.mktemp("small") / "data", tags=False)


def test_a_small_narrow_resnet_trains_one_tiny_epoch_at_16px(dataroot, tmp_path):
    cfg = tiny_config("target", dataroot, tmp_path, "transfer_from=null", "stem=small", "width=16",
                      "image_size=16", "epochs=1")
    run = train(cfg, "3fold0", "cpu", progress=False)
    assert rundir.done_path(run).is_file()
    weights = read_checkpoint(rundir.checkpoint_path(run, 1))["model"]
    assert weights["backbone.conv1.weight"].shape == (16, 3, 3, 3) and weights["head.weight"].shape == (1, 128)


def test_the_jigsaw_pretrains_a_small_stem_and_transfers_it_to_the_same_stem_only(dataroot, tmp_path):
    keys = ("stem=small", "width=16", "epochs=1")
    jigsaw = train(tiny_config("jigsaw", dataroot, tmp_path, *keys), "all", "cpu", progress=False)
    cfg = tiny_config("target", dataroot, tmp_path, *keys, f"transfer_from={jigsaw}", "freeze=head")
    run = train(cfg, "3fold0", "cpu", progress=False)
    tuned = assert_backbone_transferred(jigsaw, run, cfg, "backbone.conv1.weight")
    assert tuned["backbone.conv1.weight"].shape == (16, 3, 3, 3)
    # another stem or width does not fit: the transfer's one-line error names the file and the first difference
    path = rundir.checkpoint_path(jigsaw, 1)
    for other, theirs in (({"width": 24}, "(24, 3, 3, 3)"), ({"stem": "imagenet"}, "(16, 3, 7, 7)")):
        first = f"'conv1.weight' has shape (16, 3, 3, 3), the backbone's {theirs}"
        with pytest.raises(CheckpointError, match="weights do not fit this run's backbone") as err:
            load_backbone(model(**{"stem": "small", "width": 16, **other}), path)
        assert str(err.value).startswith(str(path)) and first in str(err.value) and "\n" not in str(err.value)
