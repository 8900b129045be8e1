"""The tags task: each frequent material / technique token as its own yes/no (multi-label BCE), its targets from
the tag tables, its metrics, one tiny epoch evaluated and read by the stack."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from fold0123.common.errors import LayoutError
from fold0123.common.schema import RunConfig
from fold0123.data.layout import read_train
from fold0123.data.tags import frequent_tokens, multi_hot, read_tag_targets, read_tokens
from fold0123.engine.evaluator import evaluate_checkpoint
from fold0123.engine.trainer import train
from fold0123.models.tasks import get_task
from fold0123.stacking.features import build_features
from fold0123.stacking.runs import load_outputs
from tests.conftest import MATERIALS, TECHNIQUES, make_recipe_root, tiny_config

torch.set_num_threads(1)


def test_the_vocabulary_keeps_tokens_enough_objects_carry_counting_each_object_once():
    tokens = pd.DataFrame({"object_id": ["a", "a", "b", "c", "c", "c"],
                           "token": ["ink", "ink", "ink", "oil", "ink", "wood"]})
    assert frequent_tokens(tokens, 2) == ["ink"]  # a's two ink rows count once: ink 3 objects, oil and wood 1
    assert frequent_tokens(tokens, 1) == ["ink", "oil", "wood"]
    hot = multi_hot(tokens, ["ink", "wood"], ["c", "z", "a"])
    assert hot.tolist() == [[1, 1], [0, 0], [1, 0]] and hot.dtype == np.float32


def test_targets_are_each_objects_tags_and_the_head_is_as_wide_as_the_vocabulary(tmp_path):
    dataroot = make_recipe_root(tmp_path, tags=False)
    cfg = RunConfig(exp="t", dataroot=str(dataroot), tags_min_objects=2)
    train_frame = read_train(dataroot)
    task = get_task("tags")
    truth = task.targets(train_frame, dataroot, cfg)
    names = sorted({t for tags in MATERIALS + TECHNIQUES for t in tags} - {"pencil"}
                   | {"pencil (material)", "pencil (technique)"})
    assert frequent_tokens(read_tokens(dataroot), 2) == names and task.n_outputs(cfg) == len(names)
    materials = pd.read_csv(dataroot / "materials.csv", dtype=str)
    first = train_frame["object_id"].iloc[0]
    carried = {f"{m} (material)" if m == "pencil" else m for m in materials[materials["object_id"] == first]["name"]}
    assert carried and carried <= {names[j] for j in np.flatnonzero(truth[0])}

    perfect = task.metrics(truth, train_frame, dataroot, cfg)
    prevalence = task.metrics(np.tile(truth.mean(0), (len(truth), 1)), train_frame, dataroot, cfg)
    assert perfect["map"] == pytest.approx(1.0) and perfect["bce"] < 1e-5
    assert prevalence["map"] < 0.9 and prevalence["bce"] > 0.1 and task.lower_is_better and task.primary == "bce"

    with pytest.raises(LayoutError, match=r"no tag token .* is carried by 10000 objects \(tags_min_objects\)"):
        task.n_outputs(RunConfig(exp="t", dataroot=str(dataroot), tags_min_objects=10_000))


@pytest.mark.integration
def test_one_tiny_epoch_saves_tag_probabilities_the_stack_reads(tmp_path):
    dataroot = make_recipe_root(tmp_path / "data", tags=False)
    runs = tmp_path / "runs"
    cfg = tiny_config("tags", dataroot, runs, "transfer_from=null", "epochs=1")
    width = get_task("tags").n_outputs(cfg)
    run = train(cfg, "3fold0", device="cpu", progress=False)
    metrics = evaluate_checkpoint(run, 1, parts=["oof", "test"], device="cpu")
    out = load_outputs(run, 1, "oof")
    assert out.outputs.shape[1:] == (8, width) and ((out.outputs >= 0) & (out.outputs <= 1)).all()
    assert set(metrics["views"]["mean"]) >= {"bce", "map"}
    for split in ("3fold1", "3fold2"):
        evaluate_checkpoint(train(cfg, split, device="cpu", progress=False), 1, parts=["oof", "test"], device="cpu")
    features = build_features(dataroot, runs, {"tags": "last"}, k=3, aggregations="mean", test_features="fold_mean")
    assert features.train.shape == (len(read_train(dataroot)), width)
    assert read_tag_targets(dataroot, cfg.tags_min_objects, []).shape == (0, width)
