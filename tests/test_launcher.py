"""launch.py / launcher: plans decided from run directories, and real tmux sessions running real tiny runs.

The tmux tests start a private server (`tmux -L <unique>`), run train.py and evaluate.py for real on the tiny
preset (one epoch, 32 px, one thread) and always kill the server in teardown.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import libtmux
import pandas as pd
import pytest
import torch

from fold0123.common import rundir
from fold0123.common.config import load_config
from fold0123.common.fingerprint import run_fingerprint, write_fingerprint
from fold0123.common.poll import wait_until
from fold0123.common.schema import RunConfig
from fold0123.launcher.fold0123 import LaunchError, LaunchOptions, launch_fold0123, plan_fold0123
from fold0123.launcher.layout import (LaunchError as LayoutError, describe, devices_on_cpu, group_label, pane_command,
                                      parse_devices, parse_groups, session_name, status_argv)
from fold0123.launcher.status import mark_failed, read_status
from fold0123.launcher.tmux import check_free
from tests.conftest import ROOT, make_dataroot

TINY = ROOT / "parameters" / "tiny" / "target.yml"
SPLITS = ["3fold0", "3fold1", "3fold2", "all"]

needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def tiny_experiment(tmp_path: Path, name: str = "tiny", epochs: int = 1) -> Path:
    """A tiny dataroot with its 3 folds, and an experiment config over parameters/tiny/target.yml using it."""
    from fold0123.data.folds import write_folds
    from tests.conftest import make_dataroot

    dataroot = make_dataroot(tmp_path / "data")
    write_folds(dataroot, 3, None, 0)
    conf = tmp_path / f"{name}.yml"
    conf.write_text(f"base: {TINY}\ndataroot: {dataroot}\ncheckpoints_dir: {tmp_path / 'runs'}\n"
                    f"transfer_from: null\nepochs: {epochs}\n")
    return conf


def fake_run(run_dir: Path, epochs: int = 0, done: bool = False, evaluated: bool = False,
             conf: Path | None = None) -> Path:
    """A run directory as train.py/evaluate.py leave it, without training (for the planner's decisions); with
    `conf`, the fingerprint train.py would write for it, so that the planner finds it fresh."""
    (run_dir / "eval").mkdir(parents=True, exist_ok=True)
    if conf is not None:
        cfg = load_config(conf, [f"checkpoints_dir={run_dir.parent}"], schema=RunConfig)
        write_fingerprint(rundir.fingerprint_path(run_dir), run_fingerprint(cfg, run_dir.name[len(cfg.exp) + 1:]))
    for epoch in range(1, epochs + 1):
        (run_dir / f"{epoch}.pth").write_bytes(b"x")
    if done:
        (run_dir / "DONE").write_text("2026-01-01\n")
    if evaluated and epochs:
        (run_dir / "eval" / f"epoch{epochs}_metrics.json").write_text(json.dumps({"epoch": epochs}))
    return run_dir


@pytest.fixture
def conf_only(tmp_path: Path) -> Path:
    """A config for planning only (no dataroot needed)."""
    conf = tmp_path / "plan.yml"
    conf.write_text(f"base: {TINY}\ncheckpoints_dir: {tmp_path / 'runs'}\nexp: planned\n")
    return conf


# --- planning: pure decisions from config and run directories -------------------------------------------------

def test_devices_cycle_over_gpus_and_cpu_divides_threads(conf_only: Path):
    assert parse_devices("0,1,2,3", 4) == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    assert parse_devices("0,1", 4) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert parse_devices("cpu", 2) == ["cpu", "cpu"]
    with pytest.raises(LaunchError, match="gpu7"):
        parse_devices("0,gpu7", 4)
    gpu = plan_fold0123(conf_only, LaunchOptions(devices="0,1,2,3"), cores=16)
    assert [(r.split, r.device, r.threads) for r in gpu.rows] == [
        ("3fold0", "cuda:0", None), ("3fold1", "cuda:1", None), ("3fold2", "cuda:2", None), ("all", "cuda:3", None)]
    assert all("threads=" not in " ".join(r.train_argv) for r in gpu.rows)
    cpu = plan_fold0123(conf_only, LaunchOptions(devices="cpu"), cores=16)
    assert {r.threads for r in cpu.rows} == {4}
    assert all(r.train_argv[-2:] == ("--set", "threads=4") and r.env == {"OMP_NUM_THREADS": "4"} for r in cpu.rows)
    assert {r.threads for r in plan_fold0123(conf_only, LaunchOptions(devices="cpu"), cores=2).rows} == {1}


def test_eval_devices_put_each_rows_evaluator_on_its_own_device(conf_only: Path):
    """The original: train on GPUs 0-3, evaluate on 4-7 (plans need no GPUs: only the argv is checked)."""
    plan = plan_fold0123(conf_only, LaunchOptions(devices="0,1,2,3", eval_devices="4,5,6,7"), cores=16)
    assert [(r.device, r.eval_device) for r in plan.rows] == [(f"cuda:{i}", f"cuda:{i + 4}") for i in range(4)]
    for i, row in enumerate(plan.rows):
        assert row.train_argv[row.train_argv.index("--device") + 1] == f"cuda:{i}"
        assert row.eval_argv[-2:] == ("--device", f"cuda:{i + 4}")
        assert row.panes[2].title == f"{row.split} eval (cuda:{i + 4})"
        assert f"--device cuda:{i + 4}" in row.panes[2].command
        assert row.threads is None and row.env == row.eval_env == {}
    assert "3fold0   cuda:0, evaluated on cuda:4: train" in describe(plan)
    default = plan_fold0123(conf_only, LaunchOptions(devices="0,1,2,3"), cores=16)  # default: the trainer's device
    assert [r.eval_argv[-1] for r in default.rows] == [r.device for r in default.rows]
    assert [p.title for p in default.panes if p.role == "eval"] == [f"{s} eval" for s in SPLITS]
    # threads: a row with its trainer or its evaluator on the CPU counts once, and only the CPU process gets them
    cpu_eval = plan_fold0123(conf_only, LaunchOptions(devices="0,1", eval_devices="cpu"), cores=8)
    assert {r.threads for r in cpu_eval.rows} == {2}
    assert all(r.env == {} and r.eval_env == {"OMP_NUM_THREADS": "2"} for r in cpu_eval.rows)
    assert all("threads=" not in " ".join(r.train_argv) and "OMP_NUM_THREADS=2 " in r.panes[2].command
               and "OMP_NUM_THREADS" not in r.panes[0].command for r in cpu_eval.rows)
    mixed = plan_fold0123(conf_only, LaunchOptions(devices="cpu", eval_devices="0"), cores=8)
    assert all(r.train_argv[-2:] == ("--set", "threads=2") and r.eval_env == {} for r in mixed.rows)
    with pytest.raises(LaunchError, match="--eval-devices '4,x'"):
        plan_fold0123(conf_only, LaunchOptions(devices="0", eval_devices="4,x"))


def test_device_groups_one_per_row_cycle_and_refuse_what_cannot_run():
    """`/` separates the groups rows cycle over, `,` a group's devices, `cpu*N` is N CPU ranks."""
    assert parse_groups("0,1/2,3/4,5/6,7", 4) == [("cuda:0", "cuda:1"), ("cuda:2", "cuda:3"), ("cuda:4", "cuda:5"),
                                                  ("cuda:6", "cuda:7")]
    assert parse_groups("0,1/2,3", 4) == [("cuda:0", "cuda:1"), ("cuda:2", "cuda:3")] * 2
    assert parse_groups("0,1,2,3/", 2) == [("cuda:0", "cuda:1", "cuda:2", "cuda:3")] * 2  # one group, every row
    assert parse_groups("cpu*2", 3) == parse_groups("cpu,cpu/", 3) == [("cpu", "cpu")] * 3
    assert parse_groups("cuda:0,cuda:1/cpu*3", 2) == [("cuda:0", "cuda:1"), ("cpu", "cpu", "cpu")]
    assert parse_groups("0/1", 2) == parse_groups("0,1", 2) == [("cuda:0",), ("cuda:1",)]  # groups of one: as today
    assert parse_groups("cpu", 2) == [("cpu",), ("cpu",)] and parse_groups("cpu*1", 1) == [("cpu",)]
    assert [group_label(g) for g in parse_groups("0,1/cpu*2/3", 3)] == ["cuda:0,1", "cpu*2", "cuda:3"]
    for spec, error in [("0,0/", "names a GPU twice"), ("0,cpu/", "not a mixture"), ("cpu*x", "whole number"),
                        ("cpu*0", "whole number"), ("0,1//2,3", "an empty group"), ("0,gpu7/", "'gpu7'"),
                        ("mps,mps/", "not a mixture")]:
        with pytest.raises(LayoutError, match=error):
            parse_groups(spec, 4)
    with pytest.raises(LayoutError, match="--eval-devices '4,5/6,7': one device per row"):
        parse_devices("4,5/6,7", 4, "--eval-devices")  # the evaluator watches on one device
    assert devices_on_cpu("cpu") and devices_on_cpu("cpu*2") and devices_on_cpu("cpu,cpu/cpu*4")
    assert not devices_on_cpu("0,1,2,3") and not devices_on_cpu("cpu/0,1") and not devices_on_cpu("cpu,1")


def test_a_row_with_a_device_group_trains_under_torchrun(conf_only: Path):
    plan = plan_fold0123(conf_only, LaunchOptions(devices="0,1/2,3/4,5/6,7"), cores=16)
    for i, row in enumerate(plan.rows):
        assert (row.device, row.ranks, row.eval_device) == (f"cuda:{2 * i},{2 * i + 1}", 2, f"cuda:{2 * i}")
        assert list(row.train_argv[1:6]) == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                                             "train.py"]
        assert row.train_argv[row.train_argv.index("--device") + 1] == "cuda"  # each rank on cuda:LOCAL_RANK
        assert row.env == {"CUDA_VISIBLE_DEVICES": f"{2 * i},{2 * i + 1}"} and row.threads is None
        train = row.panes[0].command
        assert f"CUDA_VISIBLE_DEVICES={2 * i},{2 * i + 1} " in train and f"'{row.split} train (cuda:{2 * i},"in train
        assert "--role train --message 'torchrun (train.py over 2 ranks) exited non-zero" in train
        assert row.eval_argv[-2:] == ("--device", f"cuda:{2 * i}") and "CUDA_VISIBLE" not in row.panes[2].command
    assert "3fold0   cuda:0,1, evaluated on cuda:0, 2 ranks (torchrun): train" in describe(plan)
    cpu = plan_fold0123(conf_only, LaunchOptions(devices="cpu*2"), cores=8)  # 8 cores, 4 rows: 2 threads a row
    for row in cpu.rows:
        assert (row.device, row.ranks, row.eval_device, row.threads) == ("cpu*2", 2, "cpu", 2)
        assert row.train_argv[row.train_argv.index("--device") + 1] == "cpu"
        assert row.train_argv[-2:] == ("--set", "threads=1") and row.env == {"OMP_NUM_THREADS": "1"}
        assert row.eval_env == {"OMP_NUM_THREADS": "2"}
    as_json = json.loads(cpu.to_json())
    assert as_json["rows"][0]["ranks"] == 2 and "torch.distributed.run" in as_json["rows"][0]["panes"][0]["command"]
    single = plan_fold0123(conf_only, LaunchOptions(devices="0/1/2/3"), cores=16)  # groups of one: plain train.py
    assert all(r.ranks == 1 and r.train_argv[1] == "train.py" for r in single.rows)


def test_groups_and_tasks_each_on_their_executor_in_one_line(conf_only: Path):
    with pytest.raises(LaunchError, match="GPU groups are for tmux .* --tasks-per-node N"):
        launch_fold0123(conf_only, LaunchOptions(devices="0,1/2,3", executor="slurm", verbose=False))
    with pytest.raises(LaunchError, match="for --executor slurm or local; in tmux give each row a GPU group"):
        launch_fold0123(conf_only, LaunchOptions(tasks_per_node=2, verbose=False))
    with pytest.raises(LaunchError, match="one or the other"):
        launch_fold0123(conf_only, LaunchOptions(devices="cpu*2", tasks_per_node=2, executor="local", verbose=False))


def test_plan_rows_panes_and_commands(conf_only: Path, tmp_path: Path):
    plan = plan_fold0123(conf_only, LaunchOptions(devices="cpu", overrides=["lr=0.5"]), cores=8)
    assert plan.session == "fold0123_planned" and plan.exp == "planned"
    assert [r.split for r in plan.rows] == SPLITS
    assert [(p.split, p.role) for p in plan.panes] == [(s, role) for s in SPLITS for role in ("train", "loss", "eval")]
    row = plan.rows[0]
    assert row.run_dir == str(tmp_path / "runs" / "planned_3fold0")
    assert list(row.train_argv[1:]) == ["train.py", "--conf", str(conf_only), "--split", "3fold0", "--device",
                                        "cpu", "--set", "lr=0.5", "--set", "threads=2"]
    assert list(row.eval_argv[1:]) == ["evaluate.py", "--run", row.run_dir, "--watch", "--device", "cpu"]
    train, loss, evaluate = row.panes
    assert "'3fold0 train (cpu)'" in train.command and "fold0123.launcher.monitor" in loss.command
    assert train.command.endswith(f'mark-failed {row.run_dir} --role train --status "$?"')
    assert "OMP_NUM_THREADS=2 " in evaluate.command and "--role evaluate" in evaluate.command
    assert list(plan.waiter_argv[-4:]) == [r.run_dir for r in plan.rows]
    assert session_name("a.b:c") == "fold0123_a_b_c"


def test_plan_skips_done_resumes_interrupted_and_evaluates_unevaluated(conf_only: Path, tmp_path: Path):
    runs = tmp_path / "runs"
    fake_run(runs / "planned_3fold0", 2, done=True, evaluated=True, conf=conf_only)   # finished: skipped
    fake_run(runs / "planned_3fold1", 1, conf=conf_only)                              # interrupted: resumed
    fake_run(runs / "planned_3fold2", 2, done=True, conf=conf_only)                   # not evaluated yet
    (runs / "planned_all" / "FAILED").parent.mkdir(parents=True)
    (runs / "planned_all" / "FAILED").write_text("RuntimeError: boom\n")     # failed: retried from scratch
    plan = plan_fold0123(conf_only, LaunchOptions(devices="cpu"), cores=8)
    assert plan.skipped == (("3fold0", str(runs / "planned_3fold0")),)
    rows = {r.split: r for r in plan.rows}
    assert list(rows) == ["3fold1", "3fold2", "all"]
    assert rows["3fold1"].resume and rows["3fold1"].train_argv[-1] == "--resume"
    assert not rows["all"].resume and "--resume" not in rows["all"].train_argv
    assert rows["3fold2"].train_done and "train.py" not in rows["3fold2"].panes[0].command
    assert rows["3fold2"].panes[2].command.count("evaluate.py") == 1
    assert {r.threads for r in plan.rows} == {2}  # 8 cores over the 3 rows that run
    assert read_status(runs / "planned_all").state == "failed"


def test_status_needs_done_and_the_last_epoch_evaluated(tmp_path: Path):
    run = fake_run(tmp_path / "r", epochs=2, done=True)
    assert read_status(run).state == "running" and "evaluating epoch 2" in read_status(run).detail
    (run / "eval" / "epoch2_metrics.json").write_text("{}")
    assert read_status(run).state == "done"
    assert read_status(tmp_path / "missing").state == "pending"
    # a trainer that died without a marker: the pane's `|| mark-failed` records it, once
    crashed = tmp_path / "crashed"
    assert mark_failed(crashed, "train") == crashed / "FAILED"
    assert read_status(crashed).state == "failed"
    assert mark_failed(crashed, "evaluate") is None  # the trainer's failure already tells the story


@pytest.mark.parametrize("script, said", [("raise SystemExit(3)", "exited with status 3 without"),
                                          ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
                                           "exited with status 137 (killed by SIGKILL) without")])
def test_a_pane_that_fails_without_a_marker_records_how_it_ended(tmp_path: Path, script: str, said: str):
    """The pane's own shell line, run by a shell (outside tmux its title command fails and the line goes on): the
    marker keeps the exit status once the pane is gone (an unattended ablation closes its sessions)."""
    run = tmp_path / "r"
    line = pane_command("t", [sys.executable, "-c", script],
                        on_failure=status_argv(sys.executable, "mark-failed", str(run), "--role", "evaluate"))
    subprocess.run(["sh", "-c", line], cwd=ROOT, capture_output=True, timeout=120)
    assert said in (run / "EVAL_FAILED").read_text()
    assert read_status(run).state == "failed"


def test_bad_config_key_is_one_clear_line(conf_only: Path):
    with pytest.raises(LaunchError, match="unknown key 'no_such_key'"):
        plan_fold0123(conf_only, LaunchOptions(overrides=["no_such_key=1"]))
    with pytest.raises(LaunchError, match="config file not found"):
        plan_fold0123("parameters/none_such.yml")


def test_a_retrieval_config_plans_its_muge_rows(tmp_path: Path):
    """A clip config's rows are the MUGE run splits (train, all); a fold split is one line, not four failing panes."""
    conf = tmp_path / "retrieval.yml"
    conf.write_text(f"base: {ROOT / 'parameters' / 'tiny' / 'retrieval.yml'}\ncheckpoints_dir: {tmp_path / 'runs'}\n")
    plan = plan_fold0123(conf, LaunchOptions(devices="cpu"), cores=2)
    assert [r.split for r in plan.rows] == ["train", "all"]
    assert list(plan.rows[0].train_argv[1:6]) == ["train.py", "--conf", str(conf), "--split", "train"]
    assert [r.split for r in plan_fold0123(conf, LaunchOptions(devices="cpu", splits=["all"])).rows] == ["all"]
    with pytest.raises(LaunchError, match=r"retrieval.yml: splits 3fold0: a clip run trains on train or all"):
        plan_fold0123(conf, LaunchOptions(devices="cpu", splits=["train", "3fold0"]))


# --- real tmux ------------------------------------------------------------------------------------------------

@needs_tmux
def test_refuses_a_running_session_and_replaces_an_idle_leftover(tmux_socket: str, conf_only: Path):
    server = libtmux.Server(socket_name=tmux_socket)
    busy = server.new_session(session_name="fold0123_planned", window_name="done", attach=False)
    busy.active_pane.send_keys("sleep 60", enter=True)
    running = lambda: busy.active_window.active_pane.pane_current_command == "sleep"  # noqa: E731
    wait_until(running, 10, 0.1, what="the pane to run sleep")
    with pytest.raises(LaunchError, match="already exists and is running"):
        check_free(server, "fold0123_planned")
    busy.active_pane.send_keys("C-c", enter=False)
    wait_until(lambda: not running(), 10, 0.1, what="the pane's sleep to stop")
    check_free(server, "fold0123_planned")  # idle: replaced
    assert not server.has_session("fold0123_planned")


@needs_tmux
@pytest.mark.integration
def test_fold0123_in_tmux_runs_every_row_reports_the_failed_one_and_skips_finished_runs(
        tmp_path: Path, tmux_socket: str):
    conf = tiny_experiment(tmp_path)
    dataroot = tmp_path / "data"
    hidden = tmp_path / "3fold2_train.csv.hidden"
    (dataroot / "3fold2_train.csv").rename(hidden)  # row 3fold2 must fail; the others must not care

    cli = subprocess.run([sys.executable, "launch.py", "fold0123", "--conf", str(conf), "--devices", "cpu",
                          "--socket", tmux_socket, "--wait"], cwd=ROOT, capture_output=True, text=True,
                         timeout=600, env={**os.environ, "TMUX": ""})
    assert cli.returncode != 0, cli.stdout + cli.stderr
    assert "failed runs: 3fold2" in cli.stderr and "3fold2_train.csv" in cli.stderr, cli.stderr
    runs = tmp_path / "runs"
    for split in ("3fold0", "3fold1", "all"):
        run = runs / f"tiny_{split}"
        assert (run / "DONE").is_file() and (run / "1.pth").is_file()
        assert (run / "eval" / "epoch1_metrics.json").is_file() and (run / "eval" / "epoch1_test.npz").is_file()
        assert (run / "eval" / "epoch1_oof.npz").is_file() == (split != "all")
        assert "loss" in (run / "loss.log").read_text().splitlines()[0]
    assert (runs / "tiny_3fold2" / "FAILED").is_file() and not (runs / "tiny_3fold2" / "DONE").exists()

    # the failed row's panes stayed open on their error, titled by split and role
    server = libtmux.Server(socket_name=tmux_socket)
    session = server.sessions.get(session_name="fold0123_tiny")
    panes = session.windows.get(window_name="fold0123").panes
    assert [p.pane_title for p in panes] == [f"{s} {r}" for s in SPLITS for r in ("train (cpu)", "loss", "eval")]
    grid = sorted((int(p.pane_top), int(p.pane_left), p.pane_title) for p in panes)
    assert len({top for top, _, _ in grid}) == 4  # four rows of three: one split per row, train | loss | eval
    assert [t for _, _, t in grid] == [p.pane_title for p in panes]
    shown = "\n".join(panes[6].capture_pane(start="-", join_wrapped=True))
    assert "error:" in shown and "3fold2_train.csv" in shown, shown

    # relaunch once the split exists again: finished rows are skipped, the failed one runs (and succeeds)
    hidden.rename(dataroot / "3fold2_train.csv")
    result = launch_fold0123(conf, LaunchOptions(devices="cpu", socket_name=tmux_socket, linger_s=0, verbose=False))
    states = {o.split: o.state for o in result.outcomes}
    assert states == {"3fold0": "skipped", "3fold1": "skipped", "3fold2": "done", "all": "skipped"}, \
        result.summary()
    assert result.ok and (runs / "tiny_3fold2" / "DONE").is_file()
    assert not server.has_session("fold0123_tiny")  # the waiter closed the session once every row was DONE

    # a third launch has nothing to do: no session at all
    again = launch_fold0123(conf, LaunchOptions(devices="cpu", socket_name=tmux_socket, verbose=False))
    assert again.session is None and {o.state for o in again.outcomes} == {"skipped"}


@needs_tmux
@pytest.mark.integration
def test_a_row_with_a_cpu_group_runs_torchrun_in_its_train_pane_to_done_with_its_watcher(tmp_path: Path,
                                                                                        tmux_socket: str):
    """Two rows, each over a group of 2 CPU ranks (`cpu*2`): two torchruns side by side (each on its own
    rendezvous port), each writing its run once, the watcher evaluating every epoch."""
    conf = tiny_experiment(tmp_path, name="tinygroup", epochs=2)
    result = launch_fold0123(conf, LaunchOptions(devices="cpu*2", splits=("3fold0", "all"), socket_name=tmux_socket,
                                                 linger_s=0, timeout_s=540, verbose=False))
    assert result.ok and {o.state for o in result.outcomes} == {"done"}, result.summary()
    for row in result.plan.rows:
        assert "torch.distributed.run --standalone --nproc_per_node=2 train.py" in row.panes[0].command
    for split in ("3fold0", "all"):
        run = tmp_path / "runs" / f"tinygroup_{split}"
        assert (run / "DONE").is_file() and not (run / "FAILED").exists()
        assert torch.load(rundir.resume_path(run), weights_only=True)["world_size"] == 2
        for epoch in (1, 2):
            assert (run / "eval" / f"epoch{epoch}_metrics.json").is_file()
        assert [line.split()[0] for line in (run / "loss.log").read_text().splitlines()[1:]][-1] == "2"
    assert not libtmux.Server(socket_name=tmux_socket).has_session("fold0123_tinygroup")  # closed: every row DONE


def test_the_plan_states_the_image_caches_bill_and_refuses_a_disk_that_cannot_hold_it(tmp_path, monkeypatch):
    """Issue 23: said once before any pane starts (reading only the tables), not four times half way."""
    import collections

    from fold0123.common import costs

    dataroot = make_dataroot(tmp_path / "data")
    conf = tmp_path / "plan.yml"
    conf.write_text(f"base: {TINY}\ncheckpoints_dir: {tmp_path / 'runs'}\ndataroot: {dataroot}\nexp: billed\n")
    n = len(pd.read_csv(dataroot / "train.csv")) + len(pd.read_csv(dataroot / "test.csv"))
    plan = plan_fold0123(conf, LaunchOptions(devices="cpu"), cores=2)
    assert f"image cache: {n} photos at 32x32: {costs.human(costs.cache_bytes(n, 32))} in " in describe(plan)
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(costs.shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 1000, 1000))
    with pytest.raises(LaunchError, match=rf"images_32.npy: the image cache of {n} photos at 32x32 needs 0.[0-9] MB "
                                          r"and .*cache has 0.0 MB free: free some space") as err:
        plan_fold0123(conf, LaunchOptions(devices="cpu"), cores=2)
    assert "\n" not in str(err.value)
