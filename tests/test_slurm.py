"""The Slurm path (submitit), run with submitit's local executor: one job per row, its evaluator beside it; a row
over several tasks (nodes x tasks per node): its sbatch script through a fake `sbatch`, each task's variables
from a simulated Slurm environment, and 2 CPU tasks on the local executor for real."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from fold0123.launcher import slurm
from fold0123.launcher.fold0123 import LaunchError, LaunchOptions, launch_fold0123, plan_fold0123
from fold0123.launcher.slurm import (job_devices, job_eval_device, job_parameters, resumed_argv, row_command,
                                     row_payload, run_row, task_environment)
from tests.conftest import ROOT
from tests.test_launcher import tiny_experiment


def test_jobs_see_their_own_gpu_and_carry_plain_argument_lists(tmp_path: Path):
    conf = tmp_path / "plan.yml"
    conf.write_text(f"base: {ROOT / 'parameters' / 'tiny' / 'target.yml'}\ncheckpoints_dir: {tmp_path / 'runs'}\n")
    assert job_devices("slurm", 1) == "cuda:0" and job_devices("slurm", 0) == "cpu"
    plan = plan_fold0123(conf, LaunchOptions(devices=job_devices("slurm", 1), executor="slurm", cpus_per_task=6))
    payload = row_payload(plan.rows[3])
    assert payload["split"] == "all" and payload["train"][1:] == [
        "train.py", "--conf", str(conf), "--split", "all", "--device", "cuda:0"]
    assert payload["evaluate"][1:] == ["evaluate.py", "--run", payload["run_dir"], "--watch", "--device", "cuda:0"]
    cpu = plan_fold0123(conf, LaunchOptions(devices="cpu", executor="slurm", cpus_per_task=6))  # a CPU job: its CPUs
    assert row_payload(cpu.rows[0])["env"] == row_payload(cpu.rows[0])["eval_env"] == {"OMP_NUM_THREADS": "6"}


def test_eval_devices_in_a_job_are_its_second_gpu_or_the_cpu(tmp_path: Path):
    """A job has no global GPU numbers: `--eval-devices 4,5,6,7` means each job's own second GPU."""
    conf = tmp_path / "plan.yml"
    conf.write_text(f"base: {ROOT / 'parameters' / 'tiny' / 'target.yml'}\ncheckpoints_dir: {tmp_path / 'runs'}\n")
    assert job_eval_device(None, 1) is None and job_eval_device("cpu", 1) == "cpu"
    assert job_eval_device("4,5,6,7", 2) == "cuda:1"
    with pytest.raises(LaunchError, match="--gpus-per-job 2"):
        job_eval_device("4,5,6,7", 1)
    slurm = LaunchOptions(devices="cuda:0", executor="slurm", cpus_per_task=6)
    plan = plan_fold0123(conf, replace(slurm, eval_devices=job_eval_device("4,5,6,7", 2)))
    payload = row_payload(plan.rows[0])
    assert payload["train"][-2:] == ["--device", "cuda:0"] and payload["evaluate"][-2:] == ["--device", "cuda:1"]
    on_cpu = row_payload(plan_fold0123(conf, replace(slurm, eval_devices="cpu")).rows[0])
    assert on_cpu["env"] == {} and on_cpu["eval_env"] == {"OMP_NUM_THREADS": "6"}
    assert on_cpu["evaluate"][-2:] == ["--device", "cpu"]


def test_run_row_gives_trainer_and_evaluator_their_own_environment(tmp_path: Path):
    def writes_threads(name: str) -> list[str]:
        code = (f"import os, pathlib; pathlib.Path({str(tmp_path / name)!r})"
                ".write_text(os.environ.get('OMP_NUM_THREADS', '-'))")
        return [sys.executable, "-c", code]

    payload = {"split": "3fold0", "run_dir": str(tmp_path / "run"), "train": writes_threads("train"),
               "evaluate": writes_threads("evaluate"), "env": {}, "eval_env": {"OMP_NUM_THREADS": "3"}}
    assert run_row(payload) == 0
    assert (tmp_path / "evaluate").read_text() == "3"
    assert (tmp_path / "train").read_text() == os.environ.get("OMP_NUM_THREADS", "-")


def test_a_trainer_killed_by_a_signal_leaves_a_marker_naming_it(tmp_path: Path):
    """Python reports a child killed by signal N as returncode -N: the marker says what a shell would (137)."""
    run = tmp_path / "run"
    killed = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]
    payload = {"split": "3fold0", "run_dir": str(run), "train": killed, "env": {}, "eval_env": {},
               "evaluate": [sys.executable, "-c", "pass"]}
    assert run_row(payload, grace_s=5) == 1
    assert (run / "FAILED").read_text().startswith("train.py exited with status 137 (killed by SIGKILL)")
    (run / "FAILED").unlink()
    assert run_row({**payload, "train_done": True, "evaluate": [sys.executable, "-c", "raise SystemExit(3)"]}) == 1
    assert (run / "EVAL_FAILED").read_text().startswith("evaluate.py exited with status 3 without")


@pytest.mark.integration
def test_local_executor_runs_rows_to_done_and_reports_the_failed_one(tmp_path: Path):
    conf = tiny_experiment(tmp_path, name="tinyslurm")
    (tmp_path / "data" / "3fold2_train.csv").unlink()  # row 3fold2 has no split file: its job must fail, the others
    result = launch_fold0123(conf, LaunchOptions(executor="local", splits=("3fold1", "all", "3fold2"), gpus_per_job=0,
                                                 wait=True, timeout_s=480, verbose=False))  # must not care
    states = {o.split: o.state for o in result.outcomes}
    assert states == {"3fold1": "done", "all": "done", "3fold2": "failed"}, result.summary()
    assert len(result.jobs) == 3 and result.session is None
    assert "3fold2_train.csv" in next(o for o in result.outcomes if o.split == "3fold2").detail
    for split in ("3fold1", "all"):
        run = tmp_path / "runs" / f"tinyslurm_{split}"
        assert (run / "DONE").is_file() and (run / "1.pth").is_file()
        assert (run / "eval" / "epoch1_metrics.json").is_file() and (run / "eval" / "epoch1_test.npz").is_file()
    logs = list((tmp_path / "runs" / "submitit" / "tinyslurm").glob("*_log.out"))
    assert len(logs) == 3 and any("DONE and evaluated" in p.read_text() for p in logs)


def test_cli_rejects_an_unknown_executor():
    out = subprocess.run([sys.executable, "launch.py", "fold0123", "--conf", "x.yml", "--executor", "pbs"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "invalid choice: 'pbs'" in out.stderr


# --- one row over several tasks ------------------------------------------------------------------------------

def fake_slurm(folder: Path, monkeypatch) -> Path:
    """`srun` and `sbatch` on PATH: sbatch keeps the script it is given and answers with job 4242."""
    folder.mkdir()
    (folder / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {folder}/submitted.sh\necho "Submitted batch job 4242"\n')
    (folder / "srun").write_text("#!/bin/sh\nexit 0\n")
    for name in ("sbatch", "srun"):
        (folder / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return folder / "submitted.sh"


def test_a_row_over_2_nodes_x_2_tasks_is_one_job_of_4_tasks_one_gpu_each(tmp_path: Path, monkeypatch):
    script = fake_slurm(tmp_path / "bin", monkeypatch)
    submitted = []
    monkeypatch.setattr(slurm, "row_command", lambda *a, **k: submitted.append(row_command(*a, **k)) or submitted[-1])
    conf = tmp_path / "plan.yml"
    conf.write_text(f"base: {ROOT / 'parameters' / 'tiny' / 'target.yml'}\ncheckpoints_dir: {tmp_path / 'runs'}\n")
    result = launch_fold0123(conf, LaunchOptions(executor="slurm", nodes=2, tasks_per_node=2, partition="gpu",
                                                 cpus_per_task=6, splits=("all",), wait=False, verbose=False))
    assert result.jobs == ["4242"] and [o.state for o in result.outcomes] == ["running"]
    sbatch = script.read_text()
    for line in ("--nodes=2", "--ntasks-per-node=2", "--gpus-per-node=2", "--cpus-per-task=6", "--partition=gpu",
                 "--signal=USR2@90", "--job-name=fold0123_plan_all"):
        assert f"#SBATCH {line}\n" in sbatch, sbatch
    assert "\nsrun --unbuffered" in sbatch  # srun starts the 4 tasks: each runs the row (no torchrun)
    assert (tmp_path / "runs" / "submitit" / "plan" / "4242_submitted.pkl").is_file()
    [command] = submitted  # what the job runs, as submit_rows built it (never unpickled back)
    assert command[1:4] == ["-m", "fold0123.launcher.slurm", "run-row"]
    payload = json.loads(command[4])
    assert payload["tasks"] == 4 and payload["train"][1] == "train.py"
    assert payload["train"][-2:] == ["--device", "cuda"]  # each rank on cuda:LOCAL_RANK of its node's GPUs
    assert payload["evaluate"][-2:] == ["--device", "cuda:0"]  # beside rank 0, on its GPU
    assert payload["env"] == payload["eval_env"] == {}
    # the parameters alone: one task keeps today's job; a CPU job's ranks get no GPUs
    assert job_parameters("slurm", 1, 4, 60) == {"timeout_min": 60, "gpus_per_node": 1, "cpus_per_task": 4,
                                                 "tasks_per_node": 1, "nodes": 1}
    assert job_parameters("slurm", 0, 4, 60, None, 2, 2)["gpus_per_node"] == 0
    assert job_devices("slurm", 1, tasks=4) == "cuda" and job_eval_device("cpu", 1, tasks=4) == "cpu"
    with pytest.raises(LaunchError, match="evaluates beside rank 0"):
        job_eval_device("4,5,6,7", 2, tasks=4)
    with pytest.raises(LaunchError, match="the local executor runs on this machine only"):
        job_parameters("local", 0, 4, 60, None, 2, 1)


SLURM_TASK = {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "4242", "SLURM_NTASKS": "4", "SLURM_JOB_NUM_NODES": "2",
              "SLURM_NODEID": "1", "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_PROCID": "3", "SLURM_LOCALID": "1"}


def test_each_task_trains_one_rank_with_torch_distributed_variables_and_rank_0_alone_evaluates(tmp_path: Path,
                                                                                                monkeypatch):
    for key, value in SLURM_TASK.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    env = task_environment()  # submitit's TorchDistributedEnvironment: the first host, a port from the job id
    assert {k: env[k] for k in ("MASTER_ADDR", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")} == {
        "MASTER_ADDR": "gpu07", "RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    assert 20000 <= int(env["MASTER_PORT"]) <= 60000 and task_environment()["MASTER_PORT"] == env["MASTER_PORT"]
    assert "CUDA_VISIBLE_DEVICES" not in env  # a task sees its node's GPUs: rank_device takes cuda:LOCAL_RANK

    def writes_env(name: str, code: int = 0) -> list[str]:
        keys = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")
        return [sys.executable, "-c", f"import os, pathlib, sys; pathlib.Path({str(tmp_path / name)!r}).write_text("
                                      f"' '.join(os.environ.get(k, '-') for k in {keys!r})); sys.exit({code})"]

    run = tmp_path / "run"
    payload = {"split": "all", "run_dir": str(run), "train": writes_env("train"), "evaluate": writes_env("evaluate"),
               "env": {}, "eval_env": {}, "tasks": 4}
    assert run_row(payload) == 0
    assert (tmp_path / "train").read_text() == "3 4 1 gpu07" and not (tmp_path / "evaluate").exists()
    # rank 3's trainer fails and rank 0 writes nothing: after its grace this task writes FAILED, naming the rank
    assert run_row({**payload, "train": writes_env("train", 1)}, rank_grace_s=0.2) == 1
    assert (run / "FAILED").read_text().startswith("rank 3: train.py exited with status 1")
    # rank 0 runs the evaluator beside its trainer
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_NODEID", "0")
    monkeypatch.setenv("SLURM_LOCALID", "0")
    (run / "FAILED").unlink()
    assert run_row(payload) == 0
    assert (tmp_path / "train").read_text() == "0 4 0 gpu07" and (tmp_path / "evaluate").is_file()


def test_a_requeued_job_clears_the_failure_and_resumes(tmp_path: Path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    argv = ["python", "train.py", "--split", "all"]
    assert resumed_argv(argv, run) == argv  # nothing to resume from: a fresh start
    (run / "1.pth").write_bytes(b"x")
    assert resumed_argv(argv, run) == [*argv, "--resume"] and resumed_argv([*argv, "--resume"], run)[-1] == "--resume"
    (run / "FAILED").write_text("RankTerminated: terminated (SIGTERM)\n")  # what the stop before the requeue left
    seen = tmp_path / "argv"
    payload = {"split": "all", "run_dir": str(run), "env": {}, "eval_env": {},
               "train": [sys.executable, "-c", f"import sys, pathlib; pathlib.Path({str(seen)!r})"
                                               f".write_text(' '.join(sys.argv[1:]))", "--split", "all"],
               "evaluate": [sys.executable, "-c", "pass"]}
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert run_row(payload) == 0
    assert seen.read_text() == "--split all --resume" and not (run / "FAILED").exists()


@pytest.mark.integration
def test_local_executor_trains_a_row_over_2_cpu_tasks_to_done(tmp_path: Path):
    """submitit's local executor with tasks_per_node=2: two tasks, each a gloo rank, one run, evaluated."""
    conf = tiny_experiment(tmp_path, name="tinytasks")
    result = launch_fold0123(conf, LaunchOptions(executor="local", tasks_per_node=2, gpus_per_job=0, splits=("all",),
                                                 wait=True, timeout_s=480, verbose=False))
    assert result.ok and [o.state for o in result.outcomes] == ["done"], result.summary()
    run = tmp_path / "runs" / "tinytasks_all"
    assert torch.load(run / "resume.pth", weights_only=True)["world_size"] == 2
    assert (run / "DONE").is_file() and (run / "eval" / "epoch1_metrics.json").is_file()
    logs = sorted((tmp_path / "runs" / "submitit" / "tinytasks").glob("*_log.out"))
    assert len(logs) == 2 and "DONE and evaluated" in logs[0].read_text()  # task 0's log: its evaluator's line
