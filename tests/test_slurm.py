"""The Slurm path (submitit), run with submitit's local executor: one job per row, its evaluator beside it."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from fold0123.launcher.fold0123 import LaunchError, LaunchOptions, launch_fold0123, plan_fold0123
from fold0123.launcher.slurm import job_devices, job_eval_device, row_payload, run_row
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
