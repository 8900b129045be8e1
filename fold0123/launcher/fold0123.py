"""`launch_fold0123`: run one experiment's four rows (3fold0 3fold1 3fold2 all) and say how each ended.

The recipe (`make demo`), `launch.py` and the tests all call this. It plans the rows (launcher.layout: skip
what is DONE and evaluated, resume what has checkpoints), starts them in tmux (libtmux), on Slurm or with
submitit's local executor, and with `wait=True` blocks until every row is finished, reading the run
directories' markers (launcher.status), since neither tmux nor a detached pane can report an exit status.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from fold0123.launcher.layout import (EXECUTORS, LaunchError, LaunchOptions, Plan, describe, devices_on_cpu,
                                      is_group_spec, plan_fold0123)
from fold0123.launcher.status import wait_for

@dataclass(frozen=True)
class RunOutcome:
    """state: done | failed | skipped (already DONE and evaluated) | running (not waited for, or timed out)."""
    split: str
    run_dir: Path
    state: str
    elapsed_s: float = 0.0
    detail: str = ""


@dataclass
class LaunchResult:
    exp: str
    executor: str
    session: str | None              # the tmux session (None when nothing was started or not tmux)
    outcomes: list[RunOutcome] = field(default_factory=list)
    plan: Plan | None = None
    jobs: list[str] = field(default_factory=list)  # submitit job ids

    @property
    def failed(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if o.state == "failed"]

    @property
    def ok(self) -> bool:
        """Every row finished well (done, or skipped because it already was)."""
        return all(o.state in ("done", "skipped") for o in self.outcomes)

    def summary(self) -> str:
        lines = [f"fold0123 {self.exp} ({self.executor}" + (f", session {self.session}" if self.session else "")
                 + ")"]
        for o in self.outcomes:
            minutes = f"{o.elapsed_s / 60:5.1f} min" if o.state in ("done", "failed") else " " * 9
            lines.append(f"  {o.split:8s} {o.state:8s} {minutes}  {o.run_dir}  {o.detail}".rstrip())
        return "\n".join(lines)


def launch_fold0123(conf: str | Path, options: LaunchOptions = LaunchOptions()) -> LaunchResult:
    """Launch (and with `options.wait`, finish) the fold0123 rows of the experiment `conf` (see LaunchOptions).

    Raises LaunchError (one line) when the launch cannot start, e.g. the session already runs.
    """
    o = options
    if o.executor not in EXECUTORS:
        raise LaunchError(f"executor {o.executor!r}: expected one of {', '.join(EXECUTORS)}")
    check_spread(o)
    tasks = o.nodes * o.tasks_per_node
    one_gpu_each = o.devices is None and o.eval_devices is None  # local jobs: see launcher.slurm.submit_rows
    if o.executor == "slurm" or o.executor == "local" and (one_gpu_each or tasks > 1):
        # a job's GPUs are its own: cuda:0 (trainer) and on Slurm cuda:1 (a separate evaluator); a local job's
        # evaluator stays beside its trainer (job_eval_device of no --eval-devices); a job over several tasks
        # trains each rank on cuda:LOCAL_RANK and evaluates beside rank 0
        from fold0123.launcher.slurm import job_devices, job_eval_device
        asked_cpu = o.executor == "local" and o.devices is not None and devices_on_cpu(o.devices)  # CPU tasks
        devices = "cpu" if asked_cpu else job_devices(o.executor, o.gpus_per_job, tasks)
        o = replace(o, devices=devices, eval_devices=job_eval_device(
            o.eval_devices, o.gpus_per_job if devices != "cpu" else 0, tasks))
    plan = plan_fold0123(conf, o)
    if o.verbose:
        print(describe(plan), flush=True)
    skipped = [RunOutcome(s, plan.run_path(d), "skipped", 0.0, "already DONE and evaluated")
               for s, d in plan.skipped]
    result = LaunchResult(plan.exp, o.executor, None, plan=plan)
    if not plan.rows:
        result.outcomes = _in_split_order(plan, skipped)
        return result
    if o.executor == "tmux":
        outcomes = _launch_tmux(plan, result, o)
        if o.wait:
            from fold0123.launcher.tmux import tmux_server, wait_closed, wait_idle
            if o.close and all(x.state == "done" for x in outcomes):
                wait_closed(tmux_server(o.socket_name), plan.session, o.linger_s + 10)
            elif all(x.state in ("done", "failed") for x in outcomes):
                wait_idle(tmux_server(o.socket_name), plan.session, o.linger_s + 10)
    else:
        outcomes = _launch_submitit(plan, result, o, one_gpu_each)
    result.outcomes = _in_split_order(plan, skipped + outcomes)
    return result


def check_spread(o: LaunchOptions) -> None:
    """One row over several devices: GPU groups (`--devices 0,1/2,3`, torchrun) in tmux or on the local executor;
    `--nodes`/`--tasks-per-node` (one Slurm task per GPU) on Slurm or the local executor. Not both, nor the wrong
    one for the executor: one line saying which to use."""
    tasks = o.nodes * o.tasks_per_node
    if is_group_spec(o.devices) and o.executor == "slurm":
        raise LaunchError(f"--devices {o.devices}: GPU groups are for tmux (and --executor local); on Slurm a row "
                          f"spans GPUs with --tasks-per-node N (one task per GPU) and nodes with --nodes M")
    if tasks > 1 and o.executor == "tmux":
        raise LaunchError(f"--nodes {o.nodes} --tasks-per-node {o.tasks_per_node}: for --executor slurm or local; "
                          f"in tmux give each row a GPU group instead: --devices 0,1/2,3")
    if tasks > 1 and is_group_spec(o.devices):
        raise LaunchError(f"--devices {o.devices} with --tasks-per-node {o.tasks_per_node}: one or the other (a job's "
                          f"tasks are its ranks)")


def _in_split_order(plan: Plan, outcomes: list[RunOutcome]) -> list[RunOutcome]:
    order = {split: i for i, (split, _) in enumerate(plan.all_run_dirs)}
    return sorted(outcomes, key=lambda o: order[o.split])


def _launch_tmux(plan: Plan, result: LaunchResult, o: LaunchOptions) -> list[RunOutcome]:
    import shutil

    from fold0123.launcher import tmux

    if shutil.which("tmux") is None:
        raise LaunchError("tmux is not installed: install it (apt-get install tmux) or use --executor local")
    server = tmux.tmux_server(o.socket_name)
    tmux.start_session(plan, server)
    result.session = plan.session
    if o.verbose:
        socket = f" -L {o.socket_name}" if o.socket_name else ""
        print(f"started tmux session {plan.session}: tmux{socket} attach -t {plan.session}", flush=True)
    if o.attach:
        tmux.attach(server, plan.session)
    rows = {plan.run_path(row.run_dir): row.split for row in plan.rows}
    if not o.wait:
        return [RunOutcome(split, d, "running", 0.0, f"in tmux session {plan.session}") for d, split in rows.items()]

    def report(status, elapsed):
        if o.verbose:
            print(f"  {rows[status.run_dir]}: {status.state} after {elapsed / 60:.1f} min {status.detail}",
                  flush=True)

    def progress(statuses, elapsed):
        if o.verbose and statuses:
            print(f"  [{elapsed / 60:4.1f} min] " + " | ".join(f"{rows[s.run_dir]} {s.detail}" for s in statuses),
                  flush=True)

    finished = wait_for(rows, poll_s=o.poll_s, timeout_s=o.timeout_s, on_finish=report, on_change=progress,
                        keep_going=lambda: tmux.session_alive(server, plan.session))
    ended = not tmux.session_alive(server, plan.session)
    outcomes = []
    for run_dir, (status, elapsed) in finished.items():
        state, detail = status.state, status.detail
        if not status.finished:
            state = "failed" if ended else "running"
            detail = ("tmux session ended before the run finished" if ended else
                      f"still {status.detail} after {o.timeout_s:.0f} s")
        outcomes.append(RunOutcome(rows[run_dir], run_dir, state, elapsed, detail))
    return outcomes


def _launch_submitit(plan: Plan, result: LaunchResult, o: LaunchOptions, one_gpu_each: bool) -> list[RunOutcome]:
    from fold0123.launcher.slurm import job_devices, submit_rows, wait_rows

    gpus = o.gpus_per_job if job_devices(o.executor, o.gpus_per_job) != "cpu" else 0
    submitted = submit_rows(plan, o.executor, partition=o.partition, gpus_per_job=gpus,
                            cpus_per_task=o.cpus_per_task, timeout_min=o.timeout_min, one_gpu_each=one_gpu_each,
                            nodes=o.nodes, tasks_per_node=o.tasks_per_node)
    result.jobs = [str(row.job.job_id) for row in submitted]
    if not o.wait:
        return [RunOutcome(r.split, r.run_dir, "running", 0.0, f"job {r.job.job_id}") for r in submitted]
    ended = wait_rows(submitted, poll_s=o.poll_s, timeout_s=o.timeout_s)
    return [RunOutcome(r.split, r.run_dir, *ended[r.split]) for r in submitted]
