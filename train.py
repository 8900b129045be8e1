"""Train one experiment config on one split, writing its run directory (see DESIGN.md, "The run directory").

    python train.py --conf parameters/target.yml --split 3fold0 [--device cuda:0|cpu] [--set key=value ...] [--resume]
    torchrun --nproc_per_node=N train.py --conf ... --split ... [--device cuda|cpu]   (one run over N ranks)
"""
from __future__ import annotations

import argparse

from fold0123.common.config import add_config_args, config_from_args
from fold0123.common.errors import cli_main
from fold0123.common.schema import RunConfig
from fold0123.engine.distributed import read_env
from fold0123.engine.trainer import train


@cli_main
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_args(parser, redo_stale="a run (delete it, train again)")
    parser.add_argument("--split", required=True, help="3fold0 .. {K}fold{K-1}, all, or a pseudo-label split name")
    parser.add_argument("--device", default=None, help="cuda:N, cuda or cpu; default cuda when available; under "
                                                       "torchrun cuda (each rank on cuda:LOCAL_RANK) or cpu (gloo)")
    parser.add_argument("--resume", action="store_true", help="continue from the run's last complete checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bar (default: bar only on a tty)")
    args = parser.parse_args(argv)
    cfg = config_from_args(args, RunConfig)
    run = train(cfg, args.split, device=args.device, resume=args.resume, progress=False if args.no_progress else None,
                redo_stale=args.redo_stale)
    if read_env().is_main:  # one line per run, not one per rank
        print(run)


if __name__ == "__main__":
    main()
