"""EMA of the weights (models.ema over timm's ModelEmaV3, `ema: {decay, warmup}` in a run config): the average a
hand computation gives, updated after every optimiser step; `{epoch}.pth` holds it beside the raw weights (which
transfer and soups keep using); a resumed run ends with the same average as an uninterrupted one; evaluate.py and
the watcher evaluate it as `ema{E}`; and the stack chooses it as `ema` (`ema{E}`), refusing in one line a run
without it or a fold whose average of that epoch is not evaluated."""
from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from timm.utils import ModelEmaV3

import evaluate
from fold0123.common import rundir
from fold0123.common.schema import EmaOptions
from fold0123.engine.evaluator import evaluate_checkpoint
from fold0123.engine.trainer import train
from fold0123.engine.watch import watch_run
from fold0123.models.checkpoints import EMA_KEY, read_checkpoint
from fold0123.models.ema import build_ema
from fold0123.models.network import build_model
from fold0123.models.soup import uniform_soup
from fold0123.models.tasks import get_task
from fold0123.models.transfer import load_backbone
from fold0123.stacking.features import build_features
from fold0123.stacking.runs import RunError, choice_metrics, load_outputs, resolve_epoch, run_dir
from tests.conftest import (Interrupt, assert_epoch_spec_taken, interrupt_in_epoch_2, make_recipe_root, make_runs,
                            make_synthetic_dataroot, save_npz, tiny_config)

torch.set_num_threads(1)

DECAY = 0.9
EMA_SETS = ("transfer_from=null", f"ema.decay={DECAY}", "ema.warmup=false")
FOLDS = [f"3fold{i}" for i in range(3)]


# ------------------------------------------------------------------------------------------------- the average

def test_the_ema_is_the_hand_computed_average():
    """Decay 0.5 without warm-up: the first update copies the weights, each later one halves the distance; float
    buffers (BN statistics) are averaged too, integer ones copied."""
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    assert build_ema(model, EmaOptions()) is None  # decay 0: off
    ema = build_ema(model, EmaOptions(decay=0.5, warmup=False))
    expected = None
    for step, value in enumerate((1.0, 3.0, 7.0), start=1):
        with torch.no_grad():
            for tensor in model.state_dict().values():
                tensor.fill_(value if tensor.is_floating_point() else step)
        ema.update(model, step=step)
        expected = value if expected is None else 0.5 * expected + 0.5 * value  # 1, 2, 4.5
        for key, tensor in ema.module.state_dict().items():
            want = torch.full_like(tensor, expected if tensor.is_floating_point() else step)
            assert torch.equal(tensor, want), (step, key)
    assert expected == 4.5
    warm = build_ema(model, EmaOptions(decay=0.99, warmup=True))
    assert warm.get_decay(1) == 0.0 and warm.get_decay(2) == pytest.approx(1 - 2 ** (-2 / 3))
    assert warm.get_decay(10 ** 6) == 0.99


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory):
    """A 2-epoch target run with ema.decay 0.9 (no warm-up), and what each EMA update saw: (step, raw weights)."""
    tmp = tmp_path_factory.mktemp("ema")
    dataroot = make_recipe_root(tmp / "data", tags=False)
    seen = []
    update = ModelEmaV3.update

    def record(self, model, step=None):
        seen.append((step, {k: v.detach().clone() for k, v in model.state_dict().items()}))
        return update(self, model, step=step)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ModelEmaV3, "update", record)
        run = train(tiny_config("target", dataroot, tmp / "runs", *EMA_SETS), "3fold0", "cpu", progress=False)
    return {"dataroot": dataroot, "run": run, "seen": seen}


def test_training_updates_the_ema_after_every_optimiser_step(ema_run):
    run, seen = ema_run["run"], ema_run["seen"]
    steps = torch.load(rundir.resume_path(run), weights_only=True)["global_step"]
    assert steps >= 3 and [step for step, _ in seen] == list(range(1, steps + 1))
    average = None
    for step, weights in seen:  # timm's steps: decay 0 at step 1 (a copy), DECAY after
        average = dict(weights) if average is None else {
            k: DECAY * average[k] + (1 - DECAY) * w if w.is_floating_point() else w for k, w in weights.items()}
        if step in (steps // 2, steps):  # the ends of epochs 1 and 2
            saved = read_checkpoint(rundir.checkpoint_path(run, 1 if step < steps else 2))[EMA_KEY]
            assert saved.keys() == average.keys()
            for key, value in average.items():
                assert torch.allclose(saved[key], value, rtol=1e-5, atol=1e-6), (step, key)


def test_epoch_files_hold_the_ema_beside_the_raw_weights_which_transfer_and_soups_keep(ema_run, tmp_path):
    run = ema_run["run"]
    state = read_checkpoint(rundir.checkpoint_path(run, 2))  # weights_only=True
    assert set(state) == {"epoch", "split", "config", "model", "task_state", EMA_KEY}
    raw, ema = state["model"], state[EMA_KEY]
    assert raw.keys() == ema.keys() and not torch.equal(raw["head.weight"], ema["head.weight"])
    cfg = tiny_config("target", ema_run["dataroot"], tmp_path, *EMA_SETS)
    model = build_model(cfg, get_task("target"))
    load_backbone(model, rundir.checkpoint_path(run, 2))
    assert all(torch.equal(v, raw[f"backbone.{k}"]) for k, v in model.backbone.state_dict().items())
    soup = read_checkpoint(uniform_soup([rundir.checkpoint_path(run, e) for e in (1, 2)], tmp_path / "soup2.pth"))
    assert EMA_KEY not in soup


@pytest.mark.integration
def test_a_resumed_run_ends_with_the_same_ema_as_an_uninterrupted_one(ema_run, tmp_path, monkeypatch):
    cfg = tiny_config("target", ema_run["dataroot"], tmp_path, *EMA_SETS)
    interrupt_in_epoch_2(monkeypatch, "mid-epoch")
    with pytest.raises(Interrupt):
        train(cfg, "3fold0", "cpu", progress=False)
    monkeypatch.undo()
    partial = tmp_path / ema_run["run"].name
    assert torch.load(rundir.resume_path(partial), weights_only=True)["epoch"] == 1
    train(cfg, "3fold0", "cpu", resume=True, progress=False)
    for epoch in (1, 2):
        a = read_checkpoint(rundir.checkpoint_path(ema_run["run"], epoch))
        b = read_checkpoint(rundir.checkpoint_path(partial, epoch))
        for key in ("model", EMA_KEY):
            assert a[key].keys() == b[key].keys()
            assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), (epoch, key)


# ------------------------------------------------------------------------------------------------- evaluation

def test_evaluate_writes_the_ema_outputs_under_their_own_tag(ema_run, tmp_path, capsys):
    run = shutil.copytree(ema_run["run"], tmp_path / ema_run["run"].name)
    evaluate.main(["--run", str(run), "--epoch", "2", "--device", "cpu", "--parts", "oof"])
    out = capsys.readouterr().out
    assert "3fold0 epoch 2: rmse" in out and "3fold0 epoch 2 EMA: rmse" in out
    raw, ema = (load_outputs(run, tag, "oof") for tag in (2, "ema2"))
    assert list(raw.ids) == list(ema.ids) and raw.outputs.shape == ema.outputs.shape
    assert not np.allclose(raw.outputs, ema.outputs)
    metrics = rundir.read_metrics(run, "ema2")
    assert metrics["ema"] is True and metrics["epoch"] == 2 and "checkpoint" not in metrics
    assert "ema" not in rundir.read_metrics(run, "epoch2")
    assert metrics["views"]["mean"]["rmse"] != rundir.read_metrics(run, "epoch2")["views"]["mean"]["rmse"]
    # the readers of epoch tags do not take the EMA's for epochs
    assert rundir.evaluated_epochs(run) == [2] and rundir.evaluated_epochs(run, "oof") == [2]
    assert rundir.is_fully_evaluated(run, 2) and not rundir.is_fully_evaluated(run, 1)


def test_the_watcher_evaluates_each_epochs_ema_and_finishes_a_half_done_epoch(ema_run, tmp_path, capsys):
    run = shutil.copytree(ema_run["run"], tmp_path / ema_run["run"].name)
    evaluate_checkpoint(run, 1, parts=["oof"], device="cpu")  # a watcher killed between epoch1 and ema1
    first = rundir.metrics_path(run, "epoch1").stat().st_mtime_ns
    assert rundir.is_evaluated(run, 1) and not rundir.is_fully_evaluated(run, 1)
    step = functools.partial(evaluate._evaluate_quietly, parts=["oof"], device="cpu")
    result = watch_run(run, step, log=lambda m: None, timeout_s=120)
    assert result.exit_code == 0 and result.evaluated == [1, 2]
    assert all(rundir.is_evaluated(run, e, ema=ema) for e in (1, 2) for ema in (False, True))
    assert rundir.metrics_path(run, "epoch1").stat().st_mtime_ns == first  # not evaluated again
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(line["epoch"], line.get("ema", False)) for line in lines] == [(1, True), (2, False), (2, True)]


# ------------------------------------------------------------------------------------------------- stacking

def fake_ema(run: Path) -> None:
    """What training with ema.decay and evaluate.py leave: the config's decay, and per evaluated epoch an
    `ema{E}` tag with outputs of its own and that epoch's metrics marked as the EMA's."""
    config = yaml.safe_load(rundir.config_path(run).read_text())
    rundir.config_path(run).write_text(yaml.safe_dump({**config, "ema": {"decay": DECAY}}))
    for epoch in rundir.evaluated_epochs(run):
        for part in rundir.PARTS:
            if rundir.eval_npz_path(run, rundir.epoch_tag(epoch), part).is_file():
                out = load_outputs(run, epoch, part)
                save_npz(rundir.eval_npz_path(run, rundir.ema_tag(epoch), part), out.ids, out.outputs * 0.5 + 0.25)
        metrics = json.loads(rundir.metrics_path(run, rundir.epoch_tag(epoch)).read_text())
        rundir.metrics_path(run, rundir.ema_tag(epoch)).write_text(json.dumps({**metrics, "ema": True}))


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """Synthetic target (with EMA evaluations) and onehot (without) runs, 3 epochs, 3 folds + all."""
    tmp = tmp_path_factory.mktemp("ema_stack")
    root = make_synthetic_dataroot(tmp / "data", n_train=90, n_test=30)
    make_runs(tmp / "runs", root, tasks=("target", "onehot"), epochs=3, train_epochs=())
    for split in FOLDS + ["all"]:
        fake_ema(run_dir(tmp / "runs", "target", split))
    return tmp, root, tmp / "runs"


def test_the_epoch_spec_takes_ema():
    assert_epoch_spec_taken(["runs={target: ema, onehot: ema2}", "ensemble.runs={onehot: ema}"],
                            {"runs": {"target": "ema", "onehot": "ema2"}, "ensemble.runs": {"onehot": "ema"}},
                            ["ema0", "emax"], "")


def test_ema_resolves_to_the_last_epochs_ema_outputs(synth):
    _, root, runs = synth
    assert resolve_epoch(runs, "target", FOLDS, "ema") == "ema3"
    assert resolve_epoch(runs, "target", FOLDS, "ema2") == "ema2"
    fs = build_features(root, runs, {"target": "ema", "onehot": "last"}, aggregations="mean")
    assert [(c.exp, c.epoch) for c in fs.runs] == [("target", "ema3"), ("onehot", 3)]
    oid, fold = fs.train.index[4], int(fs.folds[4])
    ema = load_outputs(run_dir(runs, "target", f"3fold{fold}"), "ema3", "oof")
    row = list(ema.ids).index(oid)
    assert fs.train.loc[oid, "target_mean_0"] == pytest.approx(ema.outputs[row, :, 0].mean())
    test = load_outputs(run_dir(runs, "target", "all"), "ema3", "test")
    tid = fs.test["all"].index[0]
    assert fs.test["all"].loc[tid, "target_mean_0"] == pytest.approx(test.outputs[list(test.ids).index(tid)].mean())
    at = choice_metrics(runs, "target", FOLDS, "ema3")  # what the stack's report and the ensemble weigh runs by
    assert list(at["epoch"]) == ["ema3"] * 3 and at["value"].notna().all()


def test_a_run_without_ema_or_with_a_stale_one_is_refused_in_one_line(synth, tmp_path):
    _, root, runs = synth
    with pytest.raises(RunError, match=r"onehot_3fold0: has no EMA weights \(trained with ema.decay 0\), so "
                                       r"`onehot: ema` cannot be stacked: set ema.decay") as err:
        build_features(root, runs, {"target": "ema", "onehot": "ema"})
    assert "\n" not in str(err.value)
    copy = shutil.copytree(runs, tmp_path / "runs")
    rundir.metrics_path(run_dir(copy, "target", "3fold1"), "ema3").unlink()  # fold 1's EMA evaluated up to epoch 2
    with pytest.raises(RunError, match=r"target_3fold1/eval/ema3_metrics.json: missing: the EMA weights of epoch 3 "
                                       r"are not evaluated \(evaluate.py --run .*target_3fold1 --epoch 3"):
        build_features(root, copy, {"target": "ema"})
