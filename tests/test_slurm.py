"""The Slurm path (submitit), run with submitit's local executor: one job per row, its evaluator beside it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fold0123.launcher import launch_fold0123, plan_fold0123
from fold0123.launcher.slurm import job_devices, row_payload
from tests.test_launcher import tiny_experiment

ROOT = Path(__file__).resolve().parents[1]


def test_jobs_see_their_own_gpu_and_carry_plain_argument_lists(tmp_path: Path):
    conf = tmp_path / "plan.yml"
    conf.write_text(f"base: {ROOT / 'parameters' / 'tiny' / 'target.yml'}\ncheckpoints_dir: {tmp_path / 'runs'}\n")
    assert job_devices("slurm", 1) == "cuda:0" and job_devices("slurm", 0) == "cpu"
    plan = plan_fold0123(conf, devices=job_devices("slurm", 1), threads=6)
    payload = row_payload(plan.rows[3])
    assert payload["split"] == "all" and payload["train"][1:] == [
        "train.py", "--conf", str(conf), "--split", "all", "--device", "cuda:0"]
    assert payload["evaluate"][1:] == ["evaluate.py", "--run", payload["run_dir"], "--watch", "--device", "cuda:0"]
    cpu = plan_fold0123(conf, devices="cpu", threads=6)  # a CPU job uses its cpus_per_task
    assert row_payload(cpu.rows[0])["env"] == {"OMP_NUM_THREADS": "6"}


@pytest.mark.integration
def test_local_executor_runs_rows_to_done_and_reports_the_failed_one(tmp_path: Path):
    conf = tiny_experiment(tmp_path, name="tinyslurm")
    # 3fold9 has no split files: its job must fail, the others must not care
    result = launch_fold0123(conf, executor="local", splits=["3fold1", "all", "3fold9"], gpus_per_job=0,
                             wait=True, timeout_s=480, verbose=False)
    states = {o.split: o.state for o in result.outcomes}
    assert states == {"3fold1": "done", "all": "done", "3fold9": "failed"}, result.summary()
    assert len(result.jobs) == 3 and result.session is None
    assert "3fold9_train.csv" in result.by_split["3fold9"].detail
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
