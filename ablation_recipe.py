"""`make ablation-recipe` / `make ablation-classify`: the training-recipe rows, each variant of one task config
trained on the K fold splits for each seed and judged against the base out of fold, beside the simple baselines.

    python ablation_recipe.py --conf parameters/ablation/recipe/atmacup_cpu.yml [--set key=value ...] [--redo-stale]
    python ablation_recipe.py --conf parameters/ablation/recipe/atmacup_cpu.yml --variants small_stem ema
    python ablation_recipe.py --conf parameters/ablation/recipe/atmacup_cpu.yml --table-only

The steps, the rows and the claims live in fold0123.ablation.variants; the verdicts are the ablation table's
(fold0123.ablation.table.judge). Results: {out_dir}/RESULTS.md, results.json, timings.json.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from fold0123.ablation.variants import markdown, run_recipe_rows, selected, write_table
from fold0123.common.config import add_config_args, config_from_args, set_args
from fold0123.common.errors import cli_main
from fold0123.common.schema import RecipeAblationConfig


@cli_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_args(parser, redo_stale="runs")
    parser.add_argument("--table-only", action="store_true",
                        help="only re-write RESULTS.md and results.json from what the runs left (trains nothing)")
    parser.add_argument("--variants", nargs="+", metavar="NAME",
                        help="train only these variants (with the base and what they read or compare with); the "
                             "table still shows every row, the others as not measured")
    args = parser.parse_args(argv)
    cfg = config_from_args(args, RecipeAblationConfig)
    selected(cfg, args.variants)  # an unknown name stops here, before anything runs
    meta = {"title": f"Training-recipe rows ({Path(args.conf).name})", "preset": args.conf,
            "command": " ".join(["python ablation_recipe.py --conf", args.conf, *set_args(args.overrides)])}
    if args.table_only:
        print(markdown(write_table(cfg, meta)))
    else:
        run_recipe_rows(cfg, meta, args.redo_stale, args.variants)
    print(f"wrote {Path(cfg.out_dir) / 'RESULTS.md'} and results.json")


if __name__ == "__main__":
    main()
