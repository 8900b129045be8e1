"""`make ablation`: the recipe, then every variant the ablation table needs, then the table.

It extends a recipe (the demo's by default): the recipe's own stages first (reused when `make demo` made them),
then the baselines, the target run from scratch and under each freeze mode (keeping the last epochs so that a
soup can be made), a soup, one stack per task alone, the four-task stack without and with pixel statistics and
post-processing, and one pseudo-label round. Each step is one of the project's CLIs, run as a user would run it;
`python -m fold0123.ablation.table` then reads what they wrote (this module only runs commands). Wall-clock
per step goes to `timings.json` beside the table so that each row can say what it cost.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from fold0123.ablation.plan import ablation_recipe, stack_dirs, stack_variants, target_variants, task_confs
from fold0123.common.dataroot import split_names
from fold0123.common.io import write_json
from fold0123.common.schema import AblationConfig
from fold0123.launcher.recipe import (CpuClock, baseline_bag, build_dataset, fold0123, launch, make_folds,
                                      make_tag_vectors, pretext, run_cli, stack_args, stage)


class Timer:
    """Seconds per named step, written to timings.json after each step (a killed driver keeps what it had)."""

    def __init__(self, path: Path):
        self.path, self.seconds = path, {}

    def run(self, name: str, fn, *args) -> None:
        start = time.time()
        fn(*args)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.time() - start
        write_json(self.path, self.seconds)


def run_ablation(cfg: AblationConfig, conf_args: list[str], redo_stale: bool = False) -> Path:
    """Run every step (skipping what exists), then the table (`conf_args`: how this config was given, passed on
    to the table command)."""
    clock, wall = CpuClock(), time.time()
    recipe = ablation_recipe(cfg)
    out = Path(cfg.out_dir)
    timer = Timer(out / "timings.json")
    timer.run("dataset", build_dataset, recipe, redo_stale)
    timer.run("folds", make_folds, recipe, redo_stale)
    timer.run("tag vectors", make_tag_vectors, recipe, redo_stale)
    timer.run("pretext", pretext, recipe, redo_stale)
    timer.run("tasks", fold0123, recipe, redo_stale)

    stage("baselines")
    answers = ["--answers", recipe.answers] if recipe.answers else []
    timer.run("baselines", run_cli, "-m", "fold0123.baselines", "--dataroot", recipe.dataroot,
              "--folds", str(recipe.folds), "--seed", str(recipe.seed), "--out", str(out / "baselines"),
              *baseline_bag(recipe), *answers)

    tasks = task_confs(recipe)
    target_exp = next(exp for exp, (_, c) in tasks.items() if c.task == "target")
    target_conf, target_cfg = tasks[target_exp]
    for exp, overrides in target_variants(cfg, target_cfg).items():
        stage(f"variant {exp}: {' '.join(overrides)}")
        sets = [a for o in [f"exp={exp}", f"keep_last={max(cfg.soup, 1)}", *overrides] for a in ("--set", o)]
        timer.run(exp, launch, recipe, target_conf, redo_stale, *sets)
    if cfg.soup > 1 and cfg.scratch:
        stage(f"soup of the last {cfg.soup} epochs of target_scratch")
        for split in split_names(recipe.folds):
            run = Path(target_cfg.checkpoints_dir) / f"target_scratch_{split}"
            timer.run("soup", run_cli, "evaluate.py", "--run", str(run), "--soup", str(cfg.soup), "--device",
                      "cpu" if recipe.devices == "cpu" else "cuda")

    tasks_exps = list(tasks)
    tags = recipe.test_tags  # the emoji build with --test-tags: row 12, the stack with tag features
    stacks = stack_dirs(cfg, tasks_exps, tags)
    for name, overrides in stack_variants(cfg, tasks_exps, tags).items():
        stage(f"stack {name}: {' '.join(overrides)}")
        timer.run(f"stack {name}", run_cli, "stack.py", *stack_args(recipe, f"out_dir={stacks[name]}", *overrides))
    if cfg.pseudo:
        stage("one pseudo-label round, from the post-processed stack")
        post = [f"out_dir={stacks['pseudo']}", *stack_variants(cfg, tasks_exps)["post"]]
        timer.run("pseudo", run_cli, "stack.py", "pseudo", "--round", "1", *stack_args(recipe, *post))
        splits = ",".join(f"{s}_pseudo1" for s in split_names(recipe.folds))
        for conf, _ in tasks.values():
            timer.run("pseudo", launch, recipe, conf, redo_stale, "--splits", splits)
        timer.run("stack pseudo", run_cli, "stack.py", *stack_args(recipe, "split_suffix=_pseudo1", *post))

    stage("the table")
    device = f"CPU, {os.cpu_count()} cores" if recipe.devices == "cpu" else f"GPUs {recipe.devices}"
    run_cli("-m", "fold0123.ablation.table", *conf_args, "--wall-seconds", f"{time.time() - wall:.0f}",
            "--device", device)
    print(clock.report())
    return out
