"""The same fold0123 rows on a Slurm cluster with submitit: one job per row, its evaluator beside it.

Each job runs `python -m fold0123.launcher.slurm run-row '<row as JSON>'` in the repository: the trainer and
`evaluate.py --watch` as two subprocesses of the one job (so the evaluator shares the row's GPU and node, like
the row's panes share a device), then waits for both; with `--eval-devices` the evaluator gets the job's second
GPU (`--gpus-per-job 2`) or the CPU instead. The job's payload is submitit's own `CommandFunction` holding
plain argument lists, so the compute node only needs the repository, not this process's imports.
There is no loss-monitor pane on a cluster: run `python -m fold0123.launcher.monitor RUN_DIR` where the run directory
is visible. `--executor local` runs the same jobs with submitit's LocalExecutor (what the tests use).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from fold0123.common.poll import wait_until
from fold0123.launcher.layout import LaunchError, Plan, RowSpec, gpu_count
from fold0123.launcher.status import clear_failures, mark_failed, read_status

EVALUATOR_GRACE_S = 300.0  # after a failed trainer, how long the evaluator may take to notice FAILED


@dataclass
class SubmittedRow:
    split: str
    run_dir: Path
    job: object  # submitit.Job


def row_payload(row: RowSpec) -> dict:
    return {"split": row.split, "run_dir": row.run_dir, "train_done": row.train_done,
            "train": list(row.train_argv), "evaluate": list(row.eval_argv), "env": row.env,
            "eval_env": row.eval_env}


def run_row(payload: dict, grace_s: float = EVALUATOR_GRACE_S) -> int:
    """Inside the job: trainer and evaluator side by side; a non-zero exit leaves a marker and fails the job."""
    env = {**os.environ, **payload.get("env", {})}
    eval_env = {**os.environ, **payload.get("eval_env", payload.get("env", {}))}
    run_dir = Path(payload["run_dir"])
    evaluator = subprocess.Popen(payload["evaluate"], env=eval_env)
    train_rc = 0
    if not payload.get("train_done"):
        train_rc = subprocess.run(payload["train"], env=env).returncode
    if train_rc != 0:
        mark_failed(run_dir, "train", f"train.py exited with status {train_rc}")
        try:
            evaluator.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            evaluator.terminate()
            evaluator.wait()
        print(f"{payload['split']}: train.py failed (exit {train_rc})", file=sys.stderr)
        return 1
    eval_rc = evaluator.wait()
    if eval_rc != 0:
        mark_failed(run_dir, "evaluate", f"evaluate.py exited with status {eval_rc}")
        print(f"{payload['split']}: evaluate.py failed (exit {eval_rc})", file=sys.stderr)
        return 1
    print(f"{payload['split']}: DONE and evaluated ({run_dir})")
    return 0


def submit_rows(plan: Plan, kind: str = "slurm", partition: str | None = None, gpus_per_job: int = 1,
                cpus_per_task: int = 4, timeout_min: int = 24 * 60, one_gpu_each: bool = True) -> list[SubmittedRow]:
    """Submit one job per row of the plan (plan the rows with `job_devices`: each job sees its own GPUs); kind:
    slurm, or local (submitit's LocalExecutor); the job logs go to `{checkpoints_dir}/submitit/{exp}`.

    `one_gpu_each` (local executor): job i sees only local GPU i % n, as its cuda:0, as a Slurm job would;
    False for a plan that names the machine's GPUs itself (explicit --devices/--eval-devices): every job then
    sees them all, so `cuda:4` means the machine's GPU 4.
    """
    import submitit
    from submitit.helpers import CommandFunction

    if not plan.rows:
        return []
    clear_failures(plan.run_path(row.run_dir) for row in plan.rows)
    folder = plan.run_path(plan.rows[0].run_dir).parent / "submitit" / plan.exp
    executor = submitit.AutoExecutor(folder=str(folder), cluster=kind)
    partition = {"slurm_partition": partition} if kind == "slurm" and partition else {}
    executor.update_parameters(timeout_min=timeout_min, gpus_per_node=gpus_per_job, cpus_per_task=cpus_per_task,
                               **partition)
    local_gpus = gpu_count() if kind == "local" and gpus_per_job > 0 else 0
    submitted = []
    for i, row in enumerate(plan.rows):
        command = [plan.python, "-m", "fold0123.launcher.slurm", "run-row", json.dumps(row_payload(row))]
        executor.update_parameters(name=f"fold0123_{plan.exp}_{row.split}")
        if local_gpus and one_gpu_each:  # a local job sees one GPU of its own, as a Slurm job would
            executor.update_parameters(gpus_per_node=1, visible_gpus=(i % local_gpus,))
        elif local_gpus:  # submitit would show it only the first gpus_per_node: show it every GPU
            executor.update_parameters(gpus_per_node=local_gpus)
        job = executor.submit(CommandFunction(command, cwd=plan.root, verbose=True))  # output in the job log
        submitted.append(SubmittedRow(row.split, plan.run_path(row.run_dir), job))
    return submitted


def wait_rows(submitted: list[SubmittedRow], poll_s: float = 1.0,
              timeout_s: float | None = None) -> dict[str, tuple[str, float, str]]:
    """{split: (done|failed|running, seconds, detail)} once every job ended (or the timeout passed)."""
    start = time.monotonic()
    out: dict[str, tuple[str, float, str]] = {}

    def all_ended() -> bool:  # records each job as it ends
        for row in submitted:
            if row.split in out or not row.job.done():
                continue
            status = read_status(row.run_dir)
            error = row.job.exception()
            if status.state == "done" and error is None:
                out[row.split] = ("done", time.monotonic() - start, status.detail)
            else:
                lines = str(error or "").strip().splitlines()
                detail = status.detail if status.state == "failed" else \
                    f"job {row.job.job_id} ended: {lines[-1] if lines else status.detail}"
                out[row.split] = ("failed", time.monotonic() - start, detail)
        return len(out) == len(submitted)

    wait_until(all_ended, timeout_s, poll_s, what=f"{len(submitted)} jobs to end", quiet=True)
    for row in submitted:  # still running when the timeout passed
        out.setdefault(row.split, ("running", time.monotonic() - start, f"job {row.job.job_id} still running"))
    return out


def job_devices(kind: str, gpus_per_job: int) -> str:
    """Inside a job its GPUs are cuda:0..; a local executor without GPUs runs rows on the CPU."""
    if gpus_per_job > 0 and (kind == "slurm" or gpu_count() > 0):
        return "cuda:0"
    return "cpu"


def job_eval_device(eval_devices: str | None, gpus_per_job: int) -> str | None:
    """Inside a Slurm job, where `--eval-devices` has no global GPU numbers to name: None (each evaluator on its
    trainer's GPU), `cpu`, or any GPU list -> the job's second GPU, cuda:1 (the trainer has cuda:0)."""
    if eval_devices is None:
        return None
    if {d.strip() for d in eval_devices.split(",")} == {"cpu"}:
        return "cpu"
    if gpus_per_job < 2:
        raise LaunchError(f"--eval-devices {eval_devices}: on Slurm each evaluator gets its job's second GPU; "
                          "ask for --gpus-per-job 2 (or use --eval-devices cpu)")
    return "cuda:1"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fold0123.launcher.slurm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    row = sub.add_parser("run-row", help="inside a job: run one row's trainer and evaluator")
    row.add_argument("payload", help="the row as JSON (launcher.slurm.row_payload)")
    args = parser.parse_args(argv)
    return run_row(json.loads(args.payload))


if __name__ == "__main__":
    sys.exit(main())
