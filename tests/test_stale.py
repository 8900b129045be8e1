"""Stale outputs are never silently reused: a run, the folds, the tag vectors and the image cache carry what made
them (common.fingerprint), and a re-run with another config or other inputs is refused naming what differs, or
redone with --redo-stale."""
import os
import time

import numpy as np
import pytest
import torch
from PIL import Image

from fold0123.common import rundir
from fold0123.common.fingerprint import StaleError, read_fingerprint, run_staleness
from fold0123.data.images import cache_path
from fold0123.data.layout import photo_path, read_train
from fold0123.engine.trainer import TrainError, train
from tests.conftest import make_recipe_root, tiny_config


@pytest.fixture
def trained(tmp_path):
    """A finished one-epoch target run (no transfer) on 3fold0 of a fresh fixture dataroot."""
    dataroot = make_recipe_root(tmp_path / "data")
    runs = tmp_path / "runs"
    cfg = tiny_config("target", dataroot, runs, "transfer_from=null", "epochs=1")
    run = train(cfg, "3fold0", device="cpu", progress=False)
    return dataroot, runs, run


def config(dataroot, runs, *overrides):
    return tiny_config("target", dataroot, runs, "transfer_from=null", "epochs=1", *overrides)


def test_a_changed_config_is_refused_naming_the_key_and_redone_on_request(trained):
    dataroot, runs, run = trained
    assert read_fingerprint(rundir.fingerprint_path(run)) is not None
    assert run_staleness(run, config(dataroot, runs), "3fold0") == []
    for override, reason in (("lr=3e-4", "lr: 0.001 -> 0.0003"), ("seed=7", "seed: 0 -> 7")):
        with pytest.raises(StaleError, match=f"{run}.*stale.*{reason}.*--redo-stale"):
            train(config(dataroot, runs, override), "3fold0", device="cpu", progress=False, resume=True)
    weights = (run / "1.pth").read_bytes()
    redone = train(config(dataroot, runs, "lr=3e-4"), "3fold0", device="cpu", progress=False, redo_stale=True)
    assert redone == run and rundir.done_path(run).is_file() and (run / "1.pth").read_bytes() != weights
    assert run_staleness(run, config(dataroot, runs, "lr=3e-4"), "3fold0") == []
    assert "lr: 0.0003 -> 0.001" in run_staleness(run, config(dataroot, runs), "3fold0")


def test_volatile_keys_do_not_make_a_run_stale(trained):
    dataroot, runs, run = trained
    assert run_staleness(run, config(dataroot, runs, "num_workers=1", "log_every=3", "eval.every=2",
                                     "threads=2", "keep_last=1"), "3fold0") == []
    with pytest.raises(TrainError, match="--resume"):  # fresh, but a second start still needs --resume
        train(config(dataroot, runs), "3fold0", device="cpu", progress=False)


def test_rewritten_folds_and_replaced_photos_make_the_run_stale(trained):
    dataroot, runs, run = trained
    held_out = dataroot / "3fold0_test.csv"
    lines = held_out.read_text().splitlines()
    held_out.write_text("\n".join(lines[:-1]) + "\n")  # one row fewer: as if SGKFold.py --seed 1 rewrote it
    assert run_staleness(run, config(dataroot, runs), "3fold0") == ["3fold0_test.csv changed"]
    held_out.write_text("\n".join(lines) + "\n")
    assert run_staleness(run, config(dataroot, runs), "3fold0") == []

    one = read_train(dataroot)["object_id"].iloc[0]
    Image.new("RGB", (40, 40), (255, 0, 0)).save(photo_path(dataroot, one))
    assert run_staleness(run, config(dataroot, runs), "3fold0") == ["photos/ changed"]
    with pytest.raises(StaleError, match="photos/ changed"):
        train(config(dataroot, runs), "3fold0", device="cpu", progress=False, resume=True)


@pytest.mark.integration
def test_a_retrained_transfer_source_makes_its_followers_stale(tmp_path):
    dataroot = make_recipe_root(tmp_path / "data")
    runs = tmp_path / "runs"
    train(tiny_config("jigsaw", dataroot, runs, "epochs=1"), "all", device="cpu", progress=False)
    follower = tiny_config("target", dataroot, runs, "epochs=1")  # transfer_from: jigsaw_all
    run = train(follower, "3fold0", device="cpu", progress=False)
    assert run_staleness(run, follower, "3fold0") == []
    train(tiny_config("jigsaw", dataroot, runs, "epochs=1", "lr=5e-4"), "all", device="cpu", progress=False,
          redo_stale=True)
    assert run_staleness(run, follower, "3fold0") == ["transfer checkpoint changed"]


def test_a_replaced_photo_gets_a_new_image_cache(dataroot, tmp_path):
    ids = list(read_train(dataroot)["object_id"])
    before = cache_path(dataroot, ids, 32, tmp_path / "cache")
    assert cache_path(dataroot, ids, 32, tmp_path / "cache") == before
    path = photo_path(dataroot, ids[3])
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(path)
    later = time.time() + 5
    os.utime(path, (later, later))
    assert cache_path(dataroot, ids, 32, tmp_path / "cache") != before


def test_the_launcher_refuses_stale_runs_extends_finished_ones_and_redoes_on_request(trained):
    from dataclasses import replace

    from fold0123.launcher.layout import LaunchError, LaunchOptions, plan_fold0123
    from tests.conftest import ROOT

    dataroot, runs, run = trained
    conf = ROOT / "parameters" / "tiny" / "target.yml"
    base = [f"dataroot={dataroot}", "transfer_from=null", "epochs=1"]
    options = LaunchOptions(devices="cpu", checkpoints=runs, splits=("3fold0",))
    plan = plan_fold0123(conf, replace(options, overrides=base), cores=2)
    assert [r.split for r in plan.rows] == ["3fold0"] and not plan.rows[0].resume  # DONE, not yet evaluated
    with pytest.raises(LaunchError, match=r"target_3fold0 is stale \(seed: 0 -> 5\).*--redo-stale"):
        plan_fold0123(conf, replace(options, overrides=[*base, "seed=5"]))
    redo = plan_fold0123(conf, replace(options, overrides=[*base, "seed=5"], redo_stale=True))
    assert "--redo-stale" in redo.rows[0].train_argv and "--resume" not in redo.rows[0].train_argv
    # its old DONE goes at launch, before a waiter could read it as this run's (tmuxinator's prepare, libtmux)
    assert redo.retrained() == [run] and redo.prepare_argv[-2:] == ("--extend", redo.rows[0].run_dir)
    more = plan_fold0123(conf, replace(options, overrides=[*base, "epochs=3"]))
    assert more.rows[0].resume and not more.rows[0].train_done  # a finished run asked for more epochs resumes
    assert more.prepare_argv[-2:] == ("--extend", more.rows[0].run_dir)  # its DONE goes before the panes start
    from fold0123.launcher.status import clear_failures
    clear_failures([more.rows[0].run_dir], extend=[more.rows[0].run_dir])
    assert not rundir.done_path(run).exists()


def test_a_resumed_run_removes_what_a_killed_writer_left(trained):
    import subprocess

    dataroot, runs, run = trained
    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = run / f"2.pth.tmp.{dead.pid}"
    orphan.write_bytes(b"half a checkpoint")
    train(config(dataroot, runs, "epochs=2"), "3fold0", device="cpu", progress=False, resume=True)  # extends
    assert not orphan.exists() and [e for e, _ in rundir.list_checkpoints(run)] == [1, 2]


def test_a_resumed_run_keeps_the_thread_count_it_started_with(trained):
    dataroot, runs, run = trained  # trained with the tiny preset's threads: 1
    assert rundir.read_run_config(run).threads == 1
    train(config(dataroot, runs, "epochs=2", "threads=2"), "3fold0", device="cpu", progress=False, resume=True)
    assert rundir.read_run_config(run).threads == 1  # a relaunch dividing the cores differently changes nothing
    assert torch.load(rundir.resume_path(run), weights_only=True)["threads"] == 1


@pytest.mark.parametrize("raised", ["DiskFullError", "OSError"])
def test_when_even_the_failed_marker_cannot_be_written_the_run_s_own_error_is_raised(trained, monkeypatch, capsys,
                                                                                       raised):
    """write_text turns ENOSPC into DiskFullError (what a real full disk raises: tests/test_faults.py found the
    marker's error replacing the run's own when only OSError was caught); a bare OSError is caught too."""
    import errno

    from fold0123.common.io import atomic_path
    from fold0123.engine import trainer

    dataroot, runs, run = trained
    write = trainer.write_text

    def full_disk_for_markers(path, text):
        if path.name == rundir.FAILED:
            if raised == "OSError":
                raise OSError(errno.ENOSPC, "No space left on device")
            with atomic_path(path):  # the real write_text's conversion
                raise OSError(errno.ENOSPC, "No space left on device")
        return write(path, text)

    def boom(*args, **kwargs):
        raise RuntimeError("boom in epoch 2")

    monkeypatch.setattr(trainer, "write_text", full_disk_for_markers)
    monkeypatch.setattr(trainer, "train_epoch", boom)
    with pytest.raises(RuntimeError, match="boom in epoch 2"):
        train(config(dataroot, runs, "epochs=2"), "3fold0", device="cpu", progress=False, resume=True)
    why = "No space left on device" if raised == "OSError" else "no space left on the device"
    assert f"could not write FAILED ({why}); the run failed: boom in epoch 2" in capsys.readouterr().err


def test_a_key_added_later_at_its_old_behaviour_makes_nothing_stale():
    from fold0123.common.fingerprint import ADDED_LATER, Fingerprint, differences

    before = Fingerprint({"lr": 0.001})  # a run made before `resize`, `head`, ... existed
    assert differences(before, Fingerprint({"lr": 0.001, **ADDED_LATER})) == []
    assert differences(before, Fingerprint({"lr": 0.001, **ADDED_LATER, "resize": "crop"})) == [
        "resize: 'pad' -> 'crop'"]
    # every listed key is a real key of the run schema, at the value it defaults to (what an older run did)
    from fold0123.common.fingerprint import config_identity
    from fold0123.common.schema import RunConfig
    defaults = config_identity(RunConfig(exp="x"))
    assert {k: defaults.get(k, "<no such key>") for k in ADDED_LATER} == ADDED_LATER


def test_a_changed_competition_spec_makes_a_run_stale(tmp_path):
    from fold0123.common.fingerprint import differences, run_fingerprint
    from fold0123.data.folds import write_folds
    from tests.conftest import make_class_dataroot, tiny_config

    root = make_class_dataroot(tmp_path / "data", k=7)
    write_folds(root, k=3, batch_size=None, seed=0)
    cfg = tiny_config("onehot", root, tmp_path / "runs", "task=classify", "transfer_from=null")
    before = run_fingerprint(cfg, "3fold0")
    spec = root / "competition.yml"
    spec.write_text(spec.read_text().replace("c6]", "c6, c7]"))  # one class more: another head
    assert differences(before, run_fingerprint(cfg, "3fold0")) == ["competition.yml changed"]
