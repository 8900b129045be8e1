"""The main job (`make demo`): the whole atmaCup #11 recipe on one dataroot, end to end.

dataset -> folds -> tag vectors -> jigsaw pretext on `all` -> fold0123 per transfer task -> stacking -> report
[-> baselines]. A classification competition (parameters/classify/recipe.yml) skips the tag vectors and the
pretext where its config says so and ensembles instead of stacking.
Every stage is one of the project's own CLIs, run as a subprocess exactly as a user would type it, so the recipe
proves the commands in the README and docs/ work. A stage whose outputs exist and were made as asked now is skipped, so
re-running the recipe resumes where it stopped; outputs made by another config or from other inputs (their
fingerprints, common.fingerprint) stop it with one line naming what differs, or with --redo-stale are redone.
The stages live in fold0123.launcher.recipe. The recipe's own config (parameters/demo/recipe.yml,
parameters/recipe.yml) only names the other configs and the devices.
"""
from __future__ import annotations

import argparse

from fold0123.common.config import add_config_args, config_from_args
from fold0123.common.errors import cli_main
from fold0123.common.schema import RecipeConfig
from fold0123.launcher.recipe import (CpuClock, baselines, build_dataset, check_stacked_runs, cleaned_round, fold0123,
                                      make_folds, make_tag_vectors, pretext, pseudo_label_rounds, score_and_where,
                                      stack, stage)


@cli_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_args(parser, redo_stale="folds, tag vectors and runs")
    args = parser.parse_args(argv)
    clock = CpuClock()
    cfg = config_from_args(args, RecipeConfig)
    build_dataset(cfg, args.redo_stale)
    check_stacked_runs(cfg)
    make_folds(cfg, args.redo_stale)
    make_tag_vectors(cfg, args.redo_stale)
    pretext(cfg, args.redo_stale)
    fold0123(cfg, args.redo_stale)
    stack(cfg)
    cleaned_round(cfg, args.redo_stale)
    pseudo_label_rounds(cfg, args.redo_stale)
    baselines(cfg)
    score_and_where(cfg)
    stage("done")
    print(clock.report())


if __name__ == "__main__":
    main()
