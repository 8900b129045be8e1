"""The training-recipe rows (`make ablation-recipe`, `make ablation-classify`; ablation_recipe.py): one task config
trained per variant on the K fold splits, for each seed, each variant judged against another by the task's
primary metric out of fold, with the simple baselines on the same folds as rows of the same table.

A variant is the task config with its `set` (after the config's `task_set`), trained as the experiment named
after the variant (`exp={variant}`: two variants never share a run directory) on the recipe's K fold splits only
(no pretext, no `all` run, no stacking), seed S into `{runs_dir}/seed{S}` (their image cache shared:
`{runs_dir}/cache`), and scored at its `epoch` (`last`, an epoch, `ema`/`ema{E}`, `soup{N}`). A variant with
`runs: other` trains nothing: it reads the other variant's runs at its own epoch (the EMA weights, or a soup, of
the same runs). A variant with `pretext: CONFIG` first trains that pretext (jigsaw, simmim) on split `all` as
`{variant}_pretext_all` in the seed's runs and transfers from it. A variant with `clean_from: other` trains on the
splits `stack.py clean` writes from the other variant's out-of-fold probabilities in the same seed
(`{split}_clean_{other}{seed}`: train parts without cleanlab's flagged rows, held-out parts byte for byte, so the
two are scored on the same rows with the labels as given). The flagged rows come from all K folds' out-of-fold
predictions, so fold k's held-out labels had a say in which rows of the other folds fold k's run drops: the
cleaning is not nested, as the ACCV 2022 winner's was not. The dataset and folds are the recipe's (made with the
recipe's seed, as `make demo` and `make ablation` make them); a seed changes the runs' initialisation, batch
order and augmentation, and the baselines' LightGBM seed.

Each step is one of the project's CLIs (launch.py fold0123, evaluate.py --soup / --epoch, -m fold0123.baselines),
run as a user would; a step whose outputs exist is skipped without starting anything (the launcher's own plan
decides: a stale run stops with its message, or with --redo-stale trains again), so a rerun adds only what is
missing. Wall-clock per step goes to `{out_dir}/timings.json` (`seed S: {variant}`), measured only when the step
did work (a skipped step keeps its earlier seconds).

Scores: each fold run's `eval/{tag}_metrics.json`, the task's primary metric on its primary view (the 8-view mean
but for clip) over the fold's held-out rows. Rows and claims are the ablation table's (ablation.table: Row,
merge_seeds, judge, RULE): one claim per variant but the base ("{variant} beats {against}", against: the base
unless the variant names another) and "the best variant beats the pixel-statistics LightGBM". For a metric where
higher is better (accuracy) the claim is judged on the negated score, so a negative difference always favours
the variant, as a negative RMSE difference does.
"""
from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from fold0123.ablation.run import Timer, link_cache
from fold0123.ablation.table import RULE, Claim, Row, baseline_rows, claims_table, judge, merge_seeds
from fold0123.common import rundir
from fold0123.common.config import key_values, load_config
from fold0123.common.dataroot import split_paths
from fold0123.common.errors import Fold0123Error, UsageError
from fold0123.common.io import write_json, write_text
from fold0123.common.schema import RecipeAblationConfig, RecipeConfig, RunConfig
from fold0123.launcher.layout import LaunchOptions, evaluation_device, plan_fold0123
from fold0123.launcher.recipe import (CpuClock, baseline_bag, build_dataset, launch, make_folds, make_tag_vectors,
                                      run_cli, run_sets, soup_is_current, stage)
from fold0123.reports.html import fmt
from fold0123.stacking.runs import EMA_RE, choice_metrics, fold_splits, resolve_epoch, run_dir, soup_size

# the baselines' rows in the table: baselines.json's row id (ablation.table.baseline_rows) -> the row's id here
BASELINES = {"1": "constant", "2": "pixel_lgbm"}
BEST_CLAIM = "the best variant beats the pixel-statistics LightGBM"


# ------------------------------------------------------------------------------------------------- the plan

def base_recipe(cfg: RecipeAblationConfig) -> RecipeConfig:
    """The recipe with `recipe_set`: its dataset, dataroot, folds (made with its seed) and devices."""
    return load_config(cfg.recipe, key_values(cfg.recipe_set), schema=RecipeConfig)


def seed_runs(cfg: RecipeAblationConfig, seed: int) -> Path:
    return Path(cfg.runs_dir) / f"seed{seed}"


def seed_recipe(cfg: RecipeAblationConfig, seed: int) -> RecipeConfig:
    """The recipe that trains seed `seed`: its runs' seed and checkpoints_dir moved (recipe.overrides passes them
    on to every run)."""
    sets = [*key_values(cfg.recipe_set), f"seed={seed}", f"checkpoints_dir={seed_runs(cfg, seed)}"]
    return load_config(cfg.recipe, sets, schema=RecipeConfig)


def source(cfg: RecipeAblationConfig, name: str) -> str:
    """The variant whose runs `name` is scored on: its `runs`, or itself."""
    return cfg.variants[name].runs or name


def readers(cfg: RecipeAblationConfig, name: str) -> list[str]:
    """The variants scored on the runs of the training variant `name` (itself first)."""
    return [n for n in cfg.variants if source(cfg, n) == name]


def pretext_exp(name: str) -> str:
    """The experiment of variant `name`'s pretext run (on split all, in the seed's runs)."""
    return f"{name}_pretext"


def clean_suffix(name: str, seed: int) -> str:
    """The split suffix of the splits cleaned from variant `name`'s seed-`seed` runs."""
    return f"_clean_{name}{seed}"


def variant_splits(cfg: RecipeAblationConfig, name: str, k: int, seed: int) -> list[str]:
    """The fold splits variant `name`'s runs train on: the recipe's, or those cleaned for it (`clean_from`)."""
    cleaned = cfg.variants[source(cfg, name)].clean_from
    return fold_splits(k, clean_suffix(cleaned, seed) if cleaned else "")


def variant_sets(cfg: RecipeAblationConfig, name: str, recipe: RecipeConfig) -> list[str]:
    """The training variant's overrides of the task config: task_set, its set, its exp, the transfer from its
    pretext, and `keep_last` raised to the largest soup its readers score (a soup needs that many epochs')."""
    sets = [*cfg.task_set, *cfg.variants[name].set, f"exp={name}"]
    if cfg.variants[name].pretext:
        sets.append(f"transfer_from={pretext_exp(name)}_all")
    soups = [soup_size(cfg.variants[n].epoch) or 0 for n in readers(cfg, name)]
    keep = load_config(cfg.task, [*sets, *run_sets(recipe)], schema=RunConfig).keep_last
    if max(soups) > keep > 0:
        sets.append(f"keep_last={max(soups)}")
    return sets


def variant_config(cfg: RecipeAblationConfig, name: str, recipe: RecipeConfig) -> RunConfig:
    """The training variant's resolved config, as its runs get it (a typo in a variant's set stops here)."""
    return load_config(cfg.task, [*variant_sets(cfg, name, recipe), *run_sets(recipe)], schema=RunConfig)


def describe(cfg: RecipeAblationConfig, name: str) -> str:
    """What the row is: its sets (or the task config as it is), its epoch, whose runs."""
    variant = cfg.variants[name]
    what = " ".join(variant.set) if variant.set else (f"{variant.runs}'s runs" if variant.runs else "the task config")
    if variant.pretext:
        what += f", from its {Path(variant.pretext).stem} pretext"
    if variant.clean_from:
        what += f", on the splits cleaned from {variant.clean_from}'s out-of-fold probabilities"
    return f"{what} @ {variant.epoch}"


def selected(cfg: RecipeAblationConfig, names: list[str] | None) -> list[str]:
    """The variants `--variants` asks for (None: every one), with the base and the variants they read or compare
    with, in the config's order; an unknown name is a one-line UsageError listing them."""
    if names is None:
        return list(cfg.variants)
    wanted = {n.strip() for value in names for n in value.split(",") if n.strip()}
    unknown = sorted(wanted - set(cfg.variants))
    if unknown or not wanted:
        raise UsageError(f"--variants: unknown variant {unknown[0]!r} (the variants: {', '.join(cfg.variants)})"
                         if unknown else f"--variants: no variant named (the variants: {', '.join(cfg.variants)})")
    wanted.add(cfg.base_variant)
    for name in list(wanted):
        variant = cfg.variants[name]
        wanted |= {variant.runs or name, variant.against or cfg.base_variant, variant.clean_from or name}
    return [n for n in cfg.variants if n in wanted]


def timing_key(seed: int, step: str) -> str:
    return f"seed {seed}: {step}"


def baselines_dir(cfg: RecipeAblationConfig, seed: int) -> Path:
    return Path(cfg.out_dir) / "baselines" / f"seed{seed}"


def baselines_json(folder: Path) -> Path | None:
    """The baselines' report in `folder` (a classification competition's: class_baselines.json), if any."""
    found = [folder / name for name in ("baselines.json", "class_baselines.json") if (folder / name).is_file()]
    return found[0] if found else None


# ------------------------------------------------------------------------------------------------- running

def run_recipe_rows(cfg: RecipeAblationConfig, meta: dict, redo_stale: bool = False,
                    variants: list[str] | None = None) -> dict:
    """Every step for every seed (skipping what exists), then the table; returns results.json's content.
    `variants`: only these (with what they need: `selected`); the table still reads every row it finds."""
    names = selected(cfg, variants)
    clashes = sorted(set(cfg.variants) & set(BASELINES.values()))
    if clashes:
        raise UsageError(f"variant {clashes[0]!r}: the name of a baseline row ({', '.join(BASELINES.values())})")
    clock, wall = CpuClock(), time.time()
    recipe = base_recipe(cfg)
    timer = Timer(Path(cfg.out_dir) / "timings.json")
    build_dataset(recipe, redo_stale)
    make_folds(recipe, redo_stale)
    if load_config(cfg.task, run_sets(recipe), schema=RunConfig).task == "materialstechniques":
        make_tag_vectors(recipe, redo_stale)
    for seed in cfg.seeds:  # every variant's config is checked before anything trains
        for name in names:
            if cfg.variants[name].runs is None:
                variant_config(cfg, name, seed_recipe(cfg, seed))
    for i, seed in enumerate(cfg.seeds):
        stage(f"seed {seed} ({i + 1} of {len(cfg.seeds)})")
        run_seed(cfg, seed, timer, redo_stale, names)
    stage("the table")
    results = write_table(cfg, {**meta, "wall_seconds": time.time() - wall})
    print(markdown(results))
    print(clock.report())
    return results


def run_seed(cfg: RecipeAblationConfig, seed: int, timer: Timer, redo_stale: bool = False,
             names: list[str] | None = None) -> None:
    """Seed `seed`'s baselines, the training variants among `names` (default: all), then the evaluations the
    variants' epochs need beyond their watchers'."""
    names = list(cfg.variants) if names is None else names
    recipe = seed_recipe(cfg, seed)
    link_cache(seed_runs(cfg, seed), Path(cfg.runs_dir))
    splits = fold_splits(recipe.folds)
    if cfg.baselines:
        run_baselines(cfg, recipe, seed, timer)
    for name in sorted(names, key=lambda n: cfg.variants[n].clean_from is not None):  # what they clean from first
        variant = cfg.variants[name]
        if variant.runs is not None:
            continue
        if variant.pretext:
            train_pretext(cfg, name, recipe, seed, timer, redo_stale)
        if variant.clean_from:
            clean_splits(cfg, name, recipe, seed, timer)
        train_variant(cfg, name, recipe, seed, timer, redo_stale)
    for name in names:  # the soups and epochs the watcher did not evaluate
        variant = cfg.variants[name]
        splits = variant_splits(cfg, name, recipe.folds, seed)
        runs = [run_dir(seed_runs(cfg, seed), source(cfg, name), split) for split in splits]
        todo = evaluation_args(runs, variant.epoch, evaluation_device(recipe.devices))
        if todo:
            stage(f"evaluate {name} (seed {seed}): {variant.epoch}")
            timer.run(timing_key(seed, f"{name} evaluation"), lambda: [run_cli(*args) for args in todo])


def train_variant(cfg: RecipeAblationConfig, name: str, recipe: RecipeConfig, seed: int, timer: Timer,
                  redo_stale: bool) -> None:
    """The variant's K fold runs through the launcher (side by side, each with its watcher), when its plan has
    rows: a run that is DONE and evaluated is skipped, an interrupted one resumes, a stale one stops the driver
    (or with `redo_stale` trains again)."""
    sets = variant_sets(cfg, name, recipe)
    splits = variant_splits(cfg, name, recipe.folds, seed)
    plan = plan_fold0123(cfg.task, LaunchOptions(devices=recipe.devices, overrides=(*sets, *run_sets(recipe)),
                                                 splits=tuple(splits), redo_stale=redo_stale, verbose=False))
    if not plan.rows:
        print(f"{name} (seed {seed}): its {len(splits)} fold runs are DONE and evaluated: skipped")
        return
    stage(f"variant {name} (seed {seed}): {' '.join(sets)}")
    session = f"rows_{cfg.exp}_{name}_{seed}".replace(".", "_")  # tmux: presets side by side never share one
    args = ["--splits", ",".join(splits), "--session", session, *(a for s in sets for a in ("--set", s))]
    timer.run(timing_key(seed, name), launch, recipe, cfg.task, redo_stale, *args)


def train_pretext(cfg: RecipeAblationConfig, name: str, recipe: RecipeConfig, seed: int, timer: Timer,
                  redo_stale: bool) -> None:
    """Variant `name`'s pretext on split all (`{name}_pretext_all`), through the launcher as the recipe's is;
    skipped by the launcher's plan when it is DONE and evaluated."""
    variant = cfg.variants[name]
    sets = [*variant.pretext_set, f"exp={pretext_exp(name)}"]
    stage(f"pretext of {name} (seed {seed}): {variant.pretext} {' '.join(sets)}")
    session = f"pretext_{cfg.exp}_{name}_{seed}".replace(".", "_")
    timer.run(timing_key(seed, f"{name} pretext"), launch, recipe, variant.pretext, redo_stale, "--splits", "all",
              "--session", session, *(a for s in sets for a in ("--set", s)))


def clean_splits(cfg: RecipeAblationConfig, name: str, recipe: RecipeConfig, seed: int, timer: Timer) -> None:
    """`stack.py clean` on the runs of variant `name`'s clean_from (at its epoch): the split files its runs train
    on. Rewritten each time from the same runs, so its runs' fingerprints (by content) stay."""
    source_name = cfg.variants[name].clean_from
    epoch = cfg.variants[source_name].epoch
    sets = [f"dataroot={recipe.dataroot}", f"folds={recipe.folds}", f"checkpoints_dir={seed_runs(cfg, seed)}",
            f"runs={{{source_name}: {epoch}}}", f"clean.exp={source_name}",
            f"clean.suffix={clean_suffix(source_name, seed)}", f"out_dir={Path(cfg.out_dir) / 'clean' / f'seed{seed}'}"]
    stage(f"clean the labels for {name} (seed {seed}): from {source_name}'s out-of-fold probabilities")
    timer.run(timing_key(seed, f"{name} cleaning"), run_cli, "stack.py", "clean", "--conf", "parameters/stack.yml",
              *(a for s in sets for a in ("--set", s)))


def evaluation_flags(run: Path, epoch) -> tuple[str, ...]:
    """evaluate.py's flags for what `epoch` needs of the finished `run` beyond what its watcher evaluated: a soup
    not made (or made before the run's last epoch), an epoch (or its EMA) not evaluated; () when nothing."""
    n = soup_size(epoch)
    if n is not None:
        return () if soup_is_current(run, n) else ("--soup", str(n))
    ema = EMA_RE.match(epoch) if isinstance(epoch, str) else None
    number = int(ema.group(1)) if ema and ema.group(1) else epoch if isinstance(epoch, int) else None
    if number is None or rundir.is_evaluated(run, number, ema=bool(ema)):
        return ()  # last, ema: the watcher evaluates the last epoch (and its EMA)
    return ("--epoch", str(number))


def evaluation_args(runs: list[Path], epoch, device: str) -> list[list[str]]:
    """evaluate.py's argument lists for what `epoch` needs of `runs`: one per need, naming every run that has it
    (one process for them all: torch loads once, not once per run); [] when nothing."""
    needs: dict[tuple[str, ...], list[str]] = {}
    for run in runs:
        if flags := evaluation_flags(run, epoch):
            needs.setdefault(flags, []).append(str(run))
    return [["evaluate.py", "--run", *paths, *flags, "--device", device] for flags, paths in needs.items()]


def run_baselines(cfg: RecipeAblationConfig, recipe: RecipeConfig, seed: int, timer: Timer) -> None:
    """The constant and pixel-statistics LightGBM on the same folds, LightGBM seed `seed`, bagged as the recipe's
    stack is; skipped when its report is newer than every split file (one pixel-feature cache for every seed)."""
    out = baselines_dir(cfg, seed)
    report = baselines_json(out)
    folds = [p for s in [*fold_splits(recipe.folds), "all"] for p in split_paths(recipe.dataroot, s)]
    if report and all(p.is_file() and p.stat().st_mtime <= report.stat().st_mtime for p in folds):
        print(f"{report}: newer than the split files: skipped")
        return
    stage(f"baselines (seed {seed})")
    timer.run(timing_key(seed, "baselines"), run_cli, "-m", "fold0123.baselines", "--dataroot", recipe.dataroot,
              "--folds", str(recipe.folds), "--seed", str(seed), "--out", str(out), *baseline_bag(recipe),
              "--pixel-cache", str(Path(cfg.out_dir) / "baselines" / "pixel_stats.csv"))


# ------------------------------------------------------------------------------------------------- the table

def variant_row(cfg: RecipeAblationConfig, name: str, seed: int, k: int, seconds: float | None) -> tuple[Row, dict]:
    """Seed `seed`'s row of variant `name` (its fold scores at its epoch) and {metric, lower_is_better}; a
    missing run or evaluation is a row with a note."""
    variant, splits = cfg.variants[name], variant_splits(cfg, name, k, seed)
    try:
        ckpt, exp = seed_runs(cfg, seed), source(cfg, name)
        table = choice_metrics(ckpt, exp, splits, resolve_epoch(ckpt, exp, splits, variant.epoch))
    except (Fold0123Error, OSError) as err:
        return Row(name, describe(cfg, name), "variant", note=f"not measured: {' '.join(str(err).split())[:160]}"), {}
    what = {"metric": str(table["metric"].iloc[0]), "lower_is_better": bool(table["lower_is_better"].iloc[0])}
    return Row.scored(name, describe(cfg, name), "variant", table["value"].tolist(), seconds=seconds,
                      seed=seed), what


def collect_seed(cfg: RecipeAblationConfig, seed: int, k: int, timings: dict) -> tuple[list[Row], dict]:
    """One seed's rows (the variants', then the baselines') and the metric the variants were scored by."""
    rows, metric = [], {}
    for name in cfg.variants:  # its runs' training (and their watchers'), then its own evaluation beyond that
        trained = timings.get(timing_key(seed, source(cfg, name)))
        # its own inputs count: the pretext it transfers from, the cleaning of its splits
        inputs = sum(timings.get(timing_key(seed, f"{source(cfg, name)} {step}"), 0.0)
                     for step in ("pretext", "cleaning"))
        seconds = None if trained is None else (trained + inputs
                                                + timings.get(timing_key(seed, f"{name} evaluation"), 0.0))
        row, what = variant_row(cfg, name, seed, k, seconds)
        rows.append(row)
        metric = metric or what
    report = baselines_json(baselines_dir(cfg, seed))
    if report is not None:
        for row in baseline_rows(report):
            if row.id in BASELINES:
                rows.append(Row.scored(BASELINES[row.id], row.name, "baseline", row.folds, seconds=row.seconds,
                                       note=row.note.split(";")[0] if not row.folds else "", seed=seed))
    elif cfg.baselines:
        rows += [Row(id, id, "baseline", note="not measured: no baselines report") for id in BASELINES.values()]
    return rows, metric


def judged(claim: str, first: Row | None, second: Row | None, lower_is_better: bool, seeds: list[int],
           key: str, note: str = "") -> Claim:
    """ablation.table.judge of "first beats second" in the metric's direction: for a higher-is-better metric
    the rows are given to judge the other way round (d = second - first, the negated score's difference), so a
    negative difference always favours `first`; the cost is first's seconds minus second's."""
    cost = (first.seconds - second.seconds if first is not None and second is not None
            and first.seconds is not None and second.seconds is not None else None)
    if lower_is_better:
        return judge(claim, first, second, cost, note, seeds, key)
    out = judge(claim, second, first, cost, note, seeds, key)
    out.rows = out.rows[::-1]
    return out


def recipe_claims(cfg: RecipeAblationConfig, rows: dict[str, Row], lower_is_better: bool) -> list[Claim]:
    """One claim per variant but the base (against the base, or the variant it names), and the best variant
    (chosen on the same CV: optimistic) against the pixel-statistics LightGBM."""
    out = []
    for name, variant in cfg.variants.items():
        if name == cfg.base_variant and variant.against is None:
            continue
        against = variant.against or cfg.base_variant
        out.append(judged(variant.claim or f"{name} beats {against}", rows.get(name), rows.get(against),
                          lower_is_better, cfg.seeds, name))
    measured = [rows[n] for n in cfg.variants if n in rows and rows[n].folds]
    sign = 1 if lower_is_better else -1
    best = min(measured, key=lambda r: sign * r.cv_mean) if measured else None
    if cfg.baselines:
        out.append(judged(BEST_CLAIM, best, rows.get(BASELINES["2"]), lower_is_better, cfg.seeds, "baseline",
                          note=f"best variant: {best.id}, chosen on the same CV (optimistic)" if best else ""))
    return out


def write_table(cfg: RecipeAblationConfig, meta: dict) -> dict:
    """results.json and RESULTS.md in out_dir from what the steps left; returns the results."""
    out = Path(cfg.out_dir)
    recipe = base_recipe(cfg)
    timings_path = out / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    per_seed, metric = {}, {}
    for seed in cfg.seeds:
        per_seed[seed], found = collect_seed(cfg, seed, recipe.folds, timings)
        metric = metric or found
    rows = merge_seeds(per_seed, cfg.seeds)
    spent = [sum(v for key, v in timings.items() if key.startswith(timing_key(seed, ""))) for seed in cfg.seeds]
    lower = metric.get("lower_is_better", True)
    claim_list = recipe_claims(cfg, {r.id: r for r in rows}, lower)
    results = {**meta, "seeds": list(cfg.seeds), "dataroot": recipe.dataroot, "folds": recipe.folds,
               "task": cfg.task, "task_set": list(cfg.task_set), "base": cfg.base_variant,
               "metric": metric.get("metric"), "lower_is_better": lower, "seconds_per_seed": float(np.mean(spent)),
               "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, devices {recipe.devices}",
               "rows": [asdict(r) for r in rows], "claims": [asdict(c) for c in claim_list]}
    write_json(out / "results.json", results)
    write_text(out / "RESULTS.md", markdown(results))
    return results


def markdown(results: dict) -> str:
    k = results["folds"]
    metric, lower = results.get("metric") or "the primary metric", results["lower_is_better"]
    wall = results.get("wall_seconds")
    task_set = " ".join(results["task_set"]) or "nothing"
    lines = [f"# {results['title']}", "",
             f"`{results['command']}` (preset `{results['preset']}`; task `{results['task']}` with {task_set} "
             f"first; dataroot `{results['dataroot']}`, {k} folds; seeds {results['seeds']}). Machine: "
             f"{results['machine']}." + (f" This invocation: {wall / 60:.1f} min wall-clock." if wall else ""), "",
             f"Score: {metric} ({'lower' if lower else 'higher'} is better) of each fold run's primary view (the "
             "8-view mean) on the fold's held-out rows (eval/{tag}_metrics.json; no `all` run, no answers). CV = "
             "mean over seeds x folds ± std of the per-seed CV means (the run-to-run spread; none with one seed); "
             "fold std = the std over folds within a seed, averaged over seeds; the fold columns are averaged over "
             "the seeds. Seconds: wall-clock per seed (mean over the seeds) of the variant's step, its K fold runs "
             "side by side with their evaluation (a variant reading another's runs: that variant's seconds plus "
             "its own evaluation); the baselines': their own fit, features included. Every step of a seed: "
             f"{results['seconds_per_seed'] / 60:.1f} min (mean over the seeds, timings.json).", "",
             "| row | what | CV mean ± std over seeds | fold std | " + " | ".join(f"fold {i}" for i in range(k))
             + " | seconds | note |",
             "|---|---|---|---|" + "---|" * k + "---|---|"]
    for r in results["rows"]:
        cv = "–" if r["cv_mean"] is None else f"{r['cv_mean']:.4f}" + (
            "" if r.get("seed_std") is None else f" ± {r['seed_std']:.4f}")
        folds = list(r.get("folds") or []) + [None] * (k - len(r.get("folds") or []))
        base = " (base)" if r["id"] == results["base"] else ""
        lines.append(f"| {r['id']}{base} | {r['name']} | {cv} | {fmt(r['cv_std'])} | "
                     + " | ".join(fmt(f) for f in folds[:k]) + f" | {fmt(r['seconds'], 0)} | {r['note']} |")
    direction = ("" if lower else f" {metric} is higher-is-better, so d is taken on the negated score: a negative "
                 "mean difference favours the first row here too.")
    lines += ["", "## Claims", "", RULE + direction, "", *claims_table(results["claims"])]
    return "\n".join(lines) + "\n"

