"""Latency from a checkpoint's os.replace to the start of its evaluation under engine.watch (evaluate.py
--watch), median and p95 over 50 checkpoints. The writer does what train.py does (temp name, fsync, replace);
the evaluation callback only records when it begins, so the number is the watcher's reaction time.

    .venv/bin/python -m bench.watch_latency [--checkpoints 50] [--interval 0.05]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import torch
import yaml

from fold0123.common import rundir
from fold0123.models.checkpoints import save_checkpoint
from fold0123.engine.watch import watch_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=int, default=50)
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between checkpoints")
    parser.add_argument("--params", type=int, default=1_000_000, help="float32 parameters per checkpoint")
    args = parser.parse_args()
    n = args.checkpoints
    replaced: dict[int, float] = {}
    started: dict[int, float] = {}

    def evaluate(run, epoch):
        started[epoch] = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "bench_3fold0"
        run.mkdir()
        rundir.config_path(run).write_text(yaml.safe_dump({"epochs": n, "eval": {"every": 1}, "split": "3fold0"}))
        result = {}
        watcher = threading.Thread(target=lambda: result.setdefault(
            "r", watch_run(run, evaluate, log=lambda m: None, timeout_s=120)))
        watcher.start()
        time.sleep(0.5)
        state = {"model": {"w": torch.randn(args.params)}}
        for epoch in range(1, n + 1):
            path = rundir.checkpoint_path(run, epoch)
            save_checkpoint(path, dict(state, epoch=epoch))  # os.replace is its last call
            replaced[epoch] = time.perf_counter()
            time.sleep(args.interval)
        rundir.done_path(run).write_text("")
        watcher.join(120)
    latencies = sorted(1000 * (started[e] - replaced[e]) for e in replaced if e in started)
    missed = n - len(latencies)
    p95 = latencies[min(len(latencies) - 1, int(round(0.95 * (len(latencies) - 1))))]
    print(f"{len(latencies)} checkpoints ({4 * args.params / 1e6:.0f} MB each), {missed} missed; "
          f"os.replace -> evaluation start: median {statistics.median(latencies):.2f} ms, p95 {p95:.2f} ms, "
          f"max {latencies[-1]:.2f} ms")


if __name__ == "__main__":
    main()
