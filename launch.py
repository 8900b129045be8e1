"""Lay out an experiment's fold0123 rows without Ruby: `python launch.py fold0123 --conf parameters/<exp>.yml`.

Builds the tmuxinator/fold0123.yml layout with libtmux (detached unless --attach), or submits the rows to Slurm
(`--executor slurm --partition P --gpus-per-job 1`; one row over nodes: `--nodes 2 --tasks-per-node 4`) or to
submitit's local executor (`--executor local`). `--devices 0,1/2,3/4,5/6,7` trains each row over its GPU group
with torchrun.
Re-running skips runs already DONE and evaluated and resumes interrupted ones. With --wait it blocks until
every row is done and exits non-zero naming the runs that failed. `--json` prints the planned rows and panes and
starts nothing: what tmuxinator/fold0123.yml lays out, so the two launchers cannot drift.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from fold0123.common.config import add_config_args
from fold0123.common.errors import cli_main
from fold0123.launcher.fold0123 import EXECUTORS, LaunchOptions, launch_fold0123, plan_fold0123


@cli_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("layout", choices=["fold0123"], help="the layout to launch")
    add_config_args(parser, redo_stale="runs (train them again)")  # --conf and repeatable --set, passed on to train.py
    parser.add_argument("--devices", default=None,
                        help="GPU indices (0,1,2,3: one per row) or cpu; GPU groups, one per row, trained with "
                             "torchrun: 0,1/2,3/4,5/6,7 (one group for all rows: 0,1,2,3/), 'cpu*2' for 2 CPU "
                             "ranks; default: every visible GPU, else cpu")
    parser.add_argument("--eval-devices", default=None,
                        help="where the evaluators run, e.g. 4,5,6,7 or cpu; default: the row's trainer's device "
                             "(Slurm: a GPU list means each job's second GPU, with --gpus-per-job 2)")
    parser.add_argument("--checkpoints", default=None, help="override the config's checkpoints_dir")
    parser.add_argument("--splits", default=None, type=lambda text: tuple(text.split(",")),
                        help="run only these rows, e.g. 3fold0,all")
    parser.add_argument("--attach", action="store_true", help="attach to the tmux session once started")
    parser.add_argument("--wait", action="store_true", help="block until every row is finished")
    parser.add_argument("--session", default=None, help="tmux session name (default fold0123_{exp})")
    parser.add_argument("--socket", dest="socket_name", default=None,
                        help="tmux socket name (tmux -L); default server otherwise")
    parser.add_argument("--no-close", dest="close", action="store_false",
                        help="keep the tmux session open after success")
    parser.add_argument("--linger", dest="linger_s", type=float, default=LaunchOptions.linger_s,
                        help="seconds the session shows its summary before it closes (default %(default)g)")
    parser.add_argument("--executor", choices=EXECUTORS, default="tmux")
    parser.add_argument("--partition", default=None, help="Slurm partition")
    parser.add_argument("--gpus-per-job", type=int, default=1)
    parser.add_argument("--cpus-per-task", type=int, default=4)
    parser.add_argument("--nodes", type=int, default=1, help="Slurm: the nodes of each row's job")
    parser.add_argument("--tasks-per-node", type=int, default=1,
                        help="Slurm (or local): each row's job trains over this many tasks per node, one per GPU")
    parser.add_argument("--timeout-min", type=int, default=24 * 60, help="Slurm job time limit")
    parser.add_argument("--root", default=None, help="where the panes' commands run (default: the repository)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON and start nothing")
    args = parser.parse_args(argv)  # the options by LaunchOptions' field names
    options = LaunchOptions(**{**{f.name: getattr(args, f.name) for f in fields(LaunchOptions) if f.name in args},
                               "overrides": tuple(args.overrides)})
    if args.json:
        print(plan_fold0123(args.conf, options).to_json())
        return 0
    try:
        result = launch_fold0123(args.conf, options)
    except KeyboardInterrupt:
        sys.exit("interrupted: stopped waiting; the rows keep running (tmux ls / squeue to find them)")
    print(result.summary())
    if result.failed:
        names = ", ".join(f"{o.split} ({o.run_dir}: {o.detail})" for o in result.failed)
        sys.exit(f"error: failed runs: {names}")
    if args.wait and not result.ok:
        sys.exit("error: not every run finished: " + ", ".join(o.split for o in result.outcomes
                                                               if o.state not in ("done", "skipped")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
