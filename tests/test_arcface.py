"""The sub-center ArcFace head (models/arcface.py) and its hook on the classification task: margins on the true
class only, sub-centre max-pooling, margins ordered by class frequency, plain logits at predict time, margins
reloaded from the task state, one tiny training and evaluation through the real trainer."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from fold0123.common import rundir
from fold0123.common.config import ConfigError
from fold0123.common.schema import RunConfig
from fold0123.models import arcface
from fold0123.models.checkpoints import read_checkpoint
from fold0123.models.network import build_model
from fold0123.models.tasks import get_task
from tests.conftest import cfg_with, tiny_config

torch.set_num_threads(1)
CFG = RunConfig(exp="t", task="onehot", backbone="resnet18", head="arcface")


def reference_subcenter_arcface(features, weight, labels, n_classes, k, margin, scale):
    """pytorch-metric-learning's SubCenterArcFaceLoss logits, written out: W [C * k, d] read as [C, k, d], the
    class cosine is the max over its k sub-centres, the label's angle gets + margin (radians), then * scale."""
    cos = F.normalize(features) @ F.normalize(weight).t()
    cos = cos.view(-1, n_classes, k).max(dim=2).values
    angles = torch.acos(cos.clamp(-1 + 1e-7, 1 - 1e-7))
    target = torch.cos(angles.gather(1, labels[:, None]) + margin)
    return scale * cos.scatter(1, labels[:, None], target)


def test_logits_match_the_sub_center_arcface_reference_with_the_margin_on_the_true_class_only():
    torch.manual_seed(0)
    head = arcface.SubCenterArcFace(16, 5, np.full(5, 0.3), subcenters=3, scale=30.0)
    features, labels = torch.randn(8, 16), torch.tensor([0, 1, 2, 3, 4, 0, 2, 4])
    plain = head(features)
    margined = arcface.margin_logits(plain, F.one_hot(labels, 5).float(), head.margins, head.scale)
    expected = reference_subcenter_arcface(features, head.weight, labels, 5, 3, 0.3, 30.0)
    torch.testing.assert_close(margined, expected, atol=1e-4, rtol=0)
    true = F.one_hot(labels, 5).bool()
    assert torch.equal(margined[~true], plain[~true])  # every other class keeps its plain logit, exactly
    assert (margined[true] < plain[true]).all()  # cos(theta + m) < cos(theta) on the true class


def test_each_class_takes_the_margin_of_its_own_frequency():
    margins = torch.tensor([0.1, 0.2, 0.4])
    cos = torch.full((3, 3), 0.6)
    out = arcface.margin_logits(30 * cos, torch.eye(3), margins, 30.0)
    theta = math.acos(0.6)
    np.testing.assert_allclose(torch.diagonal(out).numpy(), [30 * math.cos(theta + m) for m in (0.1, 0.2, 0.4)],
                               rtol=1e-5)
    assert torch.equal(out[~torch.eye(3, dtype=bool)], torch.full((6,), 30 * 0.6))


def test_past_pi_the_margined_cosine_keeps_falling_linearly():
    m = torch.tensor([0.5])
    cos = torch.tensor([[-0.95], [-0.99]])  # theta + m > pi: cos(theta + m) would rise again
    out = arcface.margin_logits(cos, torch.ones(2, 1), m, 1.0)
    torch.testing.assert_close(out, cos - math.sin(0.5) * 0.5)
    assert out[1] < out[0]


def test_soft_targets_mix_margined_and_plain_cosines_by_their_weight():
    m, cos = torch.tensor([0.3, 0.3]), torch.tensor([[0.5, 0.2]])
    hard = arcface.margin_logits(cos, torch.tensor([[1.0, 0.0]]), m, 1.0)
    soft = arcface.margin_logits(cos, torch.tensor([[0.5, 0.5]]), m, 1.0)
    phi = torch.cos(torch.acos(cos) + 0.3)
    torch.testing.assert_close(hard, torch.stack([phi[0, 0], cos[0, 1]])[None])
    torch.testing.assert_close(soft, 0.5 * phi + 0.5 * cos)


def test_a_class_cosine_is_its_best_sub_centre():
    head = arcface.SubCenterArcFace(4, 2, np.zeros(2), subcenters=3, scale=1.0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1., 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0],       # class 0: rows 0-2
                                        [-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1]]))  # class 1: rows 3-5
    x = torch.tensor([[0., 0, 1, 0], [0, 0, 0, 2], [1, 1, 0, 0]])
    cos = head.cosine(x)
    # x0 sits on class 0's third sub-centre, x1 on class 1's third: a mean over sub-centres would give 1/3
    torch.testing.assert_close(cos[:2], torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    torch.testing.assert_close(cos[2], torch.tensor([2 ** -0.5, 0.0]))  # class 1: max(-.71, -.71, 0) = 0
    torch.testing.assert_close(head(x), cos)  # scale 1


def test_margins_grow_as_classes_get_rarer_within_the_configured_range():
    counts = np.array([100, 10, 1, 50, 0])
    m = arcface.adaptive_margins(counts, 0.05, 0.5)
    order = np.argsort(-counts, kind="stable")  # most frequent first
    assert (np.diff(m[order]) >= 0).all() and np.diff(m[order][:-1]).min() > 0
    assert m[0] == pytest.approx(0.05) and m[2] == pytest.approx(0.5)  # the most frequent / the rarest
    assert m[4] == m[2]  # a class absent from the train part counts as one image
    # m_c = a * n_c^(-1/4) + b: affine in n^(-1/4)
    t = np.maximum(counts, 1) ** -0.25
    a, b = np.polyfit(t, m, 1)
    np.testing.assert_allclose(a * t + b, m, atol=1e-12)
    np.testing.assert_allclose(arcface.adaptive_margins([7, 7, 7], 0.05, 0.5), 0.5)  # no class is rarer


def fitted_onehot(labels, cfg=CFG):
    task = get_task("onehot")
    frame = pd.DataFrame({"object_id": [str(i) for i in range(len(labels))], "target": labels})
    task.targets(frame, "unused", cfg)
    return task


def test_the_task_fits_class_counts_into_its_state_and_a_checkpoint_reloads_the_same_margins():
    task = fitted_onehot([0] * 20 + [1] * 5 + [2] * 2 + [3] * 1)
    assert task.state == {"class_count_0": 20.0, "class_count_1": 5.0, "class_count_2": 2.0, "class_count_3": 1.0}
    model = build_model(CFG, task)
    margins = model.head.margins.numpy()
    assert (np.diff(margins) > 0).all()  # class 3 is the rarest: largest margin
    assert set(model.state_dict()) & {"head.margins"} == set()  # derived from the state, not a weight
    reloaded = build_model(CFG, get_task("onehot", state=dict(task.state)))
    assert np.array_equal(reloaded.head.margins.numpy(), margins)
    linear = fitted_onehot([0, 1, 2, 3], cfg=cfg_with(CFG, head="linear"))
    assert linear.state == {} and isinstance(build_model(cfg_with(CFG, head="linear"), linear).head,
                                             torch.nn.Linear)
    with pytest.raises(ValueError, match="no class_count_0"):
        build_model(CFG, get_task("onehot"))


def test_training_loss_has_the_margin_and_prediction_does_not():
    task = fitted_onehot([0] * 8 + [1] * 4 + [2] * 2 + [3] * 2)
    torch.manual_seed(0)
    model = build_model(cfg_with(CFG, arcface={"subcenters": 2, "scale": 16.0}), task).eval()
    x = torch.randn(6, 3, 32, 32)
    targets = F.one_hot(torch.tensor([0, 1, 2, 3, 0, 1]), 4).float()
    with torch.no_grad():
        logits = model(x)
        cos = model.head.cosine(model.backbone(x))
        torch.testing.assert_close(logits, 16.0 * cos)  # predict-time logits: s * max-cosine, no margin
        torch.testing.assert_close(task.predict(logits), torch.softmax(16.0 * cos, dim=-1))
        loss = task.loss(logits, targets)
        torch.testing.assert_close(loss, F.cross_entropy(arcface.margin_logits(logits, targets, model.head.margins,
                                                                                 16.0), targets))
        assert loss > F.cross_entropy(logits, targets)  # the margin makes the true class harder


def test_arcface_on_a_regression_task_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match="head: 'arcface' needs a classification task .*'target'"):
        build_model(cfg_with(CFG, task="target"), get_task("target"))


def test_margins_out_of_order_are_a_config_error_naming_the_key():
    from fold0123.common.config import load_config
    from tests.conftest import ROOT

    with pytest.raises(ConfigError, match="^--set arcface.margin_min=0.6: key 'arcface': .*margin_min 0.6 is "
                                          "above margin_max 0.5"):
        load_config(ROOT / "parameters" / "tiny" / "onehot.yml", ["arcface.margin_min=0.6"], schema=RunConfig)


def test_an_arcface_run_trains_and_evaluates_to_class_probabilities_for_k_classes(tmp_path):
    from fold0123.data.folds import write_folds
    from fold0123.engine.evaluator import evaluate_checkpoint
    from fold0123.engine.trainer import train
    from tests.conftest import make_class_dataroot

    dataroot = make_class_dataroot(tmp_path / "data", k=7)
    write_folds(dataroot, k=3, batch_size=None, seed=0)
    cfg = tiny_config("onehot", dataroot, tmp_path / "runs", "task=classify", "transfer_from=null", "epochs=1",
                      "head=arcface", "arcface.subcenters=2")
    run = train(cfg, "3fold0", device="cpu", progress=False)
    state = read_checkpoint(rundir.checkpoint_path(run, 1))
    counts = pd.read_csv(dataroot / "3fold0_train.csv")["target"].value_counts()
    assert state["task_state"] == {f"class_count_{c}": float(counts.get(c, 0)) for c in range(7)}
    assert state["model"]["head.weight"].shape == (7 * 2, 8 * cfg.width)  # a ResNet18's features: 8 x width
    metrics = evaluate_checkpoint(run, 1, parts=["oof"], device="cpu")
    with np.load(rundir.eval_npz_path(run, "epoch1", "oof")) as npz:
        probs = npz["outputs"]
    assert probs.shape[1:] == (8, 7)
    np.testing.assert_allclose(probs.sum(axis=2), 1.0, atol=1e-5)
    assert json.loads(rundir.metrics_path(run, "epoch1").read_text())["views"] == metrics["views"]
