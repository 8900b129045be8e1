"""The model and what steps it (Trainee), and what a run writes of it to be evaluated and carried on: `{epoch}.pth`
and resume.pth at an epoch's end and, inside long epochs (`save_every_steps`, `eval_every_steps`), step checkpoints
and a resume state naming the micro-batch reached and every rank's draws, so that a resume ends with the
uninterrupted run's exact weights."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from fold0123.common import rundir
from fold0123.common.schema import RunConfig
from fold0123.engine import distributed
from fold0123.engine.distributed import SINGLE, DistEnv
from fold0123.engine.saver import BackgroundSaver
from fold0123.engine.setup import cpu_extras_read, wrap_model
from fold0123.models.checkpoints import EMA_KEY, prune_checkpoints, prune_step_checkpoints, rng_state
from fold0123.models.ema import ema_weights
from fold0123.models.task import Task


@dataclass
class Trainee:
    """The model and everything that steps it; what a checkpoint saves and a resume restores."""
    model: torch.nn.Module  # the plain model (its state dict is what checkpoints hold)
    parallel: torch.nn.Module  # what batches go through: the model, or DistributedDataParallel over it
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    autocast_dtype: torch.dtype | None
    device: torch.device
    channels_last: bool
    ema: torch.nn.Module | None = None  # the weights' moving average (models.ema, timm's ModelEmaV3); None: off
    env: DistEnv = SINGLE  # this process's rank in a multi-rank launch (engine.distributed)
    wrapped_for: tuple = ()  # the trainable parameters `parallel` was built over (DDP: rebuilt when they change)
    grad_compression: str = "none"  # DDP's all-reduce in fp16 or bf16 (engine.setup.wrap_model)

    def rewrap(self) -> None:
        """After a freeze change (apply_freeze), DDP over the parameters that now train: DDP hooks the parameters
        that require gradients when it is built, and would wait forever for one frozen since, or miss one thawed."""
        if not self.env.distributed:
            return
        trainable = tuple(p.requires_grad for p in self.model.parameters())
        if trainable != self.wrapped_for:
            self.parallel = None  # drop the old wrapper (and its gradient hooks) before building the next
            self.parallel = wrap_model(self.model, self.device, self.env, self.grad_compression)
            self.wrapped_for = trainable


def weights_state(trainee: Trainee, task: Task, cfg: RunConfig, epoch: int) -> dict:
    """`{epoch}.pth`: what evaluation, transfer and soups need; with EMA on, its weights too (EMA_KEY)."""
    state = {"epoch": epoch, "split": cfg.split, "config": cfg.model_dump(mode="json"),
             "model": {k: v.detach().cpu() for k, v in trainee.model.state_dict().items()},
             "task_state": {str(k): float(v) for k, v in task.state.items()}}
    if trainee.ema is not None:
        state[EMA_KEY] = ema_weights(trainee.ema)
    return state


def resume_state(trainee: Trainee, cfg: RunConfig, epoch: int, global_step: int) -> dict:
    """resume.pth: what continues training after `epoch` (with that epoch's weights, and their EMA: its state is
    those weights and `global_step`), the thread count the run was trained with and what its `cpu_extras` read
    (a resume keeps both: numerics, trainer.as_started) and its world size (a resume on another may change it:
    check_resumed_world_size)."""
    return {"epoch": epoch, "global_step": global_step, "threads": cfg.threads, "cpu_extras": cpu_extras_read(cfg),
            "world_size": trainee.env.world_size,
            "optimizer": trainee.optimizer.state_dict(),
            "scheduler": trainee.scheduler.state_dict(), "scaler": trainee.scaler.state_dict(), "rng": rng_state()}


def part_way(run: Path, state: dict, cfg: RunConfig, env: DistEnv, epoch: int) -> tuple[int, dict | None]:
    """(micro-batches of `epoch` already trained, this rank's draws and sums at that point) from a resume state
    written part-way through it (save_every_steps); (0, None) at an epoch's end or with `reset_data_offset`."""
    batch, ranks = int(state.get("batch", 0)), state.get("ranks") or []
    where = f"after step {state['global_step']}"
    if batch and cfg.reset_data_offset:
        if env.is_main:
            print(f"{run}: resuming {where}, restarting epoch {epoch} from its first batch (reset_data_offset)",
                  file=sys.stderr)
        return 0, None
    if not batch:
        if env.is_main:
            print(f"{run}: resuming after epoch {epoch - 1}", file=sys.stderr)
        return 0, None
    if env.is_main:
        print(f"{run}: resuming {where}, part-way through epoch {epoch} (after its micro-batch {batch})",
              file=sys.stderr)
    if len(ranks) != env.world_size:
        if env.is_main:
            print(f"{run}: stopped on {len(ranks)} rank(s), resumed on {env.world_size}: the rest of epoch {epoch} "
                  f"draws its augmentation afresh, so it is not the uninterrupted run's (reset_data_offset=true "
                  f"restarts the epoch instead)", file=sys.stderr)
        return batch, None
    return batch, ranks[env.rank]


class StepSaver:
    """`train_epoch`'s on_step: every `save_every_steps` a step checkpoint and a resume state that continues from
    it, every `eval_every_steps` a step checkpoint kept for the watcher. A step that ends an epoch (or the run,
    max_steps) is saved as the epoch's checkpoint instead. Every rank calls it (their draws are gathered)."""

    def __init__(self, trainee: Trainee, task: Task, cfg: RunConfig, run: Path, saver: BackgroundSaver,
                 n_batches: int):
        self.trainee, self.task, self.cfg, self.run, self.saver = trainee, task, cfg, run, saver
        self.n_batches = n_batches
        self.resume_step: int | None = None  # the step resume.pth continues from (None: an epoch's end)

    def __call__(self, epoch: int, step: int, batch: int, state: Callable[[], dict]) -> None:
        cfg = self.cfg
        resume = bool(cfg.save_every_steps) and step % cfg.save_every_steps == 0
        keep = bool(cfg.eval_every_steps) and step % cfg.eval_every_steps == 0
        if not (resume or keep) or batch == self.n_batches or step == cfg.max_steps:
            return
        ranks = distributed.gather_objects(self.trainee.env, state())  # a collective: before rank 0's return
        if not self.trainee.env.is_main:
            return
        weights = {**weights_state(self.trainee, self.task, cfg, epoch), "step": step, "batch": batch}
        files = [(rundir.step_checkpoint_path(self.run, step), weights)]
        if resume:
            files.append((rundir.resume_path(self.run),
                          {**resume_state(self.trainee, cfg, epoch - 1, step), "batch": batch, "ranks": ranks}))
        if resume:
            self.resume_step = step
        kept, every = self.resume_step, cfg.eval_every_steps
        self.saver.save(files, then=lambda: prune_step_checkpoints(self.run, kept, every))

    def at_epoch_end(self) -> Callable[[], object]:
        """What runs after an epoch's resume state is written: the epoch checkpoints beyond `keep_last` go, and
        the step checkpoints the watcher does not need (resume.pth now continues from the epoch's end)."""
        self.resume_step = None
        run, keep_last, every = self.run, self.cfg.keep_last, self.cfg.eval_every_steps
        return lambda: (prune_checkpoints(run, keep_last), prune_step_checkpoints(run, None, every))
