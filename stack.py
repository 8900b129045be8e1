"""Stacking from the command line: the same steps as ensemble.ipynb.

  python stack.py --conf parameters/stack.yml [--set key=value ...]            stack, post-process, submit, report
                                                         (a classification competition: the ensemble below)
  python stack.py ensemble --conf parameters/stack.yml [--set ensemble.redistribute_k=5]
                                                         weighted probability ensemble (+ label re-distribution)
  python stack.py pseudo --conf parameters/stack.yml --round 1 [--set ensemble.pseudo_thr=0.45]
                                                         pseudo-label rows -> {split}_pseudo1_{train,test}.csv
  python stack.py clean --conf parameters/classify/stack.yml --set clean.exp=resnet
                                                         cleanlab's label issues -> {split}_clean_{train,test}.csv
"""
from __future__ import annotations

import argparse
import sys

from fold0123.common.config import add_config_args, config_from_args
from fold0123.common.errors import cli_main
from fold0123.common.schema import StackConfig

COMMANDS = ("stack", "ensemble", "pseudo", "clean")


def parse_args(argv: list[str]) -> argparse.Namespace:
    if not argv or argv[0] not in COMMANDS + ("-h", "--help"):
        argv = ["stack", *argv]  # the stack is the default command
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("stack", "LightGBM stacking -> post-processing -> submission and report "
                                 "(classification: the ensemble)"),
                       ("ensemble", "weighted probability ensemble, optional label re-distribution, submission"),
                       ("pseudo", "write a pseudo-label round's split CSVs"),
                       ("clean", "flag label issues with cleanlab and write split CSVs without them")):
        sub = commands.add_parser(name, help=text)
        add_config_args(sub)
        if name == "pseudo":
            sub.add_argument("--round", type=int, required=True, help="round number r: splits {split}_pseudo{r}")
    return parser.parse_args(argv)


@cli_main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from fold0123 import ensemble  # after argument parsing: --help stays instant

    cfg = config_from_args(args, StackConfig)
    if args.command == "stack":
        result = ensemble.run_default(cfg)
    elif args.command == "ensemble":
        result = ensemble.run_ensemble(cfg)
    elif args.command == "clean":
        from fold0123.stacking.clean import run_clean

        result = run_clean(cfg)
    else:
        result = ensemble.run_pseudo(cfg, args.round)
    print(result.summary())


if __name__ == "__main__":
    main()
