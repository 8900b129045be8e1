"""data.augment: per-image torchvision v2 augmentation and MixUp / CutMix in the training loop: deterministic in
(seed, epoch), bit-exact resume with every option on, mixed targets that stay distributions, one tiny epoch per
option, and the refusals."""
import pytest
import torch

from fold0123.common import rundir
from fold0123.common.config import ConfigError, load_config
from fold0123.common.schema import RunConfig
from fold0123.data.augment import BatchAugmenter, batch_mixer, image_transform, mix, mixing_epoch
from fold0123.engine.trainer import epoch_seed, train
from fold0123.models.checkpoints import EMA_KEY, read_checkpoint
from tests.conftest import ROOT, killed_in_epoch_2_then_resumed, make_recipe_root, tiny_config

torch.set_num_threads(1)

OPTIONS = {
    "crop": ("augmentation.crop_scale=[0.4,1.0]",),
    "trivialaugment": ("augmentation.policy=trivialaugment",),
    "randaugment": ("augmentation.policy=randaugment", "augmentation.magnitude=12"),
    "jitter": ("augmentation.color_jitter=0.4",),
    "erasing": ("augmentation.erasing=0.5",),
    "mixup": ("mixup.mixup_alpha=0.4",),
    "cutmix": ("mixup.cutmix_alpha=1.0",),
    "both": ("mixup.mixup_alpha=0.4", "mixup.cutmix_alpha=1.0", "mixup.prob=0.8", "mixup.off_epochs=1"),
}
EVERYTHING = tuple(o for key in ("crop", "trivialaugment", "jitter", "erasing", "both") for o in OPTIONS[key])


@pytest.fixture(scope="module")
def dataroot(tmp_path_factory):
    return make_recipe_root(tmp_path_factory.mktemp("augment") / "data")


def augmenter(tmp_path, dataroot, *overrides, task="target"):
    cfg = tiny_config(task, dataroot, tmp_path, "transfer_from=null", *overrides)
    return cfg, BatchAugmenter(cfg)


def draw(aug: BatchAugmenter, images, targets, seed: int, epoch: int):
    torch.manual_seed(epoch_seed(seed, epoch, 1))  # what train_epoch seeds at the start of an epoch
    x, y = aug.float(aug.uint8(images).float(), targets, epoch)
    return x, y


def batch(n=8, size=16):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g), torch.eye(4)[torch.arange(n) % 4]


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_each_option_is_deterministic_in_seed_and_epoch_and_changes_the_batch(option, tmp_path, dataroot):
    _, aug = augmenter(tmp_path, dataroot, *OPTIONS[option], "epochs=3", "image_size=16")
    images, targets = batch()
    first = draw(aug, images, targets, seed=0, epoch=1)
    again = draw(aug, images, targets, seed=0, epoch=1)
    other = draw(aug, images, targets, seed=0, epoch=2)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], images.float())  # the option did something
    assert not torch.equal(first[0], other[0])  # and another epoch draws something else


def test_each_image_draws_its_own_crop():
    transform = image_transform(tiny_options(crop_scale=(0.2, 0.5)), (16, 16))
    images = torch.arange(16 * 16, dtype=torch.uint8).view(1, 1, 16, 16).expand(6, 3, 16, 16).contiguous()
    torch.manual_seed(0)
    out = torch.stack([transform(image) for image in images])
    assert len({out[i].sum().item() for i in range(6)}) > 1  # a batch-level transform would crop all alike


def tiny_options(**values):
    from fold0123.common.schema import AugmentationOptions
    return AugmentationOptions(**values)


@pytest.mark.parametrize("alphas", [(0.4, 0.0), (0.0, 1.0), (0.4, 1.0)])
def test_mixed_class_targets_sum_to_one_and_label_smoothing_composes(alphas):
    from fold0123.common.schema import MixOptions
    mixer = batch_mixer(MixOptions(mixup_alpha=alphas[0], cutmix_alpha=alphas[1]))
    labels = torch.arange(8) % 4
    eps, k = 0.1, 4
    smooth = torch.eye(k)[labels] * (1 - eps) + eps / k  # what the class tasks' targets already are
    images = torch.randn(8, 3, 16, 16)
    torch.manual_seed(3)
    _, mixed_smooth = mix(mixer, 1.0, images, smooth)
    torch.manual_seed(3)
    _, mixed_hard = mix(mixer, 1.0, images, torch.eye(k)[labels])
    assert torch.allclose(mixed_smooth.sum(1), torch.ones(8))
    assert (mixed_smooth >= 0).all()
    # smoothing then mixing == mixing then smoothing (both linear): the smoothing survives the mix exactly
    assert torch.allclose(mixed_smooth, mixed_hard * (1 - eps) + eps / k, atol=1e-6)
    assert not torch.allclose(mixed_hard, torch.eye(k)[labels])  # something was mixed


def test_regression_targets_mix_with_their_images_and_prob_zero_passes_through():
    from fold0123.common.schema import MixOptions
    mixer = batch_mixer(MixOptions(mixup_alpha=1.0))
    images = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 3, 2, 2).contiguous()
    targets = torch.arange(4, dtype=torch.float32).view(4, 1)
    torch.manual_seed(0)
    x, y = mix(mixer, 1.0, images, targets)
    assert torch.allclose(x[:, 0, 0, 0], y[:, 0])  # each image and its target mixed with the same weight
    assert not torch.equal(y, targets)
    x, y = mix(mixer, 0.0, images, targets)
    assert torch.equal(x, images) and torch.equal(y, targets)


def test_mixing_stops_for_the_last_off_epochs():
    from fold0123.common.schema import MixOptions
    options = MixOptions(mixup_alpha=0.2, off_epochs=2)
    assert [mixing_epoch(options, e, 5) for e in range(1, 6)] == [True, True, True, False, False]


def test_class_index_targets_are_refused_in_one_line():
    from fold0123.common.schema import MixOptions
    with pytest.raises(ConfigError, match=r"^mixup: .*class indices.*mixup_alpha"):
        mix(batch_mixer(MixOptions(mixup_alpha=0.2)), 1.0, torch.randn(4, 3, 8, 8), torch.arange(4))


@pytest.mark.parametrize("option", ["crop", "trivialaugment", "randaugment", "jitter", "erasing", "mixup", "cutmix"])
def test_one_tiny_epoch_per_option(option, tmp_path, dataroot):
    cfg = tiny_config("onehot", dataroot, tmp_path, "transfer_from=null", "epochs=1", *OPTIONS[option])
    run = train(cfg, "3fold0", "cpu", progress=False)
    assert rundir.done_path(run).is_file()


def test_jigsaw_with_augmentation_trains_and_mixup_is_refused(tmp_path, dataroot):
    run = train(tiny_config("jigsaw", dataroot, tmp_path, "epochs=1", *OPTIONS["trivialaugment"]), "all", "cpu",
                progress=False)
    assert rundir.done_path(run).is_file()
    with pytest.raises(ConfigError, match="class indices"):
        train(tiny_config("jigsaw", dataroot, tmp_path / "mixed", "epochs=1", *OPTIONS["mixup"]), "all", "cpu",
              progress=False)


@pytest.mark.integration
def test_resume_with_every_option_on_is_bit_exact(tmp_path, dataroot, monkeypatch):
    overrides = ("transfer_from=null", "epochs=3", *EVERYTHING)
    full = train(tiny_config("onehot", dataroot, tmp_path / "full", *overrides), "3fold1", "cpu", progress=False)
    resumed = killed_in_epoch_2_then_resumed(tiny_config("onehot", dataroot, tmp_path / "cut", *overrides),
                                             "3fold1", monkeypatch)
    for epoch in (1, 2, 3):
        a, b = (read_checkpoint(rundir.checkpoint_path(r, epoch))["model"] for r in (full, resumed))
        assert all(torch.equal(a[key], b[key]) for key in a), epoch
    plain = train(tiny_config("onehot", dataroot, tmp_path / "plain", "transfer_from=null", "epochs=3"), "3fold1",
                  "cpu", progress=False)
    a, b = (read_checkpoint(rundir.checkpoint_path(r, 3))["model"] for r in (full, plain))
    assert not torch.equal(a["head.weight"], b["head.weight"])  # the options changed the training


@pytest.mark.parametrize("preset, overrides", [("target.yml", ()), ("onehot.yml", ()),
                                               ("classify/gpu.yml", ("task=onehot",))])
def test_the_gpu_presets_recipe_takes_a_step_on_the_cpu(preset, overrides, tmp_path, dataroot):
    """What parameters/augment.yml gives the GPU presets (crops, TrivialAugment, erasing, EMA; mixing for the class
    tasks; ConvNeXt-tiny with drop_path for classification) builds and steps, at 32 px, one optimiser step."""
    cfg = load_config(ROOT / "parameters" / preset, [
        f"dataroot={dataroot}", f"checkpoints_dir={tmp_path}", "transfer_from=null", "image_size=32", "batch_size=8",
        "effective_batch_size=8", "max_steps=1", "num_workers=0", "threads=1", "eval.train_epochs=[]", *overrides],
        schema=RunConfig)
    assert cfg.augmentation.policy == "trivialaugment" and cfg.ema.decay > 0
    run = train(cfg, "3fold0", "cpu", progress=False)
    assert rundir.done_path(run).is_file()
    assert EMA_KEY in read_checkpoint(rundir.checkpoint_path(run, 1))


def test_seed_offset_moves_a_runs_draws_as_its_seed_would(tmp_path, dataroot):
    """Two members of a seed ensemble under one recipe seed: seed 0 + offset 1 trains what seed 1 trains, bit for
    bit (same process), and not what seed 0 trains."""
    weights = {}
    for name, sets in {"offset": ("seed=0", "seed_offset=1"), "seed1": ("seed=1",), "seed0": ("seed=0",)}.items():
        cfg = tiny_config("target", dataroot, tmp_path / name, "transfer_from=null", "epochs=1", *sets)
        run = train(cfg, "3fold0", "cpu", progress=False)
        weights[name] = read_checkpoint(rundir.checkpoint_path(run, 1))["model"]
    assert weights["offset"].keys() == weights["seed1"].keys()
    assert all(torch.equal(weights["offset"][k], weights["seed1"][k]) for k in weights["offset"])
    assert any(not torch.equal(weights["offset"][k], weights["seed0"][k]) for k in weights["offset"])
