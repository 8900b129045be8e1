"""train.py and engine.trainer: the run directory, pretext -> transfer, exact resume (after a crash anywhere, from
weights-only epoch files + one resume.pth), extending a finished run, accumulation, bad inputs."""
import shutil

import pytest
import torch
import yaml

from fold0123.common import rundir
from fold0123.common.config import ConfigError
from fold0123.common.schema import RunConfig
from fold0123.engine import trainer
from fold0123.engine.optim import lr_factor
from fold0123.engine.trainer import (
    LOG_HEADER,
    DivergedError,
    TrainError,
    epoch_batches,
    group_weights,
    resolve_transfer,
    train,
)
from fold0123.models.checkpoints import RESUME_KEYS, CheckpointError, read_checkpoint
from tests.conftest import (
    ROOT,
    Interrupt,
    interrupt_in_epoch_2,
    make_recipe_root,
    run_script,
    session_runs,
    tiny_config,
)

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
    state = read_checkpoint(rundir.checkpoint_path(run, 2))
    assert state["epoch"] == 2 and state["split"] == "all" and state["config"]["task"] == "jigsaw"
    assert state["model"]["head.weight"].shape[0] == 81


def test_epoch_files_hold_the_weights_and_one_resume_file_is_replaced(runs):
    run = runs["jigsaw"]
    assert sorted(p.name for p in run.iterdir() if p.suffix == ".pth") == ["1.pth", "2.pth", "resume.pth"]
    for epoch in (1, 2):
        state = read_checkpoint(rundir.checkpoint_path(run, epoch))
        assert set(state) == {"epoch", "split", "config", "model", "task_state"} and state["epoch"] == epoch
    resume = torch.load(rundir.resume_path(run), weights_only=True)
    assert set(resume) == {*RESUME_KEYS, "threads", "cpu_extras", "world_size"} and resume["epoch"] == 2  # the last
    # AdamW's two moments per weight stay out of the per-epoch files
    assert rundir.checkpoint_path(run, 2).stat().st_size < 0.6 * rundir.resume_path(run).stat().st_size


def test_transfer_starts_from_the_pretext_backbone(runs):
    """After one short epoch the transferred backbone is still far closer to the jigsaw weights than a fresh one."""
    from fold0123.models.network import build_model
    from fold0123.models.tasks import get_task

    pretext = read_checkpoint(rundir.checkpoint_path(runs["jigsaw"], 2))["model"]
    tuned = read_checkpoint(rundir.checkpoint_path(runs["target"], 1))["model"]
    cfg = tiny_config("target", runs["dataroot"], runs["runs"])
    fresh = build_model(cfg, get_task("target")).state_dict()
    keys = [k for k in pretext if k.startswith("backbone.") and k.endswith("conv1.weight")]

    def dist(a):
        return sum(float((a[k].float() - pretext[k].float()).norm()) for k in keys)
    assert dist(tuned) < 0.5 * dist(fresh)
    assert tuned["head.weight"].shape == (1, 8 * cfg.width)  # a ResNet18's features: 8 x width
    assert yaml.safe_load(rundir.config_path(runs["target"]).read_text())["transfer_from"] == "jigsaw_all"


def test_resolve_transfer_accepts_file_run_dir_and_run_name(runs):
    last = rundir.checkpoint_path(runs["jigsaw"], 2)
    base = dict(exp="target", checkpoints_dir=str(runs["runs"]))
    assert resolve_transfer(RunConfig(**base, transfer_from="jigsaw_all")) == last
    assert resolve_transfer(RunConfig(**base, transfer_from=str(runs["jigsaw"]))) == last
    first = str(rundir.checkpoint_path(runs["jigsaw"], 1))
    assert resolve_transfer(RunConfig(**base, transfer_from=first)).name == "1.pth"
    assert resolve_transfer(RunConfig(**base, transfer_from=None)) is None
    with pytest.raises(rundir.RunError, match="transfer checkpoint not found"):
        resolve_transfer(RunConfig(**base, transfer_from="jigsaw_nope"))


RESUME_OVERRIDES = ("transfer_from=null", "epochs=3", "augment=dihedral")


@pytest.fixture(scope="module")
def full_run(runs, tmp_path_factory):
    """A 3-epoch run that was never interrupted, to compare resumed ones with."""
    cfg = tiny_config("target", runs["dataroot"], tmp_path_factory.mktemp("full"), *RESUME_OVERRIDES)
    return train(cfg, "3fold1", "cpu", progress=False)


@pytest.mark.integration
@pytest.mark.parametrize("where", ["mid-epoch", "between-writes"])
def test_resume_ends_with_the_same_weights_as_an_uninterrupted_run(runs, full_run, tmp_path, monkeypatch, where):
    cfg = tiny_config("target", runs["dataroot"], tmp_path, *RESUME_OVERRIDES)
    interrupt_in_epoch_2(monkeypatch, where)
    with pytest.raises(Interrupt):
        train(cfg, "3fold1", "cpu", progress=False)
    monkeypatch.undo()
    partial = tmp_path / full_run.name
    assert torch.load(rundir.resume_path(partial), weights_only=True)["epoch"] == 1
    assert rundir.failed_path(partial).is_file() and not rundir.done_path(partial).exists()
    written = rundir.checkpoint_path(partial, 2)
    before = written.read_bytes() if where == "between-writes" else None

    train(cfg, "3fold1", "cpu", resume=True, progress=False)
    assert rundir.done_path(partial).is_file() and not rundir.failed_path(partial).exists()
    if before is not None:  # the redone epoch rewrote the very same weights file
        assert written.read_bytes() == before
    for epoch in (1, 2, 3):
        a = read_checkpoint(rundir.checkpoint_path(full_run, epoch))["model"]
        b = read_checkpoint(rundir.checkpoint_path(partial, epoch))["model"]
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (epoch, key)
    a, b = (torch.load(rundir.resume_path(r), weights_only=True) for r in (full_run, partial))
    for slot in a["optimizer"]["state"]:
        assert torch.equal(a["optimizer"]["state"][slot]["exp_avg"], b["optimizer"]["state"][slot]["exp_avg"])
    assert a["scheduler"] == b["scheduler"] and a["global_step"] == b["global_step"] and b["epoch"] == 3
    # the log has no duplicated steps: the resumed epochs replaced what the interrupted one wrote
    _, rows_a = read_log(full_run)
    _, rows_b = read_log(partial)
    assert [r[:4] for r in rows_a] == [r[:4] for r in rows_b]
    # an epoch-1 model differs (the test would pass trivially if nothing trained)
    first = read_checkpoint(rundir.checkpoint_path(full_run, 1))["model"]
    last = read_checkpoint(rundir.checkpoint_path(full_run, 3))["model"]
    assert not torch.equal(first["head.weight"], last["head.weight"])


def test_resume_with_more_epochs_extends_a_done_run(runs, full_run, tmp_path, monkeypatch):
    """--resume --set epochs=4 on a DONE 3-epoch run: DONE goes, epoch 4 follows the 4-epoch schedule, then DONE."""
    run = shutil.copytree(full_run, tmp_path / full_run.name)
    cfg = tiny_config("target", runs["dataroot"], tmp_path, *RESUME_OVERRIDES, "epochs=4", "keep_last=2")
    lrs = {}
    train_epoch = trainer.train_epoch

    def record(trainee, task, data, cfg, epoch, global_step, *rest, **options):
        lrs[epoch] = (global_step, trainee.optimizer.param_groups[0]["lr"])
        return train_epoch(trainee, task, data, cfg, epoch, global_step, *rest, **options)
    monkeypatch.setattr(trainer, "train_epoch", record)
    # without its resume state a finished run cannot be extended: one error naming the file, and it stays DONE
    hidden = rundir.resume_path(run).rename(run / "resume.hidden")
    with pytest.raises(CheckpointError, match="resume.pth: not found, and 3.pth holds weights only"):
        train(cfg, "3fold1", "cpu", resume=True, progress=False)
    assert rundir.done_path(run).is_file() and not rundir.failed_path(run).exists() and not lrs
    hidden.rename(rundir.resume_path(run))
    train(cfg, "3fold1", "cpu", resume=True, progress=False)
    assert list(lrs) == [4] and rundir.done_path(run).is_file()
    assert [e for e, _ in rundir.list_checkpoints(run)] == [3, 4]  # keep_last prunes as the run goes on
    assert torch.load(rundir.resume_path(run), weights_only=True)["epoch"] == 4
    # the first resumed step uses the new schedule's lr at its step (the old one had decayed to zero)
    step, lr = lrs[4]
    steps_per_epoch = step // 3
    factor = lr_factor("cosine", step, 4 * steps_per_epoch, steps_per_epoch)  # warmup_epochs: 1
    assert lr == pytest.approx(cfg.lr * factor) and lr > 0
    _, rows = read_log(run)
    assert {int(r[0]) for r in rows} == {1, 2, 3, 4}
    assert yaml.safe_load(rundir.config_path(run).read_text())["epochs"] == 4
    # asking for no more epochs than it has is the old no-op
    before = rundir.checkpoint_path(run, 4).stat().st_mtime_ns
    train(tiny_config("target", runs["dataroot"], tmp_path, *RESUME_OVERRIDES), "3fold1", "cpu", resume=True,
          progress=False)
    assert rundir.checkpoint_path(run, 4).stat().st_mtime_ns == before and rundir.done_path(run).is_file()


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
    with pytest.raises(ConfigError):
        lr_factor("step", 0, 10, 0)


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
        result = run_script("train.py", *args, *common)
        assert result.returncode == 1, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr
        split = args[args.index("--split") + 1]
        exp = args[1].split("/")[-1][:-4]
        failed = tmp_path / "runs" / f"{exp}_{split}" / "FAILED"
        if split == "5fold4":  # a split that does not exist is refused before the run directory is made (issue 22)
            assert not failed.parent.exists()
            continue
        assert expected in failed.read_text()  # a watcher waiting on this run learns it failed


def _loss_times(monkeypatch, factor: float, from_call: int = 2) -> None:
    """The task's loss multiplied by `factor` from its `from_call`-th batch on (a NaN, or an explosion that stays
    finite: 1.5e7 as issue 22 found, which once ended DONE)."""
    get_task = trainer.get_task

    def spoiled(*args, **kwargs):
        task = get_task(*args, **kwargs)
        loss, calls = task.loss, []

        def times(out, targets):
            calls.append(1)
            return loss(out, targets) * (factor if len(calls) >= from_call else 1.0)
        task.loss = times
        return task
    monkeypatch.setattr(trainer, "get_task", spoiled)


@pytest.mark.parametrize("factor, message", [
    (float("nan"), r"^loss is nan at epoch 1 batch 2 \(lr 0.001\): the training diverged; lower `lr`"),
    (1.5e7, r"^loss is [0-9.e+]+ at epoch 1 batch 2 \(lr 0.001\), over 1000 x its first value [0-9.]+: the training "
            r"diverged; lower `lr`"),
], ids=["nan", "finite explosion"])
def test_a_diverged_loss_writes_failed_and_reraises(runs, tmp_path, monkeypatch, factor, message):
    cfg = tiny_config("target", runs["dataroot"], tmp_path, "transfer_from=null", "lr=1.0e-3")
    _loss_times(monkeypatch, factor)
    with pytest.raises(DivergedError, match=message) as err:
        train(cfg, "3fold2", "cpu", progress=False)
    assert "\n" not in str(err.value)
    run = tmp_path / "target_3fold2"
    text = rundir.failed_path(run).read_text()
    assert text.startswith("DivergedError: loss is") and text.count("\n") == 1
    assert not rundir.done_path(run).exists() and not rundir.list_checkpoints(run)


def test_check_divergence_is_one_rule_for_every_loop():
    from fold0123.engine.trainer import check_divergence
    check_divergence(5.0, None, "at step 1", "lower `lr`")  # the first value is never an explosion
    check_divergence(999.0, 0.01, "at step 2", "lower `lr`")  # floored at 1: a loss near zero may move
    check_divergence(1e3 * 2.3, 2.3, "at step 2", "lower `lr`")
    with pytest.raises(DivergedError, match=r"^loss is 2301 at step 3, over 1000 x its first value 2\.3: the "
                                            r"training diverged; lower `lr`$"):
        check_divergence(2301.0, 2.3, "at step 3", "lower `lr`")
    with pytest.raises(DivergedError, match=r"^loss is inf at step 1: the training diverged"):
        check_divergence(float("inf"), None, "at step 1", "lower `lr`")


@pytest.mark.integration
def test_unknown_config_key_and_bad_values_fail_cleanly(tmp_path):
    result = run_script("train.py", "--conf", "parameters/tiny/target.yml", "--split", "3fold0", "--set", "nope=1")
    assert result.returncode == 1 and "unknown key 'nope'" in result.stderr


@pytest.mark.parametrize("name", ["jigsaw", "target", "onehot", "sortingdate", "materialstechniques", "tags"])
def test_every_preset_resolves_with_the_documented_keys(name):
    from fold0123.common.config import load_config

    def load(folder):
        return load_config(ROOT / "parameters" / f"{folder}{name}.yml", schema=RunConfig)

    for folder in ("", "demo/", "tiny/"):
        cfg = load(folder)
        assert cfg.exp == name and cfg.task == name
        if name != "jigsaw":  # the CPU demo's tasks train from scratch (its recipe has no pretext run)
            assert cfg.transfer_from == (None if folder == "demo/" else "jigsaw_all")
    assert load("demo/").checkpoints_dir == "runs/demo" and load("tiny/").checkpoints_dir == "runs/tiny"


def test_freeze_head_keeps_the_transferred_backbone_exactly(runs, tmp_path):
    cfg = tiny_config("target", runs["dataroot"], tmp_path, f"transfer_from={runs['jigsaw']}", "freeze=head",
                      "epochs=1")
    run = train(cfg, "3fold1", "cpu", progress=False)
    pretext = read_checkpoint(rundir.checkpoint_path(runs["jigsaw"], 2))["model"]
    tuned = read_checkpoint(rundir.checkpoint_path(run, 1))["model"]
    backbone = [k for k in tuned if k.startswith("backbone.")]
    assert backbone and all(torch.equal(tuned[k], pretext[k]) for k in backbone)  # BN statistics included
    assert "head.weight" in tuned and tuned["head.weight"].shape == (1, 8 * cfg.width)


def test_a_second_train_on_the_same_run_directory_is_refused_naming_the_first(runs, tmp_path):
    """Two train.py on one run directory once both trained into the same files and both ended DONE (issue 22):
    the second is refused in one line naming the first's PID, before it writes anything (no FAILED either: the
    first is fine)."""
    import os

    from fold0123.common.io import LockedError, exclusive_lock
    cfg = tiny_config("target", runs["dataroot"], tmp_path, "transfer_from=null")
    run = tmp_path / "target_3fold2"
    with exclusive_lock(rundir.train_lock_path(run), holder="another train.py"):  # the first trainer
        with pytest.raises(LockedError) as err:
            train(cfg, "3fold2", "cpu", progress=False)
    assert str(err.value) == f"{run / 'train.lock'}: another train.py (pid {os.getpid()}) holds this lock"
    assert sorted(p.name for p in run.iterdir()) == ["train.lock"]
