"""tune.py's driver: prepare the study, run one worker per device (or GPU group), then train the winner again
with other seeds and write the report.

A single worker runs in this process; several run as `tune.py --worker DEVICE` processes side by side, each
with its share of the CPU cores when its device is the CPU. More workers may join from other machines that see
the same storage (`storage:` a database URL; an SQLite file only on one machine's disk).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fold0123.common.io import cpu_cores
from fold0123.common.schema import TuneConfig
from fold0123.launcher.recipe import stage
from fold0123.tuning.report import report_path, write_report
from fold0123.tuning.study import TuneError, existing, prepare_study, rerun_winner, work

REPO = Path(__file__).resolve().parents[2]


def worker_devices(cfg: TuneConfig, recipe_devices: str, asked: str | None = None) -> list[str]:
    """One entry per worker, as launch.py's --devices takes it for one row: `--devices 0/1/2/3` (or `0,1,2,3`):
    four workers, one GPU each; `0,1/2,3`: two workers over two GPUs each (their rows run torchrun, `0,1/`);
    `cpu/cpu`: two CPU workers. Default: the study's `devices`, else one worker on the recipe's first device."""
    spec = asked or cfg.devices
    if spec is None:
        return [recipe_devices.split(",")[0].split("/")[0]]
    groups = [g.strip() for g in spec.split("/")] if "/" in spec else [d.strip() for d in spec.split(",")]
    if not all(groups):
        raise TuneError(f"devices {spec!r}: expected devices or groups such as cpu, 0/1, 0,1/2,3")
    return [f"{g}/" if "," in g else g for g in groups]


def worker_cores(devices: list[str], cores: int | None = None) -> int | None:
    """The cores each CPU worker's rows may use: the machine's split among the CPU workers (None: no CPU worker)."""
    on_cpu = sum(d.startswith("cpu") for d in devices)
    return max(1, (cores or cpu_cores()) // on_cpu) if on_cpu else None


def tune(cfg: TuneConfig, conf_args: list[str], devices: str | None = None, redo_stale: bool = False,
         socket_name: str | None = None) -> dict:
    """The whole study: prepare, the workers, the winner's re-runs, the report; returns tune.json's content."""
    study = prepare_study(cfg, redo_stale)
    groups = worker_devices(cfg, study.recipe.devices, devices)
    cores = worker_cores(groups)
    if len(groups) == 1:
        work(study, groups[0], 0, cores, socket_name)
    else:
        stage(f"{len(groups)} workers: {', '.join(groups)}")
        run_workers(conf_args, groups, cores, socket_name)
    write_report(study)  # the trials' report stands even if a re-run of the winner fails
    winner = rerun_winner(study, socket_name)
    facts = write_report(study, winner)
    print(report_path(study).read_text(), flush=True)
    return facts


def run_workers(conf_args: list[str], groups: list[str], cores: int | None, socket_name: str | None) -> None:
    """`tune.py --worker` per group, side by side; TuneError when one of them failed."""
    procs = []
    for i, group in enumerate(groups):
        argv = [sys.executable, str(REPO / "tune.py"), *conf_args, "--worker", group, "--worker-index", str(i)]
        if cores and group.startswith("cpu"):
            argv += ["--cores", str(cores)]
        if socket_name:
            argv += ["--socket", socket_name]
        procs.append(subprocess.Popen(argv, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"}))
    failed = [g for g, p in zip(groups, procs) if p.wait() != 0]
    if failed:
        raise TuneError(f"the workers on {', '.join(failed)} failed (their output is above)")


def join(cfg: TuneConfig, device: str, index: int = 0, cores: int | None = None,
         socket_name: str | None = None) -> int:
    """One more worker on a prepared study (tune.py --worker): the trials it ran."""
    return work(existing(cfg), device, index, cores, socket_name)
