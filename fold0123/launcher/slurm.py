"""The same fold0123 rows on a Slurm cluster with submitit: one job per row, its evaluator beside it.

Each job runs `python -m fold0123.launcher.slurm run-row '<row as JSON>'` in the repository: the trainer and
`evaluate.py --watch` as two subprocesses of the one job (so the evaluator shares the row's GPU and node, like
the row's panes share a device), then waits for both; with `--eval-devices` the evaluator gets the job's second
GPU (`--gpus-per-job 2`) or the CPU instead. The job's payload is submitit's own `CommandFunction` holding
plain argument lists, so the compute node only needs the repository, not this process's imports.
There is no loss-monitor pane on a cluster: run `python -m fold0123.launcher.monitor RUN_DIR` where the run directory
is visible. `--executor local` runs the same jobs with submitit's LocalExecutor (what the tests use).

One row over several GPUs and nodes (`--nodes M --tasks-per-node N`, one task per GPU): the row's job has M x N
tasks, and submitit runs `run-row` in each. Every task starts the trainer with torch.distributed's variables from
submitit's `TorchDistributedEnvironment` (MASTER_ADDR: the job's first host; MASTER_PORT: one drawn from the job
id; RANK, WORLD_SIZE, LOCAL_RANK from SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID), without its CUDA_VISIBLE_DEVICES
(each task sees its node's GPUs and trains on cuda:LOCAL_RANK: `--device cuda`, `job_devices`). The evaluator
runs beside rank 0 only, on its GPU (cuda:0) or the CPU (`--eval-devices cpu`); rank 0's trainer writes the run
directory (engine.distributed). A task of another rank whose trainer fails writes FAILED only when, after a grace
period, no marker tells the story (rank 0 names the failing rank when it can).

Preemption: submitit requeues a preempted job (its SIGUSR2 handler in rank 0's task; a timed-out one is not
requeued). `run-row` and its children ignore SIGUSR2, so the trainers go on until Slurm stops the job; the
requeued job (SLURM_RESTART_COUNT >= 1) clears the failure markers the stop may have left and adds `--resume`, so
every task continues from the run's resume.pth (its last finished epoch) with the same world size.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from fold0123.common import rundir
from fold0123.common.poll import wait_until
from fold0123.launcher.layout import LaunchError, Plan, RowSpec, gpu_count
from fold0123.launcher.status import (checkpoint_epochs, clear_failures, exit_status, mark_failed, read_status,
                                      shell_status)

EVALUATOR_GRACE_S = 300.0  # after a failed trainer, how long the evaluator may take to notice FAILED
RANK_GRACE_S = 120.0  # after a failed trainer on a rank other than 0, how long rank 0 may take to write FAILED


@dataclass
class SubmittedRow:
    split: str
    run_dir: Path
    job: object  # submitit.Job


def row_payload(row: RowSpec, tasks: int = 1) -> dict:
    """What one row's job runs (plain lists and strings); `tasks` > 1: its trainer over that many Slurm tasks."""
    return {"split": row.split, "run_dir": row.run_dir, "train_done": row.train_done,
            "train": list(row.train_argv), "evaluate": list(row.eval_argv), "env": row.env,
            "eval_env": row.eval_env, "tasks": tasks}


def row_command(plan: Plan, row: RowSpec, tasks: int = 1) -> list[str]:
    """The command a row's job runs: `run-row` with the row's payload as JSON (submitit pickles it in the job)."""
    return [plan.python, "-m", "fold0123.launcher.slurm", "run-row", json.dumps(row_payload(row, tasks))]


def task_environment() -> dict[str, str]:
    """torch.distributed's variables for this task of a multi-task job (submitit's TorchDistributedEnvironment,
    Slurm's or the local executor's), without its CUDA_VISIBLE_DEVICES: each task sees its node's GPUs."""
    from submitit.helpers import TorchDistributedEnvironment

    dist_env = TorchDistributedEnvironment()
    return {"MASTER_ADDR": dist_env.master_addr, "MASTER_PORT": str(dist_env.master_port),
            "RANK": str(dist_env.rank), "WORLD_SIZE": str(dist_env.world_size),
            "LOCAL_RANK": str(dist_env.local_rank), "LOCAL_WORLD_SIZE": str(dist_env.local_world_size)}


def requeued(environ=None) -> bool:
    """Whether this job is a requeued one (Slurm counts its restarts in SLURM_RESTART_COUNT)."""
    value = (os.environ if environ is None else environ).get("SLURM_RESTART_COUNT", "0").strip()
    return value.isdigit() and int(value) > 0


def resumed_argv(argv: list[str], run_dir: Path) -> list[str]:
    """The trainer's command for a requeued job: `--resume` added when the run has checkpoints to resume from."""
    if "--resume" in argv or not (checkpoint_epochs(run_dir) or rundir.resume_path(run_dir).is_file()):
        return list(argv)
    return [*argv, "--resume"]


def run_row(payload: dict, grace_s: float = EVALUATOR_GRACE_S, rank_grace_s: float = RANK_GRACE_S) -> int:
    """Inside the job (in each of its tasks): trainer and evaluator side by side; a non-zero exit leaves a marker
    and fails the job. In a multi-task job every task runs a trainer rank and rank 0's task the evaluator."""
    previous = signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # preemption's warning: submitit's task requeues
    try:  # (the children inherit the ignored signal)
        return _run_row(payload, grace_s, rank_grace_s)
    finally:
        signal.signal(signal.SIGUSR2, previous)


def _run_row(payload: dict, grace_s: float, rank_grace_s: float) -> int:
    run_dir = Path(payload["run_dir"])
    extra = task_environment() if payload.get("tasks", 1) > 1 else {}
    rank = int(extra.get("RANK", 0))
    train_argv = list(payload["train"])
    if requeued():
        train_argv = resumed_argv(train_argv, run_dir)
        if rank == 0:
            clear_failures([run_dir])  # what the stop before the requeue left: this job goes on from resume.pth
    env = {**os.environ, **payload.get("env", {}), **extra}
    if rank != 0:
        return _other_rank(payload, train_argv, env, rank, rank_grace_s)
    eval_env = {**os.environ, **payload.get("eval_env", payload.get("env", {}))}
    evaluator = subprocess.Popen(payload["evaluate"], env=eval_env)
    train_rc = 0
    if not payload.get("train_done"):
        train_rc = subprocess.run(train_argv, env=env).returncode
    if train_rc != 0:
        mark_failed(run_dir, "train", status=shell_status(train_rc))
        try:
            evaluator.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            evaluator.terminate()
            evaluator.wait()
        print(f"{payload['split']}: train.py failed (exit {train_rc})", file=sys.stderr)
        return 1
    eval_rc = evaluator.wait()
    if eval_rc != 0:
        mark_failed(run_dir, "evaluate", status=shell_status(eval_rc))
        print(f"{payload['split']}: evaluate.py failed (exit {eval_rc})", file=sys.stderr)
        return 1
    print(f"{payload['split']}: DONE and evaluated ({run_dir})")
    return 0


def _other_rank(payload: dict, train_argv: list[str], env: dict, rank: int, grace_s: float) -> int:
    """A task of rank > 0: its trainer rank only. When it fails, rank 0 normally writes FAILED naming it; if no
    marker appears within `grace_s` (rank 0 gone, or stuck in a collective), this task writes it."""
    if payload.get("train_done"):
        return 0
    train_rc = subprocess.run(train_argv, env=env).returncode
    if train_rc == 0:
        return 0
    run_dir = Path(payload["run_dir"])
    wait_until(lambda: read_status(run_dir).finished, grace_s, 1.0, "rank 0 to write FAILED", quiet=True)
    mark_failed(run_dir, "train", f"rank {rank}: train.py exited {exit_status(shell_status(train_rc))} and rank 0 "
                                  f"wrote no marker within {grace_s:.0f} s (see this task's job log)")
    print(f"{payload['split']}: train.py rank {rank} failed (exit {train_rc})", file=sys.stderr)
    return 1


def job_parameters(kind: str, gpus_per_job: int, cpus_per_task: int, timeout_min: int, partition: str | None = None,
                   nodes: int = 1, tasks_per_node: int = 1) -> dict:
    """The submitit parameters of one row's job. One task: `gpus_per_job` GPUs (its trainer's and, with 2, its
    evaluator's). Several (`nodes` x `tasks_per_node`): one GPU per task (none when `gpus_per_job` is 0: CPU
    ranks), `cpus_per_task` CPUs each."""
    tasks = nodes * tasks_per_node
    if nodes < 1 or tasks_per_node < 1:
        raise LaunchError(f"--nodes {nodes} --tasks-per-node {tasks_per_node}: both at least 1")
    if kind == "local" and nodes > 1:
        raise LaunchError(f"--nodes {nodes}: the local executor runs on this machine only (--nodes 1)")
    gpus = (tasks_per_node if gpus_per_job > 0 else 0) if tasks > 1 else gpus_per_job
    params = {"timeout_min": timeout_min, "gpus_per_node": gpus, "cpus_per_task": cpus_per_task,
              "tasks_per_node": tasks_per_node}
    if kind == "slurm":
        params["nodes"] = nodes
        if partition:
            params["slurm_partition"] = partition
    return params


def submit_rows(plan: Plan, kind: str = "slurm", partition: str | None = None, gpus_per_job: int = 1,
                cpus_per_task: int = 4, timeout_min: int = 24 * 60, one_gpu_each: bool = True,
                nodes: int = 1, tasks_per_node: int = 1) -> list[SubmittedRow]:
    """Submit one job per row of the plan (plan the rows with `job_devices`: each job sees its own GPUs); kind:
    slurm, or local (submitit's LocalExecutor); the job logs go to `{checkpoints_dir}/submitit/{exp}`.

    `one_gpu_each` (local executor): job i sees only local GPU i % n, as its cuda:0, as a Slurm job would;
    False for a plan that names the machine's GPUs itself (explicit --devices/--eval-devices): every job then
    sees them all, so `cuda:4` means the machine's GPU 4. `nodes` x `tasks_per_node` > 1: each row's job trains
    its run over that many tasks, one per GPU (`job_parameters`).
    """
    import submitit
    from submitit.helpers import CommandFunction

    if not plan.rows:
        return []
    params = job_parameters(kind, gpus_per_job, cpus_per_task, timeout_min, partition, nodes, tasks_per_node)
    tasks = nodes * tasks_per_node
    clear_failures((plan.run_path(row.run_dir) for row in plan.rows), extend=plan.retrained())
    folder = plan.run_path(plan.rows[0].run_dir).parent / "submitit" / plan.exp
    executor = submitit.AutoExecutor(folder=str(folder), cluster=kind)
    executor.update_parameters(**params)
    local_gpus = gpu_count() if kind == "local" and params["gpus_per_node"] > 0 else 0
    submitted = []
    for i, row in enumerate(plan.rows):
        command = row_command(plan, row, tasks)
        executor.update_parameters(name=f"fold0123_{plan.exp}_{row.split}")
        if local_gpus and tasks > 1:  # the local job's tasks: the machine's first GPUs, one each
            executor.update_parameters(visible_gpus=tuple(range(min(tasks, local_gpus))))
        elif local_gpus and one_gpu_each:  # a local job sees one GPU of its own, as a Slurm job would
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


def job_devices(kind: str, gpus_per_job: int, tasks: int = 1) -> str:
    """Inside a job its GPUs are cuda:0..; a local executor without GPUs runs rows on the CPU. A multi-task job's
    trainer gets `cuda`: each rank takes cuda:LOCAL_RANK (engine.setup.rank_device)."""
    if gpus_per_job > 0 and (kind == "slurm" or gpu_count() > 0):
        return "cuda" if tasks > 1 else "cuda:0"
    return "cpu"


def job_eval_device(eval_devices: str | None, gpus_per_job: int, tasks: int = 1) -> str | None:
    """Inside a Slurm job, where `--eval-devices` has no global GPU numbers to name: None (each evaluator on its
    trainer's GPU), `cpu`, or any GPU list -> the job's second GPU, cuda:1 (the trainer has cuda:0). A multi-task
    job's evaluator runs beside rank 0: on its GPU, cuda:0 (or the CPU)."""
    on_cpu = eval_devices is not None and {d.strip() for d in eval_devices.split(",")} == {"cpu"}
    if tasks > 1:
        if gpus_per_job == 0:  # CPU ranks: the evaluator on the CPU too
            return None
        if eval_devices is not None and not on_cpu:
            raise LaunchError(f"--eval-devices {eval_devices}: a job over several tasks evaluates beside rank 0, on "
                              f"its GPU (leave --eval-devices out) or the CPU (--eval-devices cpu)")
        return "cpu" if on_cpu else "cuda:0"
    if eval_devices is None:
        return None
    if on_cpu:
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
