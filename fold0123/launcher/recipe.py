"""The main job's stages (recipe.py, and the ablation driver that extends it): each runs one of the project's
own CLIs as a subprocess, exactly as a user would type it, and skips what exists and was made as asked now.

dataset -> folds -> tag vectors -> jigsaw pretext on `all` -> fold0123 per transfer task -> the soups the stack
names (`runs: {target: soup5}`) -> stacking -> report.
Outputs made by another config or from other inputs (their fingerprints, common.fingerprint) stop a stage with
one line naming what differs, or with `redo_stale` are redone.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from fold0123.common import rundir
from fold0123.common.competition_spec import read_spec
from fold0123.common.config import ConfigError, load_config, set_args
from fold0123.common.errors import Fold0123Error
from fold0123.common.dataroot import (folds_fingerprint_path, split_names, split_paths, tag_vectors_fingerprint_path,
                                      tag_vectors_path)
from fold0123.common.fingerprint import (Fingerprint, StaleError, differences, folds_fingerprint, read_fingerprint,
                                         stale_message, tag_vectors_fingerprint)
from fold0123.common.schema import RecipeConfig, RunConfig, StackConfig
from fold0123.launcher.layout import evaluation_device

ROOT = Path(__file__).resolve().parents[2]  # the checkout: the CLIs run from there


def _cpu_ticks() -> tuple[int, int] | None:
    """(busy, total) ticks of the machine's CPUs since boot, from /proc/stat; None where there is none."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except OSError:
        return None
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


@dataclass
class CpuClock:
    """Wall-clock and the share of it the machine's CPUs were busy (from /proc/stat), for the benchmark."""
    start_wall: float = field(default_factory=time.time)
    start_ticks: tuple[int, int] | None = field(default_factory=_cpu_ticks)

    def report(self) -> str:
        minutes = (time.time() - self.start_wall) / 60
        end = _cpu_ticks()
        if self.start_ticks is None or end is None or end[1] == self.start_ticks[1]:
            return f"{minutes:.1f} min wall-clock"
        busy = (end[0] - self.start_ticks[0]) / (end[1] - self.start_ticks[1])
        return f"{minutes:.1f} min wall-clock, CPU busy {100 * busy:.0f}% of it ({os.cpu_count()} cores)"


def stage(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


class StageError(Fold0123Error):
    """A stage's CLI exited non-zero (it printed why above)."""


def run_cli(*args: str, echo: bool = True) -> None:
    """Run one of the project's CLIs as a user would type it; StageError naming it when it fails."""
    if echo:
        print("$ " + " ".join(args), flush=True)
    done = subprocess.run([sys.executable, *args], cwd=ROOT)
    if done.returncode:
        raise StageError(f"stage failed: {' '.join(map(str, args))} (exit {done.returncode})")


def build_dataset(cfg: RecipeConfig, redo_stale: bool = False) -> None:
    """`dataset: emoji` builds (or reuses) the bundled dataset at `dataroot`, with the test objects' tags in the
    dataroot only when `test_tags` is true; a build made the other way stops the recipe, or with --redo-stale is
    rebuilt (its photos keep their times, so only what reads the tag tables becomes stale). `dataset:
    emoji_classify` builds the classification benchmark as a competition ships it (ImageFolder, beside the
    dataroot: `{dataroot}_raw`) and turns it into the dataroot with the ImageFolder adapter. `dataset: null`
    takes the dataroot as it is, e.g. a competition's own data in the project's layout (`test_tags` unused)."""
    stage("dataset")
    if cfg.dataset is None:
        print(f"using {cfg.dataroot} as it is (dataset: null)")
        return
    if cfg.dataset == "emoji_classify":  # the builder reuses a build (and adapted dataroot) made as asked
        private = str(Path(cfg.answers).parent) if cfg.answers else f"{cfg.dataroot}_private"
        run_cli("-m", "fold0123.preprocessing.emoji_classify", "--out", f"{cfg.dataroot}_raw", "--private", private,
                "--dataroot", cfg.dataroot)
        return
    run_cli("-m", "fold0123.preprocessing.emoji", "--out", cfg.dataroot, *(["--test-tags"] if cfg.test_tags else []),
            *(["--redo-stale"] if redo_stale else []))


def shared(cfg: RecipeConfig) -> list[str]:
    """RecipeConfig.overrides as --set arguments."""
    return set_args(cfg.overrides())


def run_sets(cfg: RecipeConfig) -> list[str]:
    """What every training run takes from the recipe (`key=value`, after a run's own overrides, so it wins): the
    shared keys, the tag vectors' dimension and the recipe's `run_set`."""
    return [*cfg.overrides(), *([f"w2v_dim={cfg.word2vec.dim}"] if cfg.word2vec else []), *cfg.run_set]


def run_overrides(cfg: RecipeConfig) -> list[str]:
    """run_sets as --set arguments."""
    return set_args(run_sets(cfg))


def stack_args(cfg: RecipeConfig, *overrides: str) -> list[str]:
    """stack.py's arguments: the recipe's stacking config, dataroot and answers (scored in its report)."""
    answers = "null" if cfg.answers is None else cfg.answers
    return ["--conf", cfg.stack, *shared(cfg), "--set", f"answers={answers}",
            *set_args(overrides)]


def reusable(what: str, fingerprint_file: Path, expected: Fingerprint, outputs: list[Path], redo_stale: bool) -> bool:
    """Whether a stage's outputs exist and were made as asked now; a stale one is an error, or redone."""
    if not all(p.is_file() for p in outputs):
        return False
    reasons = differences(read_fingerprint(fingerprint_file), expected)
    if not reasons:
        print(f"{what} exist and are up to date: skipped")
        return True
    if not redo_stale:
        raise StaleError(stale_message(what, reasons))
    print(f"{what} are stale ({'; '.join(reasons)}): made again")
    return False


def make_folds(cfg: RecipeConfig, redo_stale: bool = False) -> None:
    stage("folds")
    wanted = [p for s in split_names(cfg.folds) for p in split_paths(cfg.dataroot, s)]
    expected = folds_fingerprint(cfg.dataroot, cfg.folds, cfg.fold_batch_size, cfg.seed)
    if reusable(f"folds in {cfg.dataroot}", folds_fingerprint_path(cfg.dataroot, cfg.folds), expected, wanted,
                redo_stale):
        return
    run_cli("SGKFold.py", "--dataroot", cfg.dataroot, "--k", str(cfg.folds),
            "--batch-size", str(cfg.fold_batch_size), "--seed", str(cfg.seed))


def make_tag_vectors(cfg: RecipeConfig, redo_stale: bool = False) -> None:
    stage("tag vectors")
    w2v = cfg.word2vec
    if w2v is None:
        print("no tag vectors (word2vec: null)")
        return
    expected = tag_vectors_fingerprint(cfg.dataroot, w2v.dim, w2v.epochs, cfg.seed)
    if reusable("tag vectors", tag_vectors_fingerprint_path(cfg.dataroot, w2v.dim), expected,
                [tag_vectors_path(cfg.dataroot, w2v.dim)], redo_stale):
        return
    run_cli("word2vec.py", "--dataroot", cfg.dataroot, "--dim", str(w2v.dim),
            "--epochs", str(w2v.epochs), "--seed", str(cfg.seed))


def launch(cfg: RecipeConfig, conf: str, redo_stale: bool, *args: str) -> None:
    """One experiment's fold0123 through the launcher, which skips finished runs, resumes interrupted ones and
    refuses (or with --redo-stale retrains) stale ones. Its session closes as soon as its rows end: the recipe
    prints their summary itself, and the next stage's session opens (`--linger 0`)."""
    run_cli("launch.py", "fold0123", "--conf", conf, "--devices", cfg.devices, "--wait", "--linger", "0", *args,
            *run_overrides(cfg), *(["--redo-stale"] if redo_stale else []))


def pretext(cfg: RecipeConfig, redo_stale: bool = False) -> None:
    """The jigsaw run on split `all` (none with `pretext: null`)."""
    if cfg.pretext is None:
        return
    stage(f"pretext: {cfg.pretext} on split all")
    launch(cfg, cfg.pretext, redo_stale, "--splits", "all")


def trained_splits(cfg: RecipeConfig, suffix: str = "") -> list[str]:
    """The splits every task trains (`{split}{suffix}`): the k folds, and `all` unless nothing reads it. A stack
    whose test rows come from the fold runs' mean (`test_features: fold_mean`, and `ensemble.test_features`, which
    the classification ensemble and the pseudo labels read) needs no `all` run: 1/(k+1) of the training saved."""
    stack_cfg = load_config(cfg.stack, cfg.overrides(), schema=StackConfig)
    reads_all = "all" in (stack_cfg.test_features, stack_cfg.ensemble.test_features)
    return [s + suffix for s in split_names(cfg.folds) if reads_all or s != "all"]


def check_stacked_runs(cfg: RecipeConfig) -> None:
    """Refuse, before any training, a stack that reads an experiment no task of the recipe trains and no earlier
    run left in its checkpoints folder: stack.py would find out only after every run had trained. The stack reads
    `runs` (a classification competition: `ensemble.runs`), so a recipe whose `tasks` drop one (the demo's three)
    must drop it there too (`runs: {_delete_: true, ...}`)."""
    stack_cfg = load_config(cfg.stack, cfg.overrides(), schema=StackConfig)
    key, runs = (("ensemble.runs", stack_cfg.ensemble.runs) if read_spec(cfg.dataroot).kind == "classification"
                 else ("runs", stack_cfg.runs))
    trained = [load_config(conf, run_sets(cfg), schema=RunConfig).exp for conf in cfg.tasks]
    checkpoints, split = Path(stack_cfg.checkpoints_dir), trained_splits(cfg)[0]
    missing = [exp for exp in runs if exp not in trained and not (checkpoints / f"{exp}_{split}").is_dir()]
    if missing:
        left = ", ".join(str(checkpoints / f"{exp}_{split}") for exp in missing)
        raise ConfigError(f"{cfg.stack}: key '{key}' names {', '.join(missing)}, which no task of the recipe trains "
                          f"({', '.join(trained)}) and no earlier run left ({left}): add its task to the recipe's "
                          f"tasks or drop it from {key}")


def fold0123(cfg: RecipeConfig, redo_stale: bool = False) -> None:
    splits = ",".join(trained_splits(cfg))
    for conf in cfg.tasks:
        stage(f"fold0123: {conf}")
        launch(cfg, conf, redo_stale, "--splits", splits)


def soups_named(stack_cfg: StackConfig) -> dict[str, set[int]]:
    """exp -> the N of each `soup{N}` the stack config chooses for it (in `runs` or `ensemble.runs`)."""
    soups: dict[str, set[int]] = {}
    for runs in (stack_cfg.runs, stack_cfg.ensemble.runs):
        for exp, spec in runs.items():
            if isinstance(spec, str) and spec.startswith("soup"):
                soups.setdefault(exp, set()).add(int(spec[len("soup"):]))
    return soups


def soup_is_current(run: Path, n: int) -> bool:
    """Whether `run`'s soup of its last `n` epochs is evaluated and souped up to the run's last epoch (a run
    extended since, or re-trained, needs a new one)."""
    try:
        souped = rundir.read_metrics(run, f"soup{n}")["epoch"]
    except rundir.RunError:
        return False
    found = rundir.list_checkpoints(run)
    return bool(found) and souped == found[-1][0]


def make_soups(cfg: RecipeConfig, split_suffix: str = "") -> None:
    """`evaluate.py --soup N` on every split's run of each experiment the stack names as `soup{N}` (stacking
    reads eval/soup{N}_*), skipping soups that are current."""
    stack_cfg = load_config(cfg.stack, cfg.overrides(), schema=StackConfig)
    device = evaluation_device(cfg.devices)
    splits = trained_splits(cfg, split_suffix)
    for exp, sizes in sorted(soups_named(stack_cfg).items()):
        for n in sorted(sizes):
            runs = []
            for split in splits:
                run = Path(stack_cfg.checkpoints_dir) / f"{exp}_{split}"
                if soup_is_current(run, n):
                    print(f"{run}: soup{n} is up to date: skipped")
                else:
                    runs.append(str(run))
            if runs:  # one process for the experiment's runs: torch loads once
                run_cli("evaluate.py", "--run", *runs, "--soup", str(n), "--device", device)


def stack(cfg: RecipeConfig) -> None:
    stage(f"stacking: {cfg.stack}")
    make_soups(cfg)
    run_cli("stack.py", *stack_args(cfg))


def retrain_and_stack(cfg: RecipeConfig, suffix: str, redo_stale: bool = False) -> None:
    """A round after the first stack: every task trained again on the splits `{split}{suffix}` that the round
    wrote, its soups, and its stack (`split_suffix`)."""
    splits = ",".join(trained_splits(cfg, suffix))
    for conf in cfg.tasks:
        launch(cfg, conf, redo_stale, "--splits", splits)
    make_soups(cfg, suffix)
    run_cli("stack.py", *stack_args(cfg, f"split_suffix={suffix}"))


def pseudo_label_rounds(cfg: RecipeConfig, redo_stale: bool = False) -> None:
    """Each round: confident test predictions of the last round's runs become train rows (stack.py pseudo), the
    tasks are trained again on the round's splits ({split}_pseudo{r}), and the round is stacked like any other."""
    for r in range(1, cfg.pseudo_rounds + 1):
        previous, suffix = ("" if r == 1 else f"_pseudo{r - 1}"), f"_pseudo{r}"
        stage(f"pseudo-label round {r}")
        run_cli("stack.py", "pseudo", "--round", str(r), *stack_args(cfg, f"split_suffix={previous}"))
        retrain_and_stack(cfg, suffix, redo_stale)


def cleaned_round(cfg: RecipeConfig, redo_stale: bool = False) -> None:
    """With `clean`: the labels cleanlab flags on the stack's `clean.exp` out-of-fold probabilities are dropped
    from every fold's train part (stack.py clean, the ACCV winners' cleaned train.txt), every task is trained again
    on those splits ({split}_clean; the held-out parts are unchanged, so the round is scored on the same rows)
    and stacked like any other round."""
    if not cfg.clean:
        return
    stage("label cleaning")
    suffix = load_config(cfg.stack, [], schema=StackConfig).clean.suffix
    run_cli("stack.py", "clean", *stack_args(cfg))
    retrain_and_stack(cfg, suffix, redo_stale)


def baselines(cfg: RecipeConfig) -> None:
    """With `baselines: true`, the simple baselines on the same folds and answers (a classification competition's:
    majority class and a multiclass pixel-statistics LightGBM; otherwise the constant and the regression one)."""
    if not cfg.baselines:
        return
    stage("baselines")
    run_cli("-m", "fold0123.baselines", "--dataroot", cfg.dataroot, "--folds", str(cfg.folds),
            "--threads", "2", *baseline_bag(cfg), *(["--answers", cfg.answers] if cfg.answers else []))


def baseline_bag(cfg: RecipeConfig) -> list[str]:
    """The baselines' --bag: the recipe's stack's `lgbm.bag`, so that their LightGBMs are averaged over as many
    seeds as the stack they are compared with."""
    return ["--bag", str(load_config(cfg.stack, cfg.overrides(), schema=StackConfig).lgbm.bag)]


def score_and_where(cfg: RecipeConfig) -> None:
    """Score the newest submission on the held-out answers (the answers CLI is their only reader, and the
    dataroot's spec says the metric) and say where things are."""
    stage("submission score and where things are")
    out_dir = load_config(cfg.stack, cfg.overrides(), schema=StackConfig).out_dir
    run_cli("-m", "fold0123.preprocessing.answers", "--latest-in", str(out_dir), "--dataroot", str(cfg.dataroot),
            *(["--answers", str(cfg.answers)] if cfg.answers else []), echo=False)
    confs = [c for c in (cfg.pretext, *cfg.tasks) if c]
    runs = sorted({str(Path(load_config(c, cfg.overrides(), schema=RunConfig).checkpoints_dir)) for c in confs})
    print(f"runs         {', '.join(runs)}/{{exp}}_{{split}}")
    print(f"dataroot     {cfg.dataroot}")
