"""Backbones, the task table, transfer, freezing and soups, on resnet18 at 32 px."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fold0123.common.schema import RunConfig
from fold0123.data.datasets import ImageDataset, normalize
from fold0123.data.images import build_image_cache
from fold0123.data.layout import LayoutError, read_train, tag_vectors_path
from fold0123.data.tags import vector_columns
from fold0123.models.backbones import BackboneError, build_backbone
from fold0123.models.checkpoints import CheckpointError, read_checkpoint
from fold0123.models.network import build_model
from fold0123.models.soup import uniform_soup
from fold0123.models.tasks import TASKS, get_task
from fold0123.models.transfer import apply_freeze, load_backbone
from tests.conftest import cfg_with

torch.set_num_threads(1)
CFG = RunConfig(exp="t", backbone="resnet18", w2v_dim=4, tags_min_objects=2)  # the fixture: every tag it draws


def write_w2v(dataroot, dim=4):
    ids = list(read_train(dataroot)["object_id"]) + list(pd.read_csv(dataroot / "test.csv", dtype=str)["object_id"])
    vectors = np.random.default_rng(0).normal(size=(len(ids), dim))
    frame = pd.DataFrame(vectors, columns=list(vector_columns(dim)))
    frame.insert(0, "object_id", ids)
    frame.to_csv(tag_vectors_path(dataroot, dim), index=False)


def model_for(task_name, seed=0, cfg=CFG, task=None):
    torch.manual_seed(seed)
    return build_model(cfg, task or get_task(task_name))


def test_backbones():
    model, dim = build_backbone("resnet18")
    assert dim == 512 and model(torch.zeros(2, 3, 32, 32)).shape == (2, 512)
    model, dim = build_backbone("resnet10t")  # any other name through timm
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, dim)
    with pytest.raises(BackboneError, match="unknown backbone 'nonet'"):
        build_backbone("nonet")


# clip reads a MUGE-layout dataroot, not this atmaCup one: tests/test_retrieval_model.py trains it; simmim needs a
# ViT and has no labels: tests/test_mim.py trains it
@pytest.mark.parametrize("name", sorted(set(TASKS) - {"clip", "simmim"}))
def test_every_task_learns_a_tiny_batch(name, dataroot, tmp_path):
    write_w2v(dataroot)
    train = read_train(dataroot).iloc[:8]
    task = get_task(name)
    cfg = cfg_with(CFG, dataroot=str(dataroot))
    targets = task.targets(train, dataroot, cfg)
    assert targets.dtype == np.float32 and len(targets) == 8
    cache = build_image_cache(dataroot, train["object_id"], 32, tmp_path / "cache")
    images, y = next(iter(torch.utils.data.DataLoader(ImageDataset(cache, train["object_id"], targets), 8)))
    images, y = task.batch(images, y, torch.Generator().manual_seed(0), cfg)
    model = model_for(name, cfg=cfg, task=task)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    losses = []
    for _ in range(8):
        loss = task.loss(model(normalize(images)), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert min(losses[-3:]) < 0.7 * losses[0], losses
    model.eval()
    with torch.no_grad():
        predictions = task.predict(model(normalize(images[:8])))
    frame = train if name != "jigsaw" else train.iloc[:len(predictions)]
    metrics = task.metrics(predictions.numpy(), frame, dataroot, cfg)
    assert task.primary in metrics and np.isfinite(metrics[task.primary])


def test_prediction_spaces_and_metrics(dataroot):
    train = read_train(dataroot)
    years = get_task("sortingdate")
    z = torch.from_numpy(years.targets(train, dataroot, CFG))
    assert abs(float(z.mean())) < 1e-5 and set(years.state) == {"mean", "std"}
    restored = get_task("sortingdate", state=years.state)  # as evaluate.py does from the checkpoint
    assert np.allclose(restored.predict(z).numpy()[:, 0], train["sorting_date"], atol=1e-3)
    assert restored.metrics(restored.predict(z).numpy(), train)["rmse_years"] < 1e-3
    with pytest.raises(ValueError, match="task_state"):
        get_task("sortingdate").predict(z)

    onehot = get_task("onehot")
    y = onehot.targets(train, dataroot, CFG)
    probs = onehot.predict(torch.from_numpy(y) * 50).numpy()
    assert np.allclose(probs.sum(1), 1)
    assert onehot.metrics(probs, train)["accuracy"] == 1.0 and onehot.metrics(probs, train)["rmse"] < 1e-6
    uniform = onehot.metrics(np.full((len(train), 4), 0.25), train)
    assert uniform["rmse"] == pytest.approx(np.sqrt(np.mean((train["target"] - 1.5) ** 2)))

    target = get_task("target")
    assert target.metrics(np.full((len(train), 1), 5.0), train)["rmse_clipped"] < \
        target.metrics(np.full((len(train), 1), 5.0), train)["rmse"]
    assert target.lower_is_better and not get_task("materialstechniques").lower_is_better


def test_tag_vectors_missing_is_a_clear_error(dataroot):
    with pytest.raises(LayoutError, match="materialstechniques_w2v4.csv: tag vectors not found"):
        get_task("materialstechniques").targets(read_train(dataroot), dataroot, CFG)
    write_w2v(dataroot)
    cosine = get_task("materialstechniques")
    train = read_train(dataroot)
    truth = cosine.targets(train, dataroot, CFG)
    assert cosine.metrics(truth * 3, train, dataroot, CFG)["cosine"] == pytest.approx(1.0)
    assert cosine.metrics(-truth, train, dataroot, CFG)["cosine"] == pytest.approx(-1.0)


def save(model, path, epoch=1):
    torch.save({"model": model.state_dict(), "epoch": epoch, "config": CFG.model_dump()}, path)


def test_transfer_loads_the_pretext_backbone_and_keeps_a_new_head(tmp_path):
    pretext = model_for("jigsaw", seed=1)
    save(pretext, tmp_path / "1.pth")
    model = model_for("onehot", seed=2)
    head_before = {k: v.clone() for k, v in model.head.state_dict().items()}
    assert load_backbone(model, tmp_path / "1.pth") > 0
    for key, value in pretext.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value), key
    for key, value in model.head.state_dict().items():
        assert torch.equal(value, head_before[key])
    assert model.head.out_features == 4


def test_transfer_errors_name_the_checkpoint(tmp_path):
    model = model_for("target")
    with pytest.raises(CheckpointError, match="missing.pth: checkpoint not found"):
        load_backbone(model, tmp_path / "missing.pth")
    save(model_for("jigsaw"), tmp_path / "1.pth")
    data = (tmp_path / "1.pth").read_bytes()
    (tmp_path / "2.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="2.pth: corrupt or truncated"):
        load_backbone(model, tmp_path / "2.pth")
    other = build_model(cfg_with(CFG, backbone="resnet10t"), get_task("target"))
    torch.save({"model": other.state_dict()}, tmp_path / "3.pth")
    with pytest.raises(CheckpointError, match="3.pth: weights do not fit this run.s backbone"):
        load_backbone(model, tmp_path / "3.pth")


def trainable(model):
    return {name for name, p in model.named_parameters() if p.requires_grad}


def test_freeze_modes_freeze_what_they_say():
    model = model_for("target")
    everything = {name for name, _ in model.named_parameters()}
    apply_freeze(model, "none", 1)
    assert trainable(model) == everything
    apply_freeze(model, "head", 1)
    assert trainable(model) == {"head.weight", "head.bias"}
    apply_freeze(model, "layer34", 1)
    assert trainable(model) == {n for n in everything
                                if n.startswith(("backbone.layer3.", "backbone.layer4.", "head."))}
    assert "backbone.layer2.0.conv1.weight" not in trainable(model) and "backbone.conv1.weight" not in trainable(model)
    model.train()  # the loop calls train() every epoch: frozen batch norms must stay in eval
    assert not model.backbone.bn1.training and not model.backbone.layer2[0].bn1.training
    assert model.backbone.layer4[0].bn1.training
    apply_freeze(model, "fine_tune", 1, unfreeze_epoch=2)
    assert trainable(model) == {"head.weight", "head.bias"}
    apply_freeze(model, "fine_tune", 2, unfreeze_epoch=2)
    assert trainable(model) == everything
    model.train()
    assert model.backbone.bn1.training
    with pytest.raises(ValueError, match="unknown freeze mode"):
        apply_freeze(model, "layer12", 1)


def test_frozen_layers_do_not_change_in_a_step():
    model = model_for("target")
    apply_freeze(model, "layer34", 1)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW(model.parameters(), 1e-2)
    model(torch.randn(4, 3, 32, 32)).pow(2).mean().backward()
    optimizer.step()
    after = model.state_dict()
    assert torch.equal(before["backbone.layer1.0.conv1.weight"], after["backbone.layer1.0.conv1.weight"])
    assert torch.equal(before["backbone.bn1.running_mean"], after["backbone.bn1.running_mean"])
    assert not torch.equal(before["backbone.layer4.0.conv1.weight"], after["backbone.layer4.0.conv1.weight"])


def test_soup_of_identical_checkpoints_is_the_checkpoint(tmp_path):
    model = model_for("target")
    for epoch in (1, 2, 3):
        save(model, tmp_path / f"{epoch}.pth", epoch)
    out = uniform_soup([tmp_path / f"{epoch}.pth" for epoch in (1, 2, 3)], tmp_path / "soup" / "3.pth")
    soup = read_checkpoint(out)
    assert soup["epoch"] == 3 and soup["config"] == CFG.model_dump() and len(soup["soup"]) == 3
    for key, value in model.state_dict().items():
        assert torch.equal(soup["model"][key], value), key
    assert [p.name for p in (tmp_path / "soup").iterdir()] == ["3.pth"]


def test_soup_of_two_is_the_mean(tmp_path):
    a, b = model_for("target", seed=1), model_for("target", seed=2)
    b.backbone.bn1.num_batches_tracked.fill_(7)
    b.backbone.bn1.running_var.fill_(3.0)
    save(a, tmp_path / "1.pth", 1)
    save(b, tmp_path / "2.pth", 2)
    soup = read_checkpoint(uniform_soup([tmp_path / "1.pth", tmp_path / "2.pth"], tmp_path / "soup.pth"))["model"]
    sa, sb = a.state_dict(), b.state_dict()
    for key in ("backbone.conv1.weight", "head.weight", "backbone.bn1.running_var"):
        assert torch.allclose(soup[key], (sa[key] + sb[key]) / 2, atol=1e-7), key
    assert int(soup["backbone.bn1.num_batches_tracked"]) == 7  # integer buffers from the last
    model = model_for("target", seed=3)
    model.load_state_dict(soup)  # loadable like any checkpoint


def test_a_folder_of_checkpoints_soups_to_their_mean_and_another_architecture_is_one_line(tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT

    folder = tmp_path / "models"
    folder.mkdir()
    models = [model_for("target", seed=s) for s in (1, 2, 3)]
    for i, model in enumerate(models):  # from three different runs: the folder is all there is
        save(model, folder / f"run{i}_last.pth", 5)
    (folder / "notes.txt").write_text("not a checkpoint\n")
    out = subprocess.run([sys.executable, "soup.py", "--model-folder", str(folder), "--out", str(tmp_path / "s.pth")],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    soup = read_checkpoint(tmp_path / "s.pth")
    assert [Path(p).name for p in soup["soup"]] == ["run0_last.pth", "run1_last.pth", "run2_last.pth"]
    states = [m.state_dict() for m in models]
    mean = sum(sd["head.weight"].double() for sd in states) / 3
    assert torch.allclose(soup["model"]["head.weight"].double(), mean, atol=1e-7)
    wider = build_model(cfg_with(CFG, width=32, stem="small"), get_task("target"))
    save(wider, folder / "run3_wider.pth", 5)
    out = subprocess.run([sys.executable, "soup.py", "--model-folder", str(folder), "--out", str(tmp_path / "t.pth")],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and not (tmp_path / "t.pth").exists()
    assert f"{folder / 'run3_wider.pth'}: not the architecture of {folder / 'run0_last.pth'}: " in out.stderr


def test_jigsaw_task_batches_follow_the_config():
    task = get_task("jigsaw")
    cfg = cfg_with(CFG, jigsaw={"grid": 3, "permutations_per_image": 4, "permutation_set": "hamming",
                           "n_permutations": 12})
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    shuffled, labels = task.batch(images, torch.zeros(2, 0), torch.Generator().manual_seed(0), cfg)
    assert shuffled.shape == (8, 3, 30, 30) and labels.shape == (8, 9)
    table = task.permutations(cfg)
    assert table.shape == (12, 9) and all(any(torch.equal(r, t) for t in table) for r in labels)
    assert task.n_outputs(cfg) == 81 and task.n_outputs(cfg_with(CFG, jigsaw={"grid": 2})) == 16
    with pytest.raises(ValueError, match="unknown task"):
        get_task("segmentation")


