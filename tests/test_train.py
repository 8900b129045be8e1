"""train.py and engine.trainer: the run directory, pretext -> transfer, exact resume, accumulation, bad inputs."""
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from fold0123.common.schema import RunConfig
from fold0123.common import rundir
from fold0123.engine.checkpoint import load_checkpoint
from fold0123.engine.trainer import (LOG_HEADER, TrainError, epoch_batches, group_weights, lr_factor, resolve_transfer,
                            train)
from tests.engine_fixtures import ROOT, make_recipe_root, session_runs, tiny_config

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return session_runs(tmp_path_factory)


def read_log(run):
    lines = rundir.loss_log_path(run).read_text().splitlines()
    return lines[0], [line.split() for line in lines[1:]]


def test_pretext_run_writes_the_run_directory(runs):
    run = runs["jigsaw"]
    assert run == runs["runs"] / "jigsaw_all"
    assert [e for e, _ in rundir.list_checkpoints(run)] == [1, 2]
    assert rundir.done_path(run).is_file() and not rundir.failed_path(run).exists()
    assert not [p for p in run.iterdir() if ".tmp." in p.name]
    cfg = rundir.read_run_config(run)
    assert (cfg.split, cfg.task, cfg.exp) == ("all", "jigsaw", "jigsaw")
    header, rows = read_log(run)
    assert header == LOG_HEADER
    assert rows and all(len(r) == 5 for r in rows)
    assert {int(r[0]) for r in rows} == {1, 2}
    steps = [int(r[1]) for r in rows]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    # jigsaw: the tiled batch has perms_per_image images per source; its loss falls from ~ln(9)
    assert float(rows[0][2]) > float(rows[-1][2])
    assert any(p.name.startswith("events.out.tfevents") for p in rundir.tb_dir(run).iterdir())
    state = load_checkpoint(rundir.checkpoint_path(run, 2))
    assert state["epoch"] == 2 and state["split"] == "all" and state["config"]["task"] == "jigsaw"
    assert state["model"]["head.weight"].shape[0] == 81
    for key in ("optimizer", "scheduler", "scaler", "rng", "task_state", "global_step"):
        assert key in state


def test_transfer_starts_from_the_pretext_backbone(runs):
    """After one short epoch the transferred backbone is still far closer to the jigsaw weights than a fresh one."""
    from fold0123.models.network import build_model
    from fold0123.models.tasks import get_task

    pretext = load_checkpoint(rundir.checkpoint_path(runs["jigsaw"], 2))["model"]
    tuned = load_checkpoint(rundir.checkpoint_path(runs["target"], 1))["model"]
    cfg = tiny_config("target", runs["dataroot"], runs["runs"])
    fresh = build_model(cfg, get_task("target")).state_dict()
    keys = [k for k in pretext if k.startswith("backbone.") and k.endswith("conv1.weight")]

    def dist(a):
        return sum(float((a[k].float() - pretext[k].float()).norm()) for k in keys)
    assert dist(tuned) < 0.5 * dist(fresh)
    assert tuned["head.weight"].shape == (1, 512)
    assert yaml.safe_load(rundir.config_path(runs["target"]).read_text())["transfer_from"] == "jigsaw_all"


def test_resolve_transfer_accepts_file_run_dir_and_run_name(runs):
    last = rundir.checkpoint_path(runs["jigsaw"], 2)
    base = dict(exp="target", checkpoints_dir=str(runs["runs"]))
    assert resolve_transfer(RunConfig(**base, transfer_from="jigsaw_all")) == last
    assert resolve_transfer(RunConfig(**base, transfer_from=str(runs["jigsaw"]))) == last
    assert resolve_transfer(RunConfig(**base, transfer_from=str(rundir.checkpoint_path(runs["jigsaw"], 1)))).name == "1.pth"
    assert resolve_transfer(RunConfig(**base, transfer_from=None)) is None
    with pytest.raises(rundir.RunError, match="transfer checkpoint not found"):
        resolve_transfer(RunConfig(**base, transfer_from="jigsaw_nope"))


@pytest.mark.integration
def test_resume_ends_with_the_same_weights_as_an_uninterrupted_run(runs, tmp_path):
    overrides = ("transfer_from=null", "epochs=3", "augment=dihedral")
    full = train(tiny_config("target", runs["dataroot"], tmp_path / "a", *overrides), "3fold1", "cpu",
                 progress=False)
    # the same run interrupted after epoch 1 (mid-epoch 2: no 2.pth, no DONE, partial log lines), then resumed
    partial = tmp_path / "b" / full.name
    shutil.copytree(full, partial)
    for epoch in (2, 3):
        rundir.checkpoint_path(partial, epoch).unlink()
    rundir.done_path(partial).unlink()
    cfg = tiny_config("target", runs["dataroot"], tmp_path / "b", *overrides)
    train(cfg, "3fold1", "cpu", resume=True, progress=False)
    assert rundir.done_path(partial).is_file()
    a = load_checkpoint(rundir.checkpoint_path(full, 3))
    b = load_checkpoint(rundir.checkpoint_path(partial, 3))
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for slot in a["optimizer"]["state"]:
        assert torch.equal(a["optimizer"]["state"][slot]["exp_avg"], b["optimizer"]["state"][slot]["exp_avg"])
    assert a["scheduler"] == b["scheduler"] and a["global_step"] == b["global_step"]
    # the log has no duplicated steps: the resumed epochs replaced what the interrupted one wrote
    _, rows_a = read_log(full)
    _, rows_b = read_log(partial)
    assert [r[:4] for r in rows_a] == [r[:4] for r in rows_b]
    # an epoch-1 model differs (the test would pass trivially if nothing trained)
    first = load_checkpoint(rundir.checkpoint_path(full, 1))["model"]
    assert not torch.equal(first["head.weight"], a["model"]["head.weight"])


def test_resume_of_a_finished_run_is_a_no_op_and_rerun_needs_resume(runs):
    cfg = tiny_config("target", runs["dataroot"], runs["runs"])
    before = rundir.checkpoint_path(runs["target"], 2).stat().st_mtime_ns
    train(cfg, "3fold0", "cpu", resume=True, progress=False)
    assert rundir.checkpoint_path(runs["target"], 2).stat().st_mtime_ns == before
    with pytest.raises(TrainError, match="--resume"):
        train(cfg, "3fold0", "cpu", progress=False)


def test_epoch_batches_are_seeded_by_seed_and_epoch():
    a1, a1_again, a2 = epoch_batches(50, 8, 0, 1), epoch_batches(50, 8, 0, 1), epoch_batches(50, 8, 0, 2)
    assert a1 == a1_again and a1 != a2 and a1 != epoch_batches(50, 8, 1, 1)
    assert sorted(i for b in a1 for i in b) == list(range(50))
    assert all(len(b) >= 2 for b in epoch_batches(17, 8, 0, 1))  # a 1-image batch would break BatchNorm


def test_accumulation_weights_make_each_step_a_mean_over_its_images():
    batches = [[0] * 8, [0] * 8, [0] * 8, [0] * 8, [0] * 5]  # 4 full micro-batches + a short one, accum 2
    weights = group_weights(batches, 2)
    assert weights[:4] == [0.5] * 4
    assert weights[4] == 1.0  # the last group holds one short micro-batch
    weights = group_weights([[0] * 8, [0] * 4], 2)
    assert weights == [8 / 12, 4 / 12]


def test_schedules_warm_up_then_decay():
    cos = [lr_factor("cosine", s, 100, 10) for s in range(100)]
    assert cos[0] == pytest.approx(0.1) and cos[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(cos[9:], cos[10:])) and cos[-1] < 0.01
    one = [lr_factor("onecycle", s, 100, 10) for s in range(100)]
    assert one[0] == pytest.approx(1 / 25) and max(one) == pytest.approx(1.0, abs=1e-6) and one[-1] < 1e-3
    with pytest.raises(TrainError):
        lr_factor("step", 0, 10, 0)


def run_cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "train.py", *args], cwd=cwd, capture_output=True, text=True,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})


@pytest.mark.integration
def test_missing_split_tag_vectors_and_transfer_give_one_line_errors(tmp_path):
    dataroot = make_recipe_root(tmp_path / "data", tags=False)
    common = ["--device", "cpu", "--set", f"dataroot={dataroot}", "--set", f"checkpoints_dir={tmp_path / 'runs'}"]
    cases = [
        (["--conf", "parameters/tiny/target.yml", "--split", "5fold4", "--set", "transfer_from=null"],
         "5fold4_train.csv: split file not found"),
        (["--conf", "parameters/tiny/materialstechniques.yml", "--split", "3fold0", "--set", "transfer_from=null"],
         "materialstechniques_w2v20.csv: tag vectors not found"),
        (["--conf", "parameters/tiny/target.yml", "--split", "3fold0"],
         "transfer_from 'jigsaw_all': transfer checkpoint not found"),
    ]
    for args, expected in cases:
        result = run_cli(*args, *common)
        assert result.returncode == 1, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr
        split = args[args.index("--split") + 1]
        exp = args[1].split("/")[-1][:-4]
        failed = tmp_path / "runs" / f"{exp}_{split}" / "FAILED"
        assert expected in failed.read_text()  # a watcher waiting on this run learns it failed


def test_a_crash_writes_failed_and_reraises(runs, tmp_path):
    cfg = tiny_config("target", runs["dataroot"], tmp_path, "transfer_from=null", "lr=1.0e+30")
    with pytest.raises(FloatingPointError):
        train(cfg, "3fold2", "cpu", progress=False)
    run = tmp_path / "target_3fold2"
    text = rundir.failed_path(run).read_text()
    assert text.startswith("FloatingPointError: ") and "loss is" in text and text.count("\n") == 1
    assert not rundir.done_path(run).exists()


@pytest.mark.integration
def test_unknown_config_key_and_bad_values_fail_cleanly(tmp_path):
    result = run_cli("--conf", "parameters/tiny/target.yml", "--split", "3fold0", "--set", "nope=1")
    assert result.returncode == 1 and "unknown key 'nope'" in result.stderr


@pytest.mark.parametrize("name", ["jigsaw", "target", "onehot", "sortingdate", "materialstechniques"])
def test_every_preset_resolves_with_the_documented_keys(name):
    from fold0123.common.config import load_config

    def load(folder):
        return load_config(ROOT / "parameters" / f"{folder}{name}.yml", schema=RunConfig)

    for folder in ("", "demo/", "tiny/"):
        cfg = load(folder)
        assert cfg.exp == name and cfg.task == name
        if name != "jigsaw":
            assert cfg.transfer_from == "jigsaw_all"
    assert load("demo/").checkpoints_dir == "runs/demo" and load("tiny/").checkpoints_dir == "runs/tiny"


def test_freeze_head_keeps_the_transferred_backbone_exactly(runs, tmp_path):
    cfg = tiny_config("target", runs["dataroot"], tmp_path, f"transfer_from={runs['jigsaw']}", "freeze=head",
                      "epochs=1")
    run = train(cfg, "3fold1", "cpu", progress=False)
    pretext = load_checkpoint(rundir.checkpoint_path(runs["jigsaw"], 2))["model"]
    tuned = load_checkpoint(rundir.checkpoint_path(run, 1))["model"]
    backbone = [k for k in tuned if k.startswith("backbone.")]
    assert backbone and all(torch.equal(tuned[k], pretext[k]) for k in backbone)  # BN statistics included
    assert "head.weight" in tuned and tuned["head.weight"].shape == (1, 512)
