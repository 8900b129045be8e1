"""What `make ablation` runs and where it puts it, from its config alone: the driver (ablation.run) runs these
steps, the table (ablation.table) reads their outputs back by the same names.

Seeds: every row is measured once per seed of `seeds`. The recipe's own seed (after `recipe_set`) is the base
seed: its runs are the recipe's (`make demo`'s, reused) and its outputs go where they always did (`out_dir`'s
stacks/ and baselines/). Any other seed S trains into `{runs}/seed{S}` (runs: the recipe's `checkpoints_dir`, or
its stack's: runs/demo/seed1) and writes its stacks to `{out_dir}/stacks/seed{S}/`, its baselines to
`{out_dir}/baselines/seed{S}/` and its step times as `seed S: step` keys of the one timings.json, so that no two
seeds share a run directory or a stack. The dataset, the folds and the tag vectors are the recipe's for every
seed (made with the recipe's seed): a seed changes the runs' initialisation, batch order and augmentation and
the stacks' and baselines' LightGBM seed, never the folds. Every seed's runs share the base seed's image cache
(`{runs}/cache`; run.share_cache), whose file names carry what made them.
"""
from __future__ import annotations

from pathlib import Path

from fold0123.common.config import key_values, load_config
from fold0123.common.errors import UsageError
from fold0123.common.schema import AblationConfig, RecipeConfig, RunConfig, StackConfig

STACK_OFF = ["postprocess_keep=never", "blend_exp=null", "onehot_exp=null"]

# The write-up's claims (and the one every method owes: beating the simple baselines): key -> the claim as the
# table states it. `ablation.py --claims KEY ...` runs only the steps these keys need (CLAIM_STEPS).
CLAIMS: dict[str, str] = {
    "pretext": "the jigsaw pretext helps (transferred beats the same run from scratch)",
    "freeze": "freezing layer3/4/fc loses to training everything (freeze none beats layer34)",
    "stack": "the four-task stack beats each task alone",
    "pixels": "pixel statistics help the stack",
    "post": "the post-processing helps (nested CV)",
    "soup": "a uniform soup of the last epochs beats the last epoch",
    "pseudo": "one pseudo-label round helps",
    "baseline": "the pipeline beats the pixel-statistics LightGBM",
}
# the steps beyond the recipe's own runs (pretext and tasks, which every claim needs) that each claim's rows need
CLAIM_STEPS: dict[str, set[str]] = {
    "pretext": {"scratch"}, "freeze": {"freeze"}, "stack": {"alone", "four"}, "pixels": {"four", "pixels"},
    "post": {"pixels", "post"}, "soup": {"scratch", "soup"}, "pseudo": {"post", "pseudo"},
    "baseline": {"baselines", "four", "pixels", "post"},
}
ALL_STEPS = set().union(*CLAIM_STEPS.values()) | {"tags"}  # row 12 (tag features) is in the table, in no claim


def claim_keys(names: list[str] | None) -> list[str] | None:
    """`--claims` as keys of CLAIMS (a key or the claim's text; commas split a value); None: every claim. An
    unknown name is a one-line UsageError listing the valid keys."""
    if names is None:
        return None
    by_text = {text: key for key, text in CLAIMS.items()}
    keys = []
    for name in (n.strip() for value in names for n in value.split(",")):
        if not name:
            continue
        key = name if name in CLAIMS else by_text.get(name)
        if key is None:
            raise UsageError(f"--claims: unknown claim {name!r} (the claims: {', '.join(CLAIMS)})")
        if key not in keys:
            keys.append(key)
    if not keys:
        raise UsageError(f"--claims: no claim named (the claims: {', '.join(CLAIMS)})")
    return keys


def steps_for(keys: list[str] | None) -> set[str]:
    """The steps (beyond the recipe's runs) that the claims `keys` need; None: every step of the table."""
    return set(ALL_STEPS) if keys is None else set().union(*(CLAIM_STEPS[k] for k in keys))


def task_confs(recipe: RecipeConfig) -> dict[str, tuple[str, RunConfig]]:
    """exp -> (config file, resolved config, with the recipe's overrides) of the recipe's tasks."""
    out = {}
    for conf in recipe.tasks:
        cfg = load_config(conf, recipe.overrides(), schema=RunConfig)
        out[cfg.exp] = (conf, cfg)
    return out


def pretext_conf(cfg: AblationConfig, recipe: RecipeConfig) -> str | None:
    """The pretext rows 4 and 5 transfer from: the recipe's, or, where the recipe's tasks train from scratch
    (`pretext: null`), the ablation's own `pretext`, which it trains for those rows alone."""
    return recipe.pretext or cfg.pretext


def pretext_exp(cfg: AblationConfig, recipe: RecipeConfig) -> str | None:
    conf = pretext_conf(cfg, recipe)
    return None if conf is None else load_config(conf, recipe.overrides(), schema=RunConfig).exp


def pretext_variant(base: RunConfig) -> str:
    """The target variant the pretext claim trains: the base run without its pretext, or with the ablation's."""
    return "target_scratch" if base.transfer_from else "target_transfer"


def pretext_pair(base_exp: str, base: RunConfig) -> tuple[str, str]:
    """(row 3's run from scratch, row 4's transferred run): the base target run and its pretext_variant."""
    return (pretext_variant(base), base_exp) if base.transfer_from else (base_exp, pretext_variant(base))


def target_variants(cfg: AblationConfig, base: RunConfig, pretext_run: str | None = None) -> dict[str, list[str]]:
    """exp -> overrides of the target variants (`pretext_run`: the run a base from scratch transfers from in
    rows 4 and 5); the freeze mode the transferred run already uses is that run (pretext_pair)."""
    transfer = [] if base.transfer_from else [f"transfer_from={pretext_run}"]
    if transfer and pretext_run is None and (cfg.scratch or set(cfg.freeze_modes) - {base.freeze}):
        raise UsageError("the recipe's tasks train from scratch and neither it nor the ablation config names a "
                         "pretext: rows 4 and 5 need one (set the ablation's `pretext:`, or scratch: false and "
                         "freeze_modes: [])")
    variants = {}
    if cfg.scratch:
        variants[pretext_variant(base)] = transfer or ["transfer_from=null"]
    for mode in cfg.freeze_modes:
        if mode != base.freeze:
            variants[f"target_freeze_{mode}"] = [f"freeze={mode}", *transfer]
    return variants


def stack_variants(cfg: AblationConfig, exps: list[str], tags: bool = False) -> dict[str, list[str]]:
    """Stack name -> stack.py overrides (row 6: each task alone; 8: the four tasks; 9: + pixel statistics;
    10: + post-processing, kept whatever its nested CV says, so that the claim is measured; 12, when the test
    objects have tags (`tags`): + the bag of tags)."""
    variants = {f"alone_{exp}": [f"runs={{{exp}: last}}", "infold=false", "pixel_stats=false", *STACK_OFF]
                for exp in exps}
    variants["four"] = ["pixel_stats=false", *STACK_OFF]
    variants["pixels"] = ["pixel_stats=true", *STACK_OFF]
    variants["post"] = ["pixel_stats=true", "postprocess_keep=always"]
    if tags:
        variants["tags"] = [*variants["post"], "tag_features=true"]
    return variants


def stack_step(name: str) -> str:
    """The step (of steps_for) that makes the stack `name` of stack_variants / stack_dirs."""
    return "alone" if name.startswith("alone_") else name


def ablation_recipe(cfg: AblationConfig) -> RecipeConfig:
    """The recipe with `recipe_set`: the base seed's, and the dataset, folds and tag vectors of every seed."""
    return load_config(cfg.recipe, key_values(cfg.recipe_set), schema=RecipeConfig)


def base_seed(cfg: AblationConfig) -> int:
    return ablation_recipe(cfg).seed


def base_runs_dir(cfg: AblationConfig) -> Path:
    """Where the base seed's runs are: the recipe's checkpoints_dir, or (null) its stack's, which reads them all."""
    recipe = ablation_recipe(cfg)
    return Path(recipe.checkpoints_dir or load_config(recipe.stack, recipe.overrides(),
                                                      schema=StackConfig).checkpoints_dir)


def seed_part(cfg: AblationConfig, seed: int) -> str:
    """The seed's sub-folder name: "" for the base seed (the recipe's own places), `seed{S}` for another."""
    return "" if seed == base_seed(cfg) else f"seed{seed}"


def seed_runs_dir(cfg: AblationConfig, seed: int) -> Path | None:
    """Where seed `seed` trains: None for the base seed (the recipe's own places), else `{runs}/seed{S}`."""
    part = seed_part(cfg, seed)
    return base_runs_dir(cfg) / part if part else None


def seed_recipe(cfg: AblationConfig, seed: int) -> RecipeConfig:
    """The recipe that trains and stacks seed `seed` (the base seed's: the recipe itself)."""
    runs = seed_runs_dir(cfg, seed)
    if runs is None:
        return ablation_recipe(cfg)
    return load_config(cfg.recipe, [*key_values(cfg.recipe_set), f"seed={seed}", f"checkpoints_dir={runs}"],
                       schema=RecipeConfig)


def baselines_dir(cfg: AblationConfig, seed: int | None = None) -> Path:
    """baselines.json's folder for seed `seed` (default: the base seed)."""
    return Path(cfg.out_dir) / "baselines" / seed_part(cfg, base_seed(cfg) if seed is None else seed)


def timing_key(cfg: AblationConfig, seed: int, step: str) -> str:
    """The step's key in timings.json: the step for the base seed, `seed S: step` for another."""
    return f"seed {seed}: {step}" if seed_part(cfg, seed) else step


def stack_dirs(cfg: AblationConfig, exps: list[str], tags: bool = False, seed: int | None = None) -> dict[str, Path]:
    """Stack name -> its out_dir, for seed `seed` (default: the base seed)."""
    names = list(stack_variants(cfg, exps, tags)) + (["pseudo"] if cfg.pseudo else [])
    out = Path(cfg.out_dir) / "stacks" / seed_part(cfg, base_seed(cfg) if seed is None else seed)
    return {name: out / name for name in names}
