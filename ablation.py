"""`make ablation`: the recipe, every variant of the ablation table, and the table (RESULTS.md, results.json,
report.html): each piece of the pipeline against the simple baselines, on the same folds and held-out answers.

    python ablation.py --conf parameters/ablation/cpu.yml [--set key=value ...] [--redo-stale] [--claims KEY ...]

Every row is measured for each seed of the config's `seeds` (--set seeds=[0,1,2]); `--claims pretext freeze` runs
only the steps those claims need (the keys: fold0123.ablation.plan.CLAIMS). The plan, the steps and the table live
in fold0123.ablation (plan, run, table; `python -m fold0123.ablation.table --conf ...` re-writes the table from the
outputs alone).
"""
from __future__ import annotations

import argparse

from fold0123.ablation.plan import CLAIMS, claim_keys
from fold0123.ablation.run import run_ablation
from fold0123.common.config import add_config_args, config_from_args, set_args
from fold0123.common.errors import cli_main
from fold0123.common.schema import AblationConfig


@cli_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_args(parser, redo_stale="outputs")
    parser.add_argument("--claims", nargs="+", metavar="KEY",
                        help=f"run only the steps these claims need (default: every claim): {', '.join(CLAIMS)}")
    args = parser.parse_args(argv)
    claim_keys(args.claims)  # an unknown claim stops here, before the config is read
    cfg = config_from_args(args, AblationConfig)
    run_ablation(cfg, ["--conf", args.conf, *set_args(args.overrides)], args.redo_stale, args.claims)


if __name__ == "__main__":
    main()
