"""An Optuna study whose trials are fold0123 runs (tune.py, `make tune`).

A trial is the run config with the trial's values (tuning.space) trained as experiment `{exp}_t{N}` on the
recipe's K fold splits, one fold after another, each fold one fold0123 row through the launcher (its train pane,
loss monitor and watcher, as `launch.py fold0123` lays them out), so every trial's runs can be stacked,
ensembled and re-evaluated like any other. After each fold the trial reports the running mean of its fold
scores (the task's primary metric on the fold's held-out rows, at `epoch`) as step k, and the MedianPruner stops
a trial whose running mean is worse than the median of the earlier trials' at the same fold: Optuna's per-epoch
callbacks would mix the folds' epochs into one curve, so the folds are the steps.

Storage is Optuna's RDB storage (an SQLite file beside the report by default) with heartbeats: a worker killed
mid-trial leaves its trial RUNNING until its heartbeat is `2 x heartbeat_s` old; the next worker to look fails
it and RetryHeartbeatStaleTrialCallback enqueues the same values as a new trial, which trains under the first
trial's run names, so the launcher resumes its interrupted fold and skips its finished ones. A study counts its COMPLETE
and PRUNED trials only: a failed trial and its retry are one trial. Workers (one per device or GPU group, and
any number more on other machines sharing the storage) take a slot under a lock beside the study before Optuna
creates their trial, so together they run exactly `trials` trials. The study's fingerprint (the run config with
the fixed sets and the recipe's keys, the space, the epoch scored, the split files and photos) is stored beside
it: a changed base config or split refuses to resume the study, in one line.
"""
from __future__ import annotations

import contextlib
import shutil
import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from fold0123.common.config import load_config
from fold0123.common.errors import Fold0123Error
from fold0123.common.fingerprint import (Fingerprint, StaleError, config_identity, differences, read_fingerprint,
                                         run_inputs, stale_message, write_fingerprint)
from fold0123.common.io import exclusive_lock, make_dir
from fold0123.common.search import suggest
from fold0123.common.schema import RUN_VOLATILE_KEYS, RecipeConfig, RunConfig, TuneConfig
from fold0123.data.competition import read_competition
from fold0123.launcher.fold0123 import LaunchOptions, launch_fold0123
from fold0123.launcher.layout import session_name
from fold0123.launcher.recipe import build_dataset, make_folds, make_tag_vectors, pretext, run_sets, stage
from fold0123.stacking.runs import choice_metrics, fold_splits, resolve_epoch
from fold0123.tuning.space import check_space, trial_sets

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats, retries
optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "Using an existing study" at every open
# the study's fingerprint leaves out what does not change a score; unlike a run's, the epochs do
STUDY_VOLATILE_KEYS = tuple(k for k in RUN_VOLATILE_KEYS if k != "epochs")


class TuneError(Fold0123Error):
    """A study that cannot go on as asked; one line saying why."""


class TrialRunError(Fold0123Error):
    """A trial's fold run failed (it printed why in its pane and wrote FAILED): the trial fails, the study goes on."""


@dataclass(frozen=True)
class Study:
    """What every worker of a study agrees on: the config, the recipe its runs take their keys from, the fold
    splits, where the study is stored and which way is better."""
    cfg: TuneConfig
    recipe: RecipeConfig
    splits: list[str]
    out_dir: Path
    storage_url: str
    direction: str  # minimize | maximize


def recipe_for(cfg: TuneConfig, seed: int | None = None) -> RecipeConfig:
    """The recipe the trials' runs take their keys from: its checkpoints_dir moved to `runs_dir` (when set) and,
    for the winner's re-runs, its seed."""
    sets = [f"checkpoints_dir={cfg.runs_dir}"] if cfg.runs_dir else []
    if seed is not None:
        sets.append(f"seed={seed}")
    return load_config(cfg.recipe, sets, schema=RecipeConfig)


def runs_dir(study: Study) -> Path:
    return Path(study.recipe.checkpoints_dir or load_config(study.cfg.run, schema=RunConfig).checkpoints_dir)


def trial_exp(cfg: TuneConfig, number: int) -> str:
    return f"{cfg.exp}_t{number:03d}"


def winner_exp(cfg: TuneConfig, number: int, seed: int) -> str:
    return f"{cfg.exp}_t{number:03d}_s{seed}"


def storage_url(cfg: TuneConfig) -> str:
    return cfg.storage or f"sqlite:///{Path(cfg.results_dir).resolve() / 'study.db'}"


def fingerprint_path(out_dir: Path) -> Path:
    return out_dir / "study.fingerprint.json"


def base_config(cfg: TuneConfig, recipe: RecipeConfig) -> RunConfig:
    return load_config(cfg.run, [*cfg.set, *run_sets(recipe)], schema=RunConfig)


def study_fingerprint(cfg: TuneConfig, recipe: RecipeConfig, splits: list[str]) -> Fingerprint:
    base = base_config(cfg, recipe)
    config = {f"run.{k}": v for k, v in config_identity(base, STUDY_VOLATILE_KEYS).items()}
    config.update({f"space.{k}": r.model_dump(mode="json") for k, r in cfg.space.items()})
    config["epoch"] = cfg.epoch
    inputs = {f"{split}: {name}": digest for split in splits for name, digest in run_inputs(base, split).items()}
    return Fingerprint(config, inputs)


def describe(cfg: TuneConfig) -> str:
    return f"study {cfg.exp} ({cfg.results_dir})"


@contextlib.contextmanager
def storage_errors(study: Study):
    """The storage refusing (a read-only or replaced SQLite file, a database server gone) is one TuneError line."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except (SQLAlchemyError, optuna.exceptions.StorageInternalError) as err:
        cause = err.__cause__ if isinstance(err, optuna.exceptions.StorageInternalError) and err.__cause__ else err
        raise TuneError(f"{describe(study.cfg)}: its storage {study.storage_url} refused ("
                        f"{' '.join(str(cause).split())[:200]})") from None


def open_study(study: Study, sampler_seed: int | None = None) -> optuna.Study:
    """The study in its storage, with this worker's sampler and the pruner (created when missing)."""
    with storage_errors(study):
        return _open_study(study, sampler_seed)


def _open_study(study: Study, sampler_seed: int | None) -> optuna.Study:
    cfg = study.cfg
    make_dir(study.out_dir)
    storage = RDBStorage(study.storage_url, heartbeat_interval=cfg.heartbeat_s, grace_period=2 * cfg.heartbeat_s,
                         heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3))
    seed = cfg.seed if sampler_seed is None else sampler_seed
    sampler = (optuna.samplers.TPESampler(seed=seed) if cfg.sampler == "tpe"
               else optuna.samplers.RandomSampler(seed=seed))
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=cfg.startup_trials, n_warmup_steps=0)
              if cfg.pruner == "median" else optuna.pruners.NopPruner())
    return optuna.create_study(study_name=cfg.exp, storage=storage, sampler=sampler, pruner=pruner,
                               direction=study.direction, load_if_exists=True)


def plan_study(cfg: TuneConfig) -> Study:
    """The study as every worker sees it (nothing is built or written)."""
    recipe = recipe_for(cfg)
    out_dir = Path(cfg.results_dir)
    direction = "minimize" if read_competition(recipe.dataroot).lower_is_better else "maximize"
    return Study(cfg, recipe, fold_splits(recipe.folds), out_dir, storage_url(cfg), direction)


def prepare_study(cfg: TuneConfig, redo_stale: bool = False) -> Study:
    """Once, before the workers: the recipe's dataset, folds (tag vectors, pretext run) as the recipe makes them,
    the space checked against the run config, the stored study checked against this config (stale: stop, or with
    `redo_stale` start it again), created, and its enqueued trials queued (once)."""
    recipe = recipe_for(cfg)
    if recipe.seed in cfg.rerun_seeds:
        raise TuneError(f"rerun_seeds {cfg.rerun_seeds}: {recipe.seed} is the trials' own seed (the recipe's): the "
                        "winner's re-runs need other seeds")
    check_space(cfg.run, cfg.space, list(cfg.set), run_sets(recipe))
    build_dataset(recipe, redo_stale)
    make_folds(recipe, redo_stale)
    base = base_config(cfg, recipe)
    if base.task == "materialstechniques":
        make_tag_vectors(recipe, redo_stale)
    if base.transfer_from is not None and recipe.pretext is not None:
        pretext(recipe, redo_stale)
    study = plan_study(cfg)
    now = study_fingerprint(cfg, recipe, study.splits)
    stored_path = fingerprint_path(study.out_dir)
    if stored_path.is_file():
        reasons = differences(read_fingerprint(stored_path), now)
        if reasons and not redo_stale:
            raise StaleError(stale_message(describe(cfg), reasons))
        if reasons:
            print(f"{describe(cfg)} is stale ({'; '.join(reasons[:3])}): started again", flush=True)
            drop_study(study)
    elif _exists(study) and redo_stale:
        drop_study(study)
    elif _exists(study):
        raise StaleError(f"{describe(cfg)}: storage {study.storage_url} holds study {cfg.exp!r} without a "
                         f"fingerprint at {stored_path}: pass --redo-stale to start it again, or name another exp")
    stage(f"{describe(cfg)}: {cfg.trials} trials over {', '.join(cfg.space) or 'nothing'}, {len(study.splits)} folds")
    optuna_study = open_study(study)
    if not optuna_study.user_attrs.get("enqueued"):
        for params in cfg.enqueue:
            optuna_study.enqueue_trial(params, skip_if_exists=True)
        optuna_study.set_user_attr("enqueued", True)
    write_fingerprint(stored_path, now)
    return study


def _exists(study: Study) -> bool:
    if study.storage_url.startswith("sqlite:///") and not Path(study.storage_url[len("sqlite:///"):]).is_file():
        return False
    return study.cfg.exp in optuna.get_all_study_names(study.storage_url)


def existing(cfg: TuneConfig) -> Study:
    """The study of `cfg` as it was prepared (tune.py --worker, --report-only); TuneError when there is none."""
    study = plan_study(cfg)
    if not _exists(study):
        raise TuneError(f"{describe(cfg)}: no study {cfg.exp!r} in {study.storage_url}: run tune.py --conf ... first")
    return study


def drop_study(study: Study) -> None:
    if _exists(study):
        optuna.delete_study(study_name=study.cfg.exp, storage=study.storage_url)
    fingerprint_path(study.out_dir).unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------- trials

def retried_from(trial) -> int | None:
    return RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)


def runs_number(trial) -> int:
    """The trial whose run names this trial trains under: the first one of a chain of retries."""
    first = retried_from(trial)
    return trial.number if first is None else first


def counts(trials) -> tuple[int, int, int]:
    """(finished: complete or pruned, running, failed for a reason of their own: not a dead worker's)."""
    retried = {n for t in trials for n in RetryHeartbeatStaleTrialCallback.retry_history(t)}
    finished = sum(t.state in FINISHED for t in trials)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    failed = sum(t.state == TrialState.FAIL and t.number not in retried for t in trials)
    return finished, running, failed


def clear_leftover(session: str, socket_name: str | None) -> None:
    """A dead worker's row of this trial may still be training in tmux: stop it, so the retry resumes the run
    (the trainer's train.lock goes with its process)."""
    if shutil.which("tmux") is None:
        return
    from fold0123.launcher.tmux import tmux_server

    server = tmux_server(socket_name)
    if server.is_alive() and server.has_session(session):
        server.kill_session(session)
        print(f"stopped the leftover tmux session {session} of a dead worker", flush=True)
        time.sleep(1.0)  # its processes get SIGHUP; the lock goes when they exit


def score_fold(study: Study, exp: str, split: str) -> tuple[float, str]:
    """The fold run's primary metric at the study's epoch, and the metric's name."""
    ckpt = runs_dir(study)
    table = choice_metrics(ckpt, exp, [split], resolve_epoch(ckpt, exp, [split], study.cfg.epoch))
    lower = bool(table["lower_is_better"].iloc[0])
    if lower != (study.direction == "minimize"):
        raise TuneError(f"{exp} {split}: scored by {table['metric'].iloc[0]} ({'lower' if lower else 'higher'} is "
                        f"better) but the competition's metric goes the other way: tune a task scored by it")
    return float(table["value"].iloc[0]), str(table["metric"].iloc[0])


def run_rows(study: Study, exp: str, splits: list[str], sets: list[str], devices: str, cores: int | None = None,
             socket_name: str | None = None, recipe: RecipeConfig | None = None) -> None:
    """The fold rows of `exp` through the launcher (side by side), waited for; TrialRunError when one did not end
    DONE. `recipe`: the keys the runs take (default: the study's recipe; the winner's re-runs move its seed)."""
    session = session_name(f"{exp}_{splits[0] if len(splits) == 1 else 'rows'}")
    if study.cfg.executor == "tmux":
        clear_leftover(session, socket_name)
    result = launch_fold0123(study.cfg.run, LaunchOptions(
        devices=devices, overrides=(*study.cfg.set, *sets, f"exp={exp}", *run_sets(recipe or study.recipe)),
        splits=tuple(splits), session=session, executor=study.cfg.executor, socket_name=socket_name, cores=cores,
        verbose=False, linger_s=0.0, redo_stale=True))  # runs named by the study are its own: a stale one was left
    # by a study started again (--redo-stale), since a changed config or input makes the study itself stale
    for outcome in result.outcomes:
        if outcome.state not in ("done", "skipped"):
            raise TrialRunError(f"{outcome.run_dir}: {outcome.state} ({outcome.detail})")


def objective_for(study: Study, device: str, worker: int, cores: int | None, socket_name: str | None,
                  slot: contextlib.ExitStack, verbose: bool = True):
    """The objective of one worker: the trial's folds one after another, pruned fold by fold."""
    def objective(trial) -> float:
        slot.close()  # the trial exists: the next worker may take a slot
        params = suggest(trial, study.cfg.space)
        frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
        exp = trial_exp(study.cfg, runs_number(frozen))
        trial.set_user_attr("runs", exp)
        trial.set_user_attr("device", device)
        trial.set_user_attr("worker", worker)
        scores: list[float] = []
        for k, split in enumerate(study.splits):
            try:
                run_rows(study, exp, [split], trial_sets(params), device, cores, socket_name)
            except TrialRunError as err:
                trial.set_user_attr("error", str(err))
                print(f"trial {trial.number} ({exp}) failed: {err}", flush=True)
                raise
            score, metric = score_fold(study, exp, split)
            scores.append(score)
            trial.set_user_attr("fold_scores", scores)
            trial.set_user_attr("metric", metric)
            trial.report(statistics.fmean(scores), step=k)
            if verbose:
                print(f"trial {trial.number} ({exp}) {split}: {metric} {score:.4f}, running mean "
                      f"{statistics.fmean(scores):.4f}", flush=True)
            if trial.should_prune():
                if verbose:
                    print(f"trial {trial.number} ({exp}) pruned after {split}: its running mean is worse than the "
                          "median of the earlier trials' there", flush=True)
                raise optuna.TrialPruned(f"running mean {statistics.fmean(scores):.4f} after fold {k + 1} is worse "
                                         "than the median of earlier trials")
        return statistics.fmean(scores)
    return objective


def work(study: Study, device: str, worker: int = 0, cores: int | None = None, socket_name: str | None = None,
         verbose: bool = True) -> int:
    """One worker: take a slot, run a trial, until the study has `trials` finished ones; returns how many trials
    this worker ran. Another worker's running trial holds its slot until it ends (or its worker is found dead,
    when its retry frees the slot again)."""
    cfg = study.cfg
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the worker prints its own lines (a failed trial's too)
    optuna_study = open_study(study, sampler_seed=cfg.seed + worker)
    lock = study.out_dir / "slot.lock"
    ran = 0
    while True:
        optuna.storages.fail_stale_trials(optuna_study)
        finished, running, failed = counts(optuna_study.get_trials(deepcopy=False))
        if finished >= cfg.trials:
            return ran
        if failed >= cfg.trials:
            raise TuneError(f"{describe(cfg)}: {failed} trials failed (each trial's error is in the report: "
                            f"python tune.py --conf ... --report-only)")
        slot = contextlib.ExitStack()
        slot.enter_context(exclusive_lock(lock, wait=True, holder="a tune.py worker"))
        try:
            finished, running, _ = counts(optuna_study.get_trials(deepcopy=False))
            if finished + running >= cfg.trials:
                slot.close()
                time.sleep(min(5.0, cfg.heartbeat_s))  # the last slots are others': wait for them to end or die
                continue
            with storage_errors(study):
                optuna_study.optimize(objective_for(study, device, worker, cores, socket_name, slot, verbose),
                                      n_trials=1, catch=(TrialRunError,))
            ran += 1
        finally:
            slot.close()


# ------------------------------------------------------------------------------------------------- the winner

def rerun_winner(study: Study, socket_name: str | None = None) -> dict | None:
    """The best complete trial trained again on every fold with each of `rerun_seeds` as the runs' seed (the
    folds stay): its CV there was not used to choose it, so beside the best trial's CV (optimistic: it won on
    those rows) it says what the winner is worth. None when no trial completed."""
    cfg = study.cfg
    optuna_study = open_study(study)
    if not any(t.state == TrialState.COMPLETE for t in optuna_study.get_trials(deepcopy=False)):
        return None
    best = optuna_study.best_trial
    out = {"trial": best.number, "params": best.params, "cv": best.value, "seeds": {}}
    for seed in cfg.rerun_seeds:
        exp = winner_exp(cfg, best.number, seed)
        stage(f"the winner (trial {best.number}) with seed {seed}: {exp}")
        run_rows(study, exp, study.splits, trial_sets(best.params), study.recipe.devices, socket_name=socket_name,
                 recipe=recipe_for(cfg, seed))
        scores = [score_fold(study, exp, split)[0] for split in study.splits]
        out["seeds"][seed] = {"exp": exp, "fold_scores": scores, "cv": statistics.fmean(scores)}
    if out["seeds"]:
        out["reseeded_cv"] = statistics.fmean(v["cv"] for v in out["seeds"].values())
    return out
