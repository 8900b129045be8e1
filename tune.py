"""`make tune`: an Optuna study whose trials are fold0123 runs, pruned fold by fold, resumable, reported with the
winner trained again on other seeds.

    python tune.py --conf parameters/tune/demo_cpu.yml [--set key=value ...] [--devices 0/1/2/3] [--redo-stale]
    python tune.py --conf parameters/tune/demo_cpu.yml --worker 4      # one more worker on a prepared study
    python tune.py --conf parameters/tune/demo_cpu.yml --report-only   # rewrite the report from the storage

A killed tune.py (or worker) is resumed by running the same command: finished trials are kept, the interrupted
trial is retried under its own run names (its runs resume), and it counts once. The study's parts live in
fold0123.tuning (space, study, report, workers).
"""
from __future__ import annotations

import argparse

from fold0123.common.config import add_config_args, config_from_args, set_args
from fold0123.common.errors import cli_main
from fold0123.common.schema import TuneConfig
from fold0123.tuning.report import write_report
from fold0123.tuning.study import existing
from fold0123.tuning.workers import join, tune


@cli_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_args(parser, redo_stale="the study (and its trials' runs)")
    parser.add_argument("--devices", help="one worker per device or group: 0/1/2/3, 0,1/2,3, cpu/cpu (default: the "
                                          "config's devices, else the recipe's first device)")
    parser.add_argument("--socket", help="the tmux server's socket name (-L) the rows run on")
    parser.add_argument("--worker", metavar="DEVICE", help="only run trials, on DEVICE, on a prepared study")
    parser.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--cores", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--report-only", action="store_true", help="only rewrite the report from the storage")
    args = parser.parse_args(argv)
    cfg = config_from_args(args, TuneConfig)
    if args.report_only:
        write_report(existing(cfg))
    elif args.worker:
        join(cfg, args.worker, args.worker_index, args.cores, args.socket)
    else:
        tune(cfg, ["--conf", args.conf, *set_args(args.overrides)], args.devices, args.redo_stale, args.socket)


if __name__ == "__main__":
    main()
