"""Evaluate a run's checkpoints: 8-view task predictions per part (eval/epoch{E}_{part}.npz) and metrics.

    python evaluate.py --run DIR --epoch E [--parts oof,test,train]   one checkpoint (and its EMA weights as
        eval/ema{E}_{part}.npz, when the run was trained with ema.decay > 0; the same for --watch)
    python evaluate.py --run DIR --watch [--every N]                 each new checkpoint as train.py writes it
    python evaluate.py --run DIR --soup N                            uniform soup of the last N epochs:
        writes DIR/soup{N}.pth and evaluates it as eval/soup{N}_{part}.npz and eval/soup{N}_metrics.json
    python evaluate.py --run DIR --step S                            the step checkpoint DIR/step{S}.pth
        (eval_every_steps) as eval/step{S}_{part}.npz; --watch evaluates those too, after the epochs ready
    python evaluate.py --run DIR1 DIR2 ... --epoch E (or --soup N, --step S)   each run in turn, in one process:
        torch and the models load once (about 5 s on a CPU), not once per run
"""
from __future__ import annotations

import argparse
import functools
import json
import sys

from fold0123.common import rundir
from fold0123.common.errors import cli_main
from fold0123.engine.evaluator import evaluate_epoch, evaluate_soup, evaluate_step
from fold0123.engine.watch import watch_run


def _summary(metrics: dict) -> str:
    mean = metrics["views"]["mean"]
    if not mean:
        return f"{metrics['split']}: no oof rows (test features written)"
    primary = metrics["primary"]
    name = metrics.get("checkpoint", f"epoch {metrics['epoch']}{' EMA' if metrics.get('ema') else ''}")
    values = [f"{mean.get(primary)} (8-view mean)", f"{metrics['views']['identity'].get(primary)} (identity)"]
    if rundir.primary_view(metrics) == "identity":  # the task's primary view first
        values.reverse()
    return f"{metrics['split']} {name}: {primary} {', '.join(values)} on {metrics['n']} oof rows"


@cli_main
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, nargs="+",
                        help="run directory {checkpoints_dir}/{exp}_{split}; several with --epoch, --soup or --step")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--epoch", type=int, help="evaluate {run}/{epoch}.pth")
    what.add_argument("--watch", action="store_true", help="evaluate checkpoints as they appear; exit after DONE")
    what.add_argument("--soup", type=int, metavar="N", help="uniform soup of the last N epoch checkpoints")
    what.add_argument("--step", type=int, metavar="S", help="evaluate {run}/step{S}.pth (eval_every_steps)")
    parser.add_argument("--every", type=int, default=None,
                        help="--watch: only every Nth epoch, always the last (default: the config's eval.every)")
    parser.add_argument("--parts", default=None, help="comma list of oof,test,train (default: the config's)")
    parser.add_argument("--device", default=None, help="cuda:N or cpu (default cuda when available)")
    parser.add_argument("--timeout", type=float, default=None, help="--watch: give up after this many seconds")
    parser.add_argument("--wait-lock", action="store_true",
                        help="--watch: wait for another watcher of this run to finish (default: exit, naming it)")
    args = parser.parse_args(argv)
    parts = args.parts.split(",") if args.parts else None
    if args.watch:
        if len(args.run) > 1:
            parser.error(f"--watch takes one --run, not {len(args.run)}: start one watcher per run")
        evaluate = functools.partial(_evaluate_quietly, parts=parts, device=args.device)
        steps = functools.partial(_evaluate_step_quietly, parts=parts, device=args.device)
        sys.exit(watch_run(args.run[0], evaluate, every=args.every, timeout_s=args.timeout,
                           wait_lock=args.wait_lock, evaluate_step=steps).exit_code)
    for run in args.run:
        if args.step is not None:
            print(_summary(evaluate_step(run, args.step, parts=parts, device=args.device)))
        elif args.soup is not None:
            print(_summary(evaluate_soup(run, args.soup, parts=parts, device=args.device)))
        else:
            for metrics in evaluate_epoch(run, args.epoch, parts=parts, device=args.device):
                print(_summary(metrics))


def _evaluate_quietly(run, epoch, parts=None, device=None):
    """The watcher's step: the epoch's tags not evaluated yet (its weights, their EMA), one JSON line each."""
    evaluated = evaluate_epoch(run, epoch, parts=parts, device=device, redo=False)
    for metrics in evaluated:
        view = rundir.primary_view(metrics)  # the 8-view mean, unless the task reads its metric from another view
        print(json.dumps({"epoch": epoch, **({"ema": True} if metrics.get("ema") else {}),
                          **({"view": view} if view != "mean" else {}), **metrics["views"][view]}), flush=True)
    return evaluated


def _evaluate_step_quietly(run, step, parts=None, device=None):
    """The watcher's step checkpoint: one JSON line, as for an epoch."""
    metrics = evaluate_step(run, step, parts=parts, device=device)
    view = rundir.primary_view(metrics)
    print(json.dumps({"step": step, **({"view": view} if view != "mean" else {}), **metrics["views"][view]}),
          flush=True)
    return metrics


if __name__ == "__main__":
    main()
