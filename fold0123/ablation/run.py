"""`make ablation`: the recipe, then every variant the ablation table needs, then the table, once per seed.

It extends a recipe (the demo's by default): the recipe's own stages first (reused when `make demo` made them),
then the baselines, the target run from scratch and under each freeze mode (keeping the last epochs so that a
soup can be made), a soup, one stack per task alone, the four-task stack without and with pixel statistics and
post-processing, and one pseudo-label round. The dataset, the folds and the tag vectors are made once (the
recipe's seed); the rest is done for each seed of `seeds`, the base seed in the recipe's own places and the
others beside them (ablation.plan: seed_recipe, stack_dirs, baselines_dir), so that a seed never overwrites
another's runs or stacks. Every step skips what exists (the launcher skips finished runs, resumes interrupted
ones and refuses stale ones): a rerun, or more seeds later, trains only what is missing. `claims` (keys of
plan.CLAIMS) limits the steps to what those claims need.

Each step is one of the project's CLIs, run as a user would run it; `python -m fold0123.ablation.table` then
reads what they wrote (this module only runs commands). Wall-clock per step goes to `timings.json` beside the
table (plan.timing_key: `seed S: step` for a seed other than the base one) so that each row can say what it cost.

The pseudo-label round writes its split files into the dataroot under one name (`{split}_pseudo1`), so each
seed rewrites them from its own stack just before its round trains on them; their content is what the runs'
fingerprints digest, so a rerun (which rewrites them the same way) still reuses every seed's pseudo runs.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from fold0123.ablation.plan import (ablation_recipe, base_runs_dir, baselines_dir, claim_keys, pretext_exp,
                                    pretext_variant, seed_recipe, seed_runs_dir, stack_dirs, stack_step,
                                    stack_variants, steps_for, target_variants, task_confs, timing_key)
from fold0123.common import rundir
from fold0123.common.dataroot import split_names
from fold0123.common.io import make_dir, write_json
from fold0123.common.schema import AblationConfig, RecipeConfig
from fold0123.launcher.layout import devices_on_cpu, evaluation_device
from fold0123.launcher.recipe import (CpuClock, baseline_bag, build_dataset, fold0123, launch, make_folds,
                                      make_soups, make_tag_vectors, pretext, run_cli, stack_args, stage)
from fold0123.launcher.status import checkpoint_epochs
from fold0123.stacking.runs import eval_path, fold_splits


class Timer:
    """Seconds per named step, written to timings.json after each step (a killed driver keeps what it had). The
    steps this driver does not run (claims left out by --claims) keep their earlier seconds."""

    def __init__(self, path: Path):
        self.path, self.seconds, self.fresh = path, self._earlier(path), set()

    @staticmethod
    def _earlier(path: Path) -> dict[str, float]:
        try:
            earlier = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(earlier, dict):
            return {}
        return {k: float(v) for k, v in earlier.items() if isinstance(v, (int, float))}

    def run(self, name: str, fn, *args) -> None:
        start = time.time()
        fn(*args)
        if name not in self.fresh:  # measured again now: the earlier seconds go
            self.fresh.add(name)
            self.seconds[name] = 0.0
        self.seconds[name] += time.time() - start
        write_json(self.path, self.seconds)


def share_cache(cfg: AblationConfig, seed: int) -> None:
    """Seed `seed`'s runs use the base seed's image cache (`{runs}/cache`, named by what made
    them): `{runs}/seed{S}/cache` is a link to it, made once."""
    runs = seed_runs_dir(cfg, seed)
    if runs is not None:
        link_cache(runs, base_runs_dir(cfg))


def link_cache(runs: Path, shared_runs: Path) -> None:
    """`{runs}/cache` becomes a link to `{shared_runs}/cache` (made once; an existing cache stays as it is)."""
    own, shared = rundir.cache_dir(runs), rundir.cache_dir(shared_runs)
    if own.exists() or own.is_symlink():
        return
    make_dir(shared)
    make_dir(runs)
    own.symlink_to(os.path.relpath(shared, runs), target_is_directory=True)


def run_ablation(cfg: AblationConfig, conf_args: list[str], redo_stale: bool = False,
                 claims: list[str] | None = None) -> Path:
    """Run every step (skipping what exists) for every seed, then the table (`conf_args`: how this config was
    given, passed on to the table command). `claims`: names of plan.CLAIMS whose steps alone run (None: all)."""
    steps = steps_for(claim_keys(claims))
    clock, wall = CpuClock(), time.time()
    recipe = ablation_recipe(cfg)
    timer = Timer(Path(cfg.out_dir) / "timings.json")
    timer.run("dataset", build_dataset, recipe, redo_stale)
    timer.run("folds", make_folds, recipe, redo_stale)
    timer.run("tag vectors", make_tag_vectors, recipe, redo_stale)
    for i, seed in enumerate(cfg.seeds):
        stage(f"seed {seed} ({i + 1} of {len(cfg.seeds)})")
        run_seed(cfg, seed, steps, timer, redo_stale)

    stage("the table")
    device = f"CPU, {os.cpu_count()} cores" if devices_on_cpu(recipe.devices) else f"GPUs {recipe.devices}"
    run_cli("-m", "fold0123.ablation.table", *conf_args, "--wall-seconds", f"{time.time() - wall:.0f}",
            "--device", device, *(["--claims", *claims] if claims else []))
    print(clock.report())
    return Path(cfg.out_dir)


def evaluate_train_parts(recipe: RecipeConfig) -> None:
    """Row 8-infold's inputs: each task's fold runs' predictions on their own training rows at their last epoch
    (`evaluate.py --parts train`), where a run did not make them itself (the demo's presets skip them, about a
    fifth of a run's time; the original's in-fold stack is measured here, not submitted)."""
    device = evaluation_device(recipe.devices)
    missing: dict[int, list[str]] = {}  # last epoch -> the runs without its train part
    for exp, (_, task_cfg) in task_confs(recipe).items():
        for split in fold_splits(recipe.folds):  # the `all` run has no held-out rows: no in-fold variant
            run = rundir.run_path(task_cfg.checkpoints_dir, exp, split)
            epochs = checkpoint_epochs(run)
            if epochs and not eval_path(run, epochs[-1], "train").is_file():
                missing.setdefault(epochs[-1], []).append(str(run))
    for epoch, runs in sorted(missing.items()):  # one process per epoch: torch loads once, not once per run
        run_cli("evaluate.py", "--run", *runs, "--epoch", str(epoch), "--parts", "train", "--device", device)


def run_seed(cfg: AblationConfig, seed: int, steps: set[str], timer: Timer, redo_stale: bool = False) -> None:
    """One seed's runs and stacks (plan.seed_recipe: where they go), `steps` of plan.steps_for only."""
    recipe = seed_recipe(cfg, seed)
    key = lambda step: timing_key(cfg, seed, step)  # noqa: E731
    share_cache(cfg, seed)
    timer.run(key("pretext"), pretext, recipe, redo_stale)
    timer.run(key("tasks"), fold0123, recipe, redo_stale)
    timer.run(key("soups"), make_soups, recipe)  # the soups the recipe's stack names (none in the demo's)
    if "four" in steps:
        timer.run(key("in-fold parts"), evaluate_train_parts, recipe)

    if "baselines" in steps:
        stage(f"baselines (seed {seed})")
        answers = ["--answers", recipe.answers] if recipe.answers else []
        timer.run(key("baselines"), run_cli, "-m", "fold0123.baselines", "--dataroot", recipe.dataroot,
                  "--folds", str(recipe.folds), "--seed", str(seed), "--out", str(baselines_dir(cfg, seed)),
                  *baseline_bag(recipe), *answers)

    tasks = task_confs(recipe)
    target_exp = next(exp for exp, (_, c) in tasks.items() if c.task == "target")
    target_conf, target_cfg = tasks[target_exp]
    pretext_name = pretext_exp(cfg, recipe)
    variants = target_variants(cfg, target_cfg, pretext_name and f"{pretext_name}_all")
    if recipe.pretext is None and cfg.pretext and steps & {"scratch", "freeze"}:
        # the recipe's tasks train from scratch: the pretext of rows 4 and 5 is the ablation's own
        timer.run(key("pretext"), pretext, recipe.model_copy(update={"pretext": cfg.pretext}), redo_stale)
    for exp, overrides in variants.items():
        if ("scratch" if exp == pretext_variant(target_cfg) else "freeze") not in steps:
            continue
        stage(f"variant {exp} (seed {seed}): {' '.join(overrides)}")
        sets = [a for o in [f"exp={exp}", f"keep_last={max(cfg.soup, 1)}", *overrides] for a in ("--set", o)]
        timer.run(key(exp), launch, recipe, target_conf, redo_stale, *sets)
    if cfg.soup > 1 and cfg.scratch and "soup" in steps:
        variant = pretext_variant(target_cfg)
        stage(f"soup of the last {cfg.soup} epochs of {variant} (seed {seed})")
        runs = [str(Path(target_cfg.checkpoints_dir) / f"{variant}_{split}") for split in split_names(recipe.folds)]
        timer.run(key("soup"), run_cli, "evaluate.py", "--run", *runs, "--soup", str(cfg.soup), "--device",
                  evaluation_device(recipe.devices))

    tasks_exps = list(tasks)
    tags = recipe.test_tags  # the emoji build with --test-tags: row 12, the stack with tag features
    stacks = stack_dirs(cfg, tasks_exps, tags, seed)
    for name, overrides in stack_variants(cfg, tasks_exps, tags).items():
        if stack_step(name) not in steps:
            continue
        stage(f"stack {name} (seed {seed}): {' '.join(overrides)}")
        timer.run(key(f"stack {name}"), run_cli, "stack.py",
                  *stack_args(recipe, f"out_dir={stacks[name]}", *overrides))
    if cfg.pseudo and "pseudo" in steps:
        stage(f"one pseudo-label round, from the post-processed stack (seed {seed})")
        post = [f"out_dir={stacks['pseudo']}", *stack_variants(cfg, tasks_exps)["post"]]
        timer.run(key("pseudo"), run_cli, "stack.py", "pseudo", "--round", "1", *stack_args(recipe, *post))
        splits = ",".join(f"{s}_pseudo1" for s in split_names(recipe.folds))
        for conf, _ in tasks.values():
            timer.run(key("pseudo"), launch, recipe, conf, redo_stale, "--splits", splits)
        timer.run(key("stack pseudo"), run_cli, "stack.py", *stack_args(recipe, "split_suffix=_pseudo1", *post))
