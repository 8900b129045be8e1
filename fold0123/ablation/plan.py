"""What `make ablation` runs and where it puts it, from its config alone: the driver (ablation.run) runs these
steps, the table (ablation.table) reads their outputs back by the same names."""
from __future__ import annotations

from pathlib import Path

from fold0123.common.config import load_config
from fold0123.common.schema import AblationConfig, RecipeConfig, RunConfig

STACK_OFF = ["postprocess_keep=never", "blend_exp=null", "onehot_exp=null"]


def task_confs(recipe: RecipeConfig) -> dict[str, tuple[str, RunConfig]]:
    """exp -> (config file, resolved config, with the recipe's overrides) of the recipe's tasks."""
    out = {}
    for conf in recipe.tasks:
        cfg = load_config(conf, recipe.overrides(), schema=RunConfig)
        out[cfg.exp] = (conf, cfg)
    return out


def target_variants(cfg: AblationConfig, base: RunConfig) -> dict[str, list[str]]:
    """exp -> overrides of the target variants; the freeze mode the base run already uses is the base run."""
    variants = {"target_scratch": ["transfer_from=null"]} if cfg.scratch else {}
    for mode in cfg.freeze_modes:
        if mode != base.freeze:
            variants[f"target_freeze_{mode}"] = [f"freeze={mode}"]
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


def ablation_recipe(cfg: AblationConfig) -> RecipeConfig:
    return load_config(cfg.recipe, [f"{k}={v}" for k, v in cfg.recipe_set.items()], schema=RecipeConfig)


def stack_dirs(cfg: AblationConfig, exps: list[str], tags: bool = False) -> dict[str, Path]:
    names = list(stack_variants(cfg, exps, tags)) + (["pseudo"] if cfg.pseudo else [])
    return {name: Path(cfg.out_dir) / "stacks" / name for name in names}


def pretext_exp(recipe: RecipeConfig) -> str:
    return load_config(recipe.pretext, schema=RunConfig).exp
