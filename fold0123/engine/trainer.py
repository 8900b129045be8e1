"""The training loop behind train.py: one task x one split -> one run directory (DESIGN.md section 3).

Why it is shaped this way:
- Every epoch's order and augmentation come from generators seeded by (seed, epoch) alone; each epoch writes its
  weights (`{epoch}.pth`) and then replaces the run's one resume.pth (optimiser, scheduler, scaler, RNG, step),
  so `resume=True` continues after the epoch resume.pth names and (deterministic mode, CPU) ends with the same
  weights as a run that was never interrupted. Disk use grows by the weights alone (models.checkpoints).
- Long epochs (`save_every_steps`, engine.states): a step checkpoint `step{S}.pth` and a resume.pth that names the
  micro-batch reached and every rank's generator states; a resume skips the batches already trained (their indices
  only) and puts the draws back, so it too ends as the uninterrupted run did. `max_steps` counts steps, not epochs.
- With `ema.decay` > 0 every optimiser step also updates a moving average of the weights (models.ema, timm's
  ModelEmaV3); `{epoch}.pth` holds it beside the raw weights, which is also where a resume takes it back from.
- Checkpoints are atomic (models.checkpoints), so the watching evaluator never reads half a file; DONE is written
  last and FAILED (with the error line) on a crash, because tmux cannot report a pane's exit status.
- A DONE run resumed with more epochs (`--resume --set epochs=10` on a 5-epoch run) loses DONE and goes on. Its
  lr schedule is recomputed for the new total: the steps already taken keep the lrs they had, the resumed steps
  follow the new schedule from their global step on (a cosine that had reached zero at epoch 5 jumps back to the
  new curve's value there and decays to zero at epoch 10). Simple, and the same as training 10 epochs from the
  start would do from epoch 6 on; a schedule restarted over the extra epochs only would need its own warm-up.
- AMP and channels_last switch on by device (on the CPU only with `cpu_extras`: engine.setup), so the same code
  runs the CPU tests.
- One run over N processes (`torchrun --nproc_per_node=N train.py ...`, engine.distributed) is the same run split
  across ranks: `batch_size` and `effective_batch_size` stay global, every rank computes the same (seed, epoch)
  batch order and takes its contiguous share of each micro-batch, DistributedDataParallel averages the gradients
  (no_sync on the accumulation micro-batches but the last), and the loss weights make a W-rank step the 1-process
  step on the same images. Only rank 0 writes the run directory (and holds train.lock); all ranks load the same
  resume state. The epoch's order does not depend on the world size, so `--resume` may change it, except when the
  epoch's short last micro-batch is dropped at one world size and kept at the other (each rank needs two images
  of it, as BatchNorm does): that is refused in one line. What does differ between 1 and N ranks, beyond float
  rounding: BatchNorm statistics (per rank, unless `sync_bn`), and every per-image random draw other than the
  dihedral view (which every rank draws for the whole micro-batch): augmentation options, MixUp/CutMix, jigsaw's
  tile shuffles and dropout come from per-rank generators, so an N-rank run with them is a different (equally
  seeded, equally resumable) run than a 1-rank one.
"""
from __future__ import annotations

import functools
import math
import random
import shutil
import sys
import time
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from fold0123.common import rundir
from fold0123.common.dataroot import split_names
from fold0123.common.config import dump_config
from fold0123.common.errors import Fold0123Error
from fold0123.common.fingerprint import (Fingerprint, StaleError, differences, read_fingerprint, run_fingerprint,
                                         stale_message, write_fingerprint)
from fold0123.common.io import DiskFullError, exclusive_lock, make_dir, remove_orphaned_temporaries, write_text
from fold0123.common.rundir import resolve_transfer
from fold0123.common.schema import RunConfig
from fold0123.data.augment import BatchAugmenter
from fold0123.data.costs import run_costs
from fold0123.data.datasets import normalize
from fold0123.data.views import N_VIEWS, random_view_ids, random_views
from fold0123.engine import distributed
from fold0123.engine.distributed import SINGLE, DistEnv
from fold0123.engine.optim import build_optimizer, build_scheduler
from fold0123.engine.saver import BackgroundSaver
from fold0123.engine.states import StepSaver, Trainee, part_way, resume_state, weights_state
from fold0123.models.checkpoints import EMA_KEY, CheckpointError, load_weights, read_resume, rng_state, set_rng_state
from fold0123.models.ema import build_ema, load_ema_weights
from fold0123.engine.setup import (amp_dtype, configure_torch, cpu_extras_read, rank_device, sync_batchnorm,
                                   uses_channels_last)
from fold0123.models.network import build_model
from fold0123.models.task import Task
from fold0123.models.tasks import get_task
from fold0123.models.transfer import apply_freeze, load_backbone, load_full

LOG_HEADER = "epoch step loss lr images_per_s"
DIVERGED_HINT = "lower `lr` or raise `warmup_epochs`, then train again"


class TrainError(Fold0123Error):
    """A run that cannot start (bad transfer source, existing run without --resume, ...): one line."""


class DivergedError(TrainError):
    """The loss became NaN or infinite, or grew by orders of magnitude over its first value: the settings, not the
    code, need changing (usually `lr`)."""


DIVERGENCE_FACTOR = 1e3  # a loss over this many times its first value (at least 1) has diverged, even if finite


def check_divergence(value: float, first: float | None, where: str, hint: str) -> None:
    """DivergedError (one line: `loss is ... {where} ...: the training diverged; {hint}`) when the loss `value` is
    NaN or infinite, or more than DIVERGENCE_FACTOR x its `first` value (floored at 1, so a loss that starts near
    zero may still move); `first` None: this is the first value. The one check of every training loop (train.py
    here; retrieval.ttl's steps may call it the same way)."""
    if not math.isfinite(value):
        raise DivergedError(f"loss is {value} {where}: the training diverged; {hint}")
    if first is not None and math.isfinite(first) and abs(value) > DIVERGENCE_FACTOR * max(abs(first), 1.0):
        raise DivergedError(f"loss is {value:.4g} {where}, over {DIVERGENCE_FACTOR:g} x its first value {first:.4g}: "
                            f"the training diverged; {hint}")


@dataclass
class LossWatch:
    """The first loss of a training process and the check of every later one against it (`check_divergence`)."""
    hint: str
    first: float | None = None

    def check(self, value: float, where: str) -> None:
        check_divergence(value, self.first, where, self.hint)
        if self.first is None:
            self.first = value


# ---------------------------------------------------------------------------------------------------- helpers

def training_seed(cfg: RunConfig) -> int:
    """The seed of the run's own draws (init, batch order, augmentation): `seed` moved by `seed_offset`, so two
    members of a seed ensemble differ under a recipe that gives every task its one seed."""
    return cfg.seed + cfg.seed_offset


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A seed that depends only on (seed, epoch, stream): shuffling and augmentation need no carried state."""
    return (int(seed) * 1_000_003 + int(epoch) * 101 + stream) % (2**63 - 1)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank `rank`'s own draws: rank 0 (and one process) keeps `seed`, every other rank its own."""
    return seed if rank == 0 else (int(seed) * 1_000_003 + 7919 * int(rank)) % (2**63 - 1)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, world_size: int = 1) -> list[list[int]]:
    """Shuffled index batches (global micro-batches) for one epoch, the same for every world size; a short last
    batch is dropped when it would give a rank fewer than 2 images (one process: a batch of one image; BatchNorm
    cannot train on it)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch))).tolist()
    batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    if len(batches) > 1 and len(batches[-1]) < 2 * world_size:
        batches.pop()
    return batches


def check_world_size(cfg: RunConfig, n_images: int, env: DistEnv) -> None:
    """The global micro-batch splits evenly over the ranks, and every rank gets images."""
    if not env.distributed:
        return
    if cfg.batch_size % env.world_size:
        raise TrainError(f"batch_size {cfg.batch_size} does not split over {env.world_size} ranks: batch_size is the "
                         f"global micro-batch, use a multiple of {env.world_size}")
    if n_images < 2 * env.world_size:
        raise TrainError(f"{n_images} training images cannot give {env.world_size} ranks 2 images each")


def accumulation_steps(cfg: RunConfig) -> int:
    batch, effective = cfg.batch_size, cfg.effective_batch_size
    if effective % batch:
        raise TrainError(f"effective_batch_size {effective} is not a multiple of batch_size {batch}")
    return max(1, effective // batch)


def group_weights(batches: list[list[int]], accum: int) -> list[float]:
    """Per micro-batch loss weight: its share of the images in its accumulation group (a short last group too),
    so each optimiser step sees the mean loss over exactly the images it accumulated. Under W ranks a rank whose
    share of micro-batch i holds m of its n images weights its mean loss by `weights[i] * W * m / n` (`rank_weight`):
    DDP's average over the ranks then gives the same mean over the group's images."""
    weights = []
    for start in range(0, len(batches), accum):
        group = batches[start:start + accum]
        total = sum(len(b) for b in group)
        weights += [len(b) / total for b in group]
    return weights


def rank_weight(weight: float, n: int, mine: int, env: DistEnv) -> float:
    """A micro-batch's loss weight on this rank: `weight` times its share `W * mine / n` (exactly 1.0 for one
    process and for equal shares)."""
    return weight * (env.world_size * mine / n)


# ---------------------------------------------------------------------------------------------------- data

class EpochBatches(torch.utils.data.Sampler):
    """The batch sampler of the run's one DataLoader: each epoch sets `batches`, so the loader (and its worker
    processes, kept with persistent_workers) is built once per run instead of once per epoch."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


# ---------------------------------------------------------------------------------------------------- loop

class LossLog:
    """loss.log: a header and one whitespace-separated line per logging step; the monitor tails it."""

    def __init__(self, path: Path, keep_through_step: int, extra: tuple[str, ...] = ()):
        lines = [" ".join([LOG_HEADER, *extra])]  # extra: the task's batch_stat_names, after the fixed columns
        if keep_through_step > 0 and path.is_file():  # resume: drop lines of the steps being redone
            for line in path.read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 1 and fields[1].isdigit() and int(fields[1]) <= keep_through_step:
                    lines.append(line)
        write_text(path, "\n".join(lines) + "\n")
        self.file = open(path, "a", buffering=1)

    def write(self, epoch: int, step: int, loss: float, lr: float, images_per_s: float, extra=()) -> None:
        tail = "".join(f" {value:.4f}" for value in extra)
        self.file.write(f"{epoch} {step} {loss:.6f} {lr:.6g} {images_per_s:.1f}{tail}\n")

    def close(self) -> None:
        self.file.close()


def _prepare_run(cfg: RunConfig, split: str, resume: bool, redo_stale: bool, fingerprint: Fingerprint) -> Path:
    """The run directory, checked against `fingerprint` (what this call would make it from): a run made by
    another config or from other inputs is refused, or with `redo_stale` deleted and started again; a fresh one
    needs `resume` to be continued."""
    run = rundir.run_dir(cfg, split)
    if run.is_dir() and rundir.list_checkpoints(run):
        reasons = differences(read_fingerprint(rundir.fingerprint_path(run)), fingerprint)
        if reasons and not redo_stale:
            raise StaleError(stale_message(run, reasons))
        if reasons:
            print(f"{run}: stale ({'; '.join(reasons)}): training it again from scratch", file=sys.stderr)
            for entry in run.iterdir():  # all but the lock this process holds (rundir.train_lock_path)
                if entry.name != rundir.TRAIN_LOCK:
                    shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
            resume = False
        elif not resume:
            raise TrainError(f"{run}: already holds checkpoints; pass --resume to continue it or delete it")
    make_dir(run)
    rundir.failed_path(run).unlink(missing_ok=True)
    for path in remove_orphaned_temporaries(run):  # what a killed earlier attempt was writing
        print(f"{run}: removed {path.name}, left by a killed writer", file=sys.stderr)
    if not resume:
        rundir.done_path(run).unlink(missing_ok=True)
        shutil.rmtree(rundir.tb_dir(run), ignore_errors=True)
    return run


def train(cfg: RunConfig, split: str, device: str | None = None, resume: bool = False,
          progress: bool | None = None, redo_stale: bool = False) -> Path:
    """Train `cfg` on `split`, writing the run directory; returns it. Raises (after writing FAILED) on error.

    Under a multi-rank launch (torchrun, or Slurm's tasks: engine.distributed) every rank calls this with the same
    arguments; rank 0 alone takes train.lock and writes the run directory, FAILED naming the rank that failed."""
    env = distributed.read_env()
    fingerprint = run_fingerprint(cfg, split)  # digests the inputs once: checked here, written by _train
    on = rank_device(env, device)  # this rank's device; a bad --device is refused before the run directory is made
    try:
        get_task(cfg.task, dataroot=cfg.dataroot).check_split(cfg, split)
    except Fold0123Error:
        # a split that is not one of this experiment's (7fold9 with 3 folds) is refused before its run directory
        # exists; one of its own rows whose files are missing fails below with FAILED naming the file, the marker
        # the launchers (tmux, Slurm) read the reason from
        if not any(split.startswith(name) for name in split_names(cfg.folds)):
            raise
    if not env.distributed and on.type == "cuda" and on.index is None and torch.cuda.device_count() > 1:
        print(f"--device cuda trains on one GPU of the {torch.cuda.device_count()} visible; for all of them run "
              f"torchrun --nproc_per_node={torch.cuda.device_count()} train.py ...", file=sys.stderr)
    run = rundir.run_dir(cfg, split)
    with ExitStack() as stack:
        stack.enter_context(distributed.process_group(env, on))
        # one trainer per run directory: a second train.py on it is refused naming the first's PID (before it
        # touches DONE, FAILED or any file), as a second evaluate.py --watch is (eval.lock); under torchrun rank 0
        # holds it for all ranks, and the others hear of its refusal
        with distributed.main_first(env):
            if env.is_main:
                stack.enter_context(exclusive_lock(rundir.train_lock_path(run), holder="another train.py"))
        return _train_locked(cfg, split, run, on, resume, progress, redo_stale, fingerprint, env)


def _train_locked(cfg: RunConfig, split: str, run: Path, device: torch.device, resume: bool, progress: bool | None,
                  redo_stale: bool, fingerprint: Fingerprint, env: DistEnv = SINGLE) -> Path:
    found = None

    def plan() -> str:
        """Rank 0's check of the run directory: `train`, `finished` (nothing to do) or `extend` (a DONE run)."""
        nonlocal found
        _prepare_run(cfg, split, resume, redo_stale, fingerprint)
        if resume and rundir.done_path(run).is_file():
            last = max((epoch for epoch, _ in rundir.list_checkpoints(run)), default=0)
            if cfg.max_steps:  # extending a run by steps: how far it went is in its resume state
                found = read_resume(run)
                if found is None or int(found[1]["global_step"]) >= cfg.max_steps:
                    print(f"{run}: already DONE, nothing to resume")
                    return "finished"
            elif cfg.epochs <= last:
                print(f"{run}: already DONE, nothing to resume")
                return "finished"
            # extending a finished run: check it can be resumed while it still says DONE (a CheckpointError
            # here leaves it finished), then drop DONE, so watchers started from now on wait for the new epochs
            found = found or read_resume(run)
            rundir.done_path(run).unlink(missing_ok=True)
            to = f"{cfg.max_steps} steps" if cfg.max_steps else f"{cfg.epochs} epochs"
            print(f"{run}: DONE after epoch {last}; extending it to {to}", file=sys.stderr)
            return "extend"
        return "train"

    status = distributed.from_main(env, plan)
    if status == "finished":
        return run
    if status == "extend" and found is None:  # the other ranks read what rank 0 checked
        found = read_resume(run)
    try:
        _train(cfg, split, run, device, resume, progress, fingerprint, found, env)
    except BaseException as err:
        try:
            _mark_failed(run, env, err)
        except distributed.RankTerminated as late:
            # the launcher's SIGTERM landed before failure_line could ignore it (the handler raises once, then
            # ignores SIGTERM): mark the run from there
            _mark_failed(run, env, late)
        raise
    if env.is_main:
        write_text(rundir.done_path(run), time.strftime("%Y-%m-%d %H:%M:%S\n"))
    return run


def _mark_failed(run: Path, env: DistEnv, err: BaseException) -> None:
    """FAILED with the error's line (rank 0 only: under DDP naming the rank that failed)."""
    if not env.is_main:
        return
    line = distributed.failure_line(env, err)
    try:
        write_text(rundir.failed_path(run), f"{line}\n")
    except (OSError, DiskFullError) as marker_err:  # the disk is full: the error matters more than its marker
        why = getattr(marker_err, "strerror", None) or "no space left on the device"
        print(f"{run}: could not write {rundir.FAILED} ({why}); the run failed: {line.partition(': ')[2]}",
              file=sys.stderr)


def build_trainee(cfg: RunConfig, task: Task, device: torch.device, steps_per_epoch: int,
                  transfer: Path | None, env: DistEnv = SINGLE) -> Trainee:
    torch.manual_seed(epoch_seed(training_seed(cfg), 0))  # the same initial weights on every rank
    model = build_model(cfg, task)
    if transfer is not None:
        (load_full if cfg.transfer == "full" else load_backbone)(model, transfer)
    model = model.to(device)
    if cfg.sync_bn:
        model = sync_batchnorm(model, device, env)
    channels_last = uses_channels_last(cfg, device)  # CUDA; the CPU with cpu_extras (engine.setup)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    # the average of the plain model, outside any DDP wrapper; rank 0's alone (the one that saves it)
    ema = build_ema(model, cfg.ema) if env.is_main else None
    optimizer = build_optimizer(model, cfg)  # AdamW; per-stage lrs with layer_decay < 1 (engine.optim)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)
    dtype = amp_dtype(cfg, device)
    trainee = Trainee(model, model, optimizer, scheduler, torch.amp.GradScaler("cuda", enabled=dtype == torch.float16),
                      dtype, device, channels_last, ema, env, grad_compression=cfg.grad_compression)
    trainee.rewrap()
    return trainee


def restore(trainee: Trainee, task: Task, weights: dict, state: dict, run: Path, reset_optimizer: bool = False) -> None:
    """Weights (and their EMA) from `{epoch}.pth` (or a step checkpoint), everything that steps them from resume.pth
    (models.checkpoints); `reset_optimizer`: all but the optimiser's state (its moments start afresh)."""
    path = run / (f"step{weights['step']}.pth" if "step" in weights else f"{weights.get('epoch')}.pth")
    load_weights(trainee.model, weights["model"], path)
    if trainee.ema is not None:
        if not isinstance(weights.get(EMA_KEY), dict):
            raise CheckpointError(f"{path}: holds no EMA weights ({EMA_KEY}) to resume the run's ema.decay "
                                  f"average from (trained with ema.decay 0? train the run afresh)")
        load_ema_weights(trainee.ema, weights[EMA_KEY], path)
    task.load_state(weights.get("task_state"))
    scheduler = trainee.scheduler
    try:
        if not reset_optimizer:
            trainee.optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        # torch checks the groups' sizes, not the shapes of their buffers (momentum, Adam's moments)
        for group in trainee.optimizer.param_groups:
            for param in group["params"]:
                for name, value in trainee.optimizer.state.get(param, {}).items():
                    if torch.is_tensor(value) and value.dim() and value.shape != param.shape:
                        raise ValueError(f"its {name} has shape {tuple(value.shape)}, the parameter's "
                                         f"{tuple(param.shape)}")
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{rundir.resume_path(run)}: does not fit this run's optimiser, made by another "
                              f"backbone or config? ({' '.join(str(err).split())[:200]})") from None
    # the next step's lr from this run's schedule: the same value when resuming, the new curve's when extending
    lrs = [base * fn(scheduler.last_epoch) for base, fn in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
    for group, lr in zip(trainee.optimizer.param_groups, lrs):
        group["lr"] = lr
    scheduler._last_lr = lrs
    trainee.scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])


@dataclass
class Window:
    """Loss and throughput since the last log line (this rank's: `reduced` sums them over the ranks)."""
    loss: float = 0.0  # summed over the images
    batches: int = 0
    images: int = 0
    start: float = field(default_factory=time.perf_counter)

    stats: dict = field(default_factory=dict)  # the task's batch_stats, summed

    def add(self, loss: float, images: int, stats: dict | None = None) -> None:
        """`loss`: the micro-batch's mean loss over its `images`."""
        self.loss, self.batches, self.images = self.loss + loss * images, self.batches + 1, self.images + images
        for name, value in (stats or {}).items():
            self.stats[name] = self.stats.get(name, 0.0) + value

    def reduced(self, env: DistEnv, device: torch.device) -> "Window":
        """The window over every rank's images (one all_reduce, at a log line: not one per micro-batch, which
        would stop the ranks at every micro-batch); this rank's batch_stats stay its own."""
        if not env.distributed:
            return self
        loss, images = distributed.sum_over_ranks(env, [self.loss, float(self.images)], device)
        return Window(loss, self.batches, int(images), self.start, self.stats)

    def mean_loss(self) -> float:
        return self.loss / max(self.images, 1)

    def mean_stats(self, names: tuple[str, ...]) -> list[float]:
        return [self.stats.get(name, float("nan")) / max(self.batches, 1) for name in names]

    def images_per_s(self) -> float:
        return self.images / max(time.perf_counter() - self.start, 1e-9)


def train_epoch(trainee: Trainee, task: Task, loader: torch.utils.data.DataLoader, cfg: RunConfig, epoch: int,
                global_step: int, log: LossLog | None, writer, bar_label: str, progress: bool,
                watch: LossWatch | None = None, augmenter: BatchAugmenter | None = None, start_batch: int = 0,
                resumed: dict | None = None, stop_at: int = 0,
                on_step: Callable[[int, int, Callable[[], dict]], None] | None = None) -> tuple[float, int]:
    """One epoch of micro-batches with gradient accumulation over the run's one `loader` (its batch sampler an
    EpochBatches); returns (mean loss per image, global step). `watch`: the run's divergence check (kept across
    epochs; a fresh one per epoch when None); `augmenter`: the run's augmentation and mixing (built from `cfg`
    when None). `log` and `writer` None: a rank other than 0, which writes nothing.

    Part-way through an epoch: `start_batch` micro-batches are skipped (never loaded) and `resumed` (what
    `on_step`'s state function returned at that step: this rank's generators and running sums) puts the draws
    where they were, so the epoch goes on as if never stopped. `stop_at` > 0: stop after that global step
    (max_steps). `on_step(global_step, batches_done, state)` runs after each optimiser step, on every rank.

    Under W ranks (`trainee.env`) the loader yields this rank's share of each global micro-batch; each rank checks
    its own loss for divergence, and the logged loss is the global mean, summed over the ranks at log lines and at
    the epoch's end only (a collective per micro-batch made the ranks wait for each other at every one)."""
    env = trainee.env
    watch = watch or LossWatch(DIVERGED_HINT)
    augmenter = augmenter or BatchAugmenter(cfg)
    run_seed = training_seed(cfg)
    seed = rank_seed(epoch_seed(run_seed, epoch, 1), env.rank)
    torch.manual_seed(seed)  # dropout and anything else drawing from the global generators
    np.random.seed(seed % 2**32)
    random.seed(seed)
    augment = torch.Generator().manual_seed(epoch_seed(run_seed, epoch, 2))
    # per-rank draws after the dihedral views (jigsaw's shuffles): the shared generator for one process
    own = augment if not env.distributed else torch.Generator().manual_seed(
        rank_seed(epoch_seed(run_seed, epoch, 3), env.rank))
    apply_freeze(trainee.model, cfg.freeze, epoch, cfg.unfreeze_epoch)
    trainee.rewrap()
    trainee.parallel.train()
    accum = accumulation_steps(cfg)
    batches = epoch_batches(len(loader.dataset), cfg.batch_size, run_seed, epoch, env.world_size)
    weights = group_weights(batches, accum)
    parts = [distributed.rank_part(len(b), env) for b in batches]
    loader.batch_sampler.batches = [b[part] for b, part in zip(batches, parts)][start_batch:]
    bar = tqdm(total=len(batches), initial=start_batch, desc=bar_label, unit="batch", disable=not progress,
               dynamic_ncols=True, leave=False)
    window, total_loss, total_images = Window(), 0.0, 0
    # the loader's iterator draws its base seed from the global generator when made: before the draws are put back
    iterator = iter(loader)
    if resumed is not None:
        augment.set_state(resumed["augment"])
        own.set_state(resumed["own"])
        set_rng_state(resumed["rng"])
        total_loss, total_images = float(resumed["loss_sum"]), int(resumed["images"])

    def state() -> dict:
        """Where this rank's draws and sums stand, for a step checkpoint's resume state."""
        return {"augment": augment.get_state(), "own": own.get_state(), "rng": rng_state(),
                "loss_sum": total_loss, "images": total_images}
    device, optimizer = trainee.device, trainee.optimizer
    optimizer.zero_grad(set_to_none=True)
    for i, (images, targets) in enumerate(iterator, start=start_batch):
        n = len(batches[i])  # the global micro-batch; this rank holds images `parts[i]` of it
        last_of_step = (i + 1) % accum == 0 or i + 1 == len(batches)
        images = images.to(device, non_blocking=True)
        if cfg.augment == "dihedral":  # drawn for the whole micro-batch: the same views with 1 or N ranks
            square = images.shape[-1] == images.shape[-2]
            images = random_views(images, views=random_view_ids(n, augment, N_VIEWS if square else 4)[parts[i]])
        images = augmenter.uint8(images)
        # jigsaw shuffles tiles on the device and makes its labels here; the other tasks pass through
        images, targets = task.batch(images, targets, own, cfg)
        targets = targets.to(device, non_blocking=True)
        x, targets = augmenter.float(normalize(images), targets, epoch)
        if trainee.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        # DDP: gradients are averaged over the ranks in the backward of a step's last micro-batch only
        sync = nullcontext() if last_of_step or not env.distributed else trainee.parallel.no_sync()
        with sync:
            with torch.autocast(device.type, dtype=trainee.autocast_dtype,
                                enabled=trainee.autocast_dtype is not None):
                out = trainee.parallel(x)
                loss = task.loss(out, targets)
            value, count = float(loss.detach()), x.shape[0]
            # this rank's loss: a rank that diverges fails, naming itself (engine.distributed), and the others
            # with it at their next collective
            watch.check(value, f"at epoch {epoch} batch {i + 1} (lr {cfg.lr:g})")
            trainee.scaler.scale(loss * rank_weight(weights[i], n, len(batches[i][parts[i]]), env)).backward()
        window.add(value, count, task.batch_stats(out, targets) if task.batch_stat_names else None)
        total_loss, total_images = total_loss + value * count, total_images + count
        if last_of_step:
            trainee.scaler.step(optimizer)
            trainee.scaler.update()
            optimizer.zero_grad(set_to_none=True)
            trainee.scheduler.step()
            global_step += 1
            if trainee.ema is not None:  # after every optimiser step, with the 1-based global step (models.ema)
                trainee.ema.update(trainee.model, step=global_step)
            stop = global_step == stop_at
            if global_step % cfg.log_every == 0 or i + 1 == len(batches) or stop:
                window = window.reduced(env, device)
                mean_loss, speed, lr = window.mean_loss(), window.images_per_s(), optimizer.param_groups[0]["lr"]
                stats = window.mean_stats(task.batch_stat_names)  # this rank's rows under DDP
                if log is not None:
                    log.write(epoch, global_step, mean_loss, lr, speed, stats)
                if writer is not None:
                    writer.add_scalar("train/loss", mean_loss, global_step)
                    writer.add_scalar("train/lr", lr, global_step)
                    writer.add_scalar("train/images_per_s", speed, global_step)
                    for name, stat in zip(task.batch_stat_names, stats):
                        writer.add_scalar(f"train/{name}", stat, global_step)
                bar.set_postfix(loss=f"{mean_loss:.4f}", img_s=f"{speed:.0f}")
                window = Window()
            if on_step is not None:
                on_step(global_step, i + 1, state)
            if stop:
                break
        bar.update(1)
    bar.close()
    if env.distributed:
        total_loss, total_images = distributed.sum_over_ranks(env, [total_loss, float(total_images)], device)
    return total_loss / max(total_images, 1), global_step


def as_started(cfg: RunConfig, state: dict, run: Path, device: torch.device, main: bool) -> RunConfig:
    """`cfg` with the numerics the run started with, from its resume state `state`. The thread count changes the
    float reduction order: kept, a resumed run ends bit-identical to an uninterrupted one whatever a relaunch
    divides the cores into. On the CPU, what `cpu_extras: auto` read where the run started (bf16 and channels-last,
    or channels-last alone): kept, a run moved to a CPU of another kind goes on in the dtype and layout it trained in
    (bf16 without AMX: no faster, or emulated and slower), instead of changing them half-way under an unchanged
    config. A resume state from before `channels_last` says false: float32 NCHW, as that run started."""
    kept: dict = {}
    if state.get("threads") is not None and int(state["threads"]) != cfg.threads:
        kept["threads"] = int(state["threads"])
    started_extras, extras_now = state.get("cpu_extras"), cpu_extras_read(cfg)
    if device.type == "cpu" and cfg.cpu_extras == "auto" and started_extras is not None \
            and started_extras != extras_now:
        kept["cpu_extras"] = started_extras
    if kept and main:
        asked = {"threads": cfg.threads, "cpu_extras": f"auto, {str(extras_now).lower()} on this CPU"}
        print(f"{run}: resuming with {', '.join(f'{k}={str(v).lower()}' for k, v in kept.items())}, as it started "
              f"(asked for {', '.join(f'{k}={asked[k]}' for k in kept)})", file=sys.stderr)
    return cfg.model_copy(update=kept)


def _train(cfg: RunConfig, split: str, run: Path, device: torch.device, resume: bool, progress: bool | None,
           fingerprint: Fingerprint, found: tuple[dict, dict] | None = None, env: DistEnv = SINGLE):
    """`found`: the (weights, resume state) train() already read to extend a finished run, else read here (by
    every rank: the run directory is on a file system all ranks see, as the evaluator's is)."""
    main = env.is_main
    if found is None and resume:
        found = read_resume(run)  # (weights, resume state), or None for a run with no finished epoch
        if found is None and rundir.list_checkpoints(run) and main:
            print(f"{run}: killed before its first resume state was written: training from epoch 1",
                  file=sys.stderr)
    if found is not None:
        cfg = as_started(cfg, found[1], run, device, main)
    configure_torch(cfg, device)
    cfg = cfg.model_copy(update={"split": split})
    if main:
        write_text(rundir.config_path(run), dump_config(cfg))
        write_fingerprint(rundir.fingerprint_path(run), fingerprint)

    task = get_task(cfg.task, dataroot=cfg.dataroot)
    transfer = None if found is not None else resolve_transfer(cfg)  # a resumed run has its weights already
    with distributed.main_first(env):  # rank 0 builds the image cache, the other ranks open it
        if transfer is not None and cfg.transfer == "full" and main:
            task.adopt(transfer, run)  # clip: the source's tokenizer, before the texts are tokenised
        dataset = task.training_data(cfg, split)  # before the model: a missing split / tag file fails fast
    check_world_size(cfg, len(dataset), env)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=EpochBatches(), num_workers=cfg.num_workers,
                                         pin_memory=device.type == "cuda", persistent_workers=cfg.num_workers > 0)
    if main and found is None and cfg.task != "clip":  # its inputs are good: what it takes and will write
        print(f"{run.name}: {run_costs(cfg, split, task.n_outputs(cfg))}", file=sys.stderr, flush=True)
    n_batches = len(epoch_batches(len(dataset), cfg.batch_size, training_seed(cfg), 1, env.world_size))
    steps_per_epoch = math.ceil(n_batches / accumulation_steps(cfg))
    if cfg.max_steps:  # the epochs max_steps takes, the last one perhaps part-way (config.yml says how many)
        cfg = cfg.model_copy(update={"epochs": math.ceil(cfg.max_steps / steps_per_epoch)})
        if main:
            write_text(rundir.config_path(run), dump_config(cfg))
    if found is not None:
        check_resumed_world_size(run, found[1], len(dataset), cfg, env)
    trainee = build_trainee(cfg, task, device, steps_per_epoch, transfer, env)
    start_epoch, global_step, start_batch, resumed = 1, 0, 0, None
    if found is not None:
        restore(trainee, task, *found, run, reset_optimizer=cfg.reset_optimizer)
        start_epoch, global_step = int(found[1]["epoch"]) + 1, int(found[1]["global_step"])
        start_batch, resumed = part_way(run, found[1], cfg, env, start_epoch)

    epochs = cfg.epochs
    log = LossLog(rundir.loss_log_path(run), global_step, task.batch_stat_names) if main else None
    writer = SummaryWriter(str(rundir.tb_dir(run)), purge_step=global_step if found is not None else None) \
        if main else None
    saver = BackgroundSaver()
    show_progress = main and (sys.stderr.isatty() if progress is None else bool(progress))
    watch, augmenter = LossWatch(DIVERGED_HINT), BatchAugmenter(cfg)
    step_saver = StepSaver(trainee, task, cfg, run, saver, n_batches)
    try:
        epoch = start_epoch - 1
        # max_steps: whole epochs until the steps are taken (a run extended by steps may need one more than
        # config.yml's count); else `epochs`
        while global_step < cfg.max_steps if cfg.max_steps else epoch < epochs:
            epoch += 1
            loss, global_step = train_epoch(
                trainee, task, loader, cfg, epoch, global_step, log, writer, f"{run.name} epoch {epoch}/{epochs}",
                show_progress, watch, augmenter, start_batch=start_batch if epoch == start_epoch else 0,
                resumed=resumed if epoch == start_epoch else None, stop_at=cfg.max_steps,
                on_step=functools.partial(step_saver, epoch))
            if not main:
                continue
            writer.add_scalar("epoch/loss", loss, epoch)
            writer.flush()
            # weights first, then the resume state that points at them (a crash between the two redoes this
            # epoch), then pruning; written while the next epoch trains
            saver.save([(rundir.checkpoint_path(run, epoch), weights_state(trainee, task, cfg, epoch)),
                        (rundir.resume_path(run), resume_state(trainee, cfg, epoch, global_step))],
                       then=step_saver.at_epoch_end(),
                       background=global_step < cfg.max_steps if cfg.max_steps else epoch < epochs)
            print(f"{run.name}: epoch {epoch}/{epochs} loss {loss:.4f}", file=sys.stderr, flush=True)
        saver.wait()  # every file in place before train() writes DONE
    finally:
        saver.close()  # after a failure too: the last finished epoch's files land before FAILED
        if log is not None:
            log.close()
        if writer is not None:
            writer.close()


def check_resumed_world_size(run: Path, state: dict, n_images: int, cfg: RunConfig, env: DistEnv) -> None:
    """A run resumes on any number of ranks as long as its epochs keep their micro-batches (the order is the
    same for every world size; only the drop of a short last micro-batch depends on it): else one line."""
    before = int(state.get("world_size", 1))
    if before == env.world_size:
        return
    had = len(epoch_batches(n_images, cfg.batch_size, training_seed(cfg), 1, before))
    has = len(epoch_batches(n_images, cfg.batch_size, training_seed(cfg), 1, env.world_size))
    if had != has:
        raise TrainError(f"{run}: trained on {before} rank(s), whose epochs take {had} micro-batches; "
                         f"{env.world_size} ranks would drop the short last one (each rank needs 2 of its images): "
                         f"resume it on {before} rank(s)")
    if env.is_main:
        print(f"{run}: trained on {before} rank(s), resuming on {env.world_size}: the same batches in the same order",
              file=sys.stderr)
