"""Evaluate one checkpoint of a run: the task's predictions for all 8 dihedral views of every object of each
part, saved as eval/{tag}_{part}.npz (`ids` [n], `outputs` [n, V, d], `views` [V]: the 8 views, or what
`eval.views` keeps of them, in `eval.dtype`; common.rundir.VIEW_FORMS), then eval/{tag}_metrics.json. The metrics
are computed from the float32 predictions before anything is dropped, so every form scores the same.

metrics.json is written last: its presence is what tells the watcher (and a restarted watcher) that the epoch
is fully evaluated. Parts: `oof` (the split's held-out, labelled rows; fold splits only), `test` (test.csv) and
`train` (the split's train rows; only at the epochs the config lists, or when asked). A run with `ema.decay` > 0
keeps the moving average of its weights in each `{epoch}.pth` too (models.ema): `evaluate_epoch` evaluates both,
the EMA weights under the tag `ema{E}` (metrics with "ema": true), so stacking can choose either.
"""
from __future__ import annotations

import sys
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from fold0123.common.errors import UsageError
from fold0123.common.io import atomic_path, write_json
from fold0123.common.schema import RunConfig
from fold0123.common import rundir
from fold0123.data.datasets import normalize
from fold0123.data.images import ImageCache
from fold0123.data.npy_rows import NpyRows
from fold0123.data.views import view_outputs
from fold0123.engine.setup import configure_torch, resolve_device, uses_channels_last, wrap_model
from fold0123.models.checkpoints import EMA_KEY, CheckpointError, load_weights, read_checkpoint
from fold0123.models.network import build_model
from fold0123.models.soup import uniform_soup
from fold0123.models.task import Task
from fold0123.models.tasks import get_task


def default_parts(cfg: RunConfig, epoch: int | None) -> list[str]:
    """The config's parts, plus `train` at `eval.train_epochs` for fold splits: their in-fold features feed the
    original's stacking variant; the `all` run's train rows feed nothing, so they are not evaluated unasked."""
    parts = list(cfg.eval.parts)
    wanted = epoch is not None and epoch in cfg.eval.train_epochs
    if wanted and not str(cfg.split or "").startswith("all") and "train" not in parts:
        parts.append("train")
    return parts


def load_model(run: Path, checkpoint: Path, device: torch.device, cfg: RunConfig | None = None, ema: bool = False):
    """(config, task with the checkpoint's state, model in eval mode on `device`) of `checkpoint`, a file of `run`
    (whose config.yml `cfg` is, when already read); `ema`: with the file's EMA weights instead of the raw ones. The
    model is built fresh from the file, so changing it never touches the checkpoint (retrieval.ttl relies on that)."""
    cfg = cfg or rundir.read_run_config(run)
    state = read_checkpoint(checkpoint)
    if ema and EMA_KEY not in state:
        raise CheckpointError(f"{checkpoint}: holds no EMA weights ({EMA_KEY}): the run was trained with ema.decay 0 "
                              f"(set ema.decay, e.g. 0.998, and train it again)")
    task = get_task(cfg.task, state.get("task_state"), cfg.dataroot)
    task.run = Path(run)
    model = build_model(cfg, task)
    load_weights(model, state[EMA_KEY if ema else "model"], checkpoint)
    model = model.to(device).eval()
    if uses_channels_last(cfg, device):
        model = model.to(memory_format=torch.channels_last)
    return cfg, task, model


def keep_views(outputs: torch.Tensor, form: str) -> torch.Tensor:
    """A batch's `[b, 8, d]` view predictions reduced to the form `eval.views` keeps (rundir.VIEW_FORMS), so an
    evaluation never holds more than the form of n rows."""
    if form == "all":
        return outputs
    mean = outputs.mean(dim=1, keepdim=True)
    return mean if form == "mean" else torch.cat([mean, outputs[:, :1]], dim=1)


@torch.no_grad()
def predicted_batches(model, task: Task, cache: ImageCache, ids, device: torch.device, batch_size: int,
                      views: bool = True, channels_last: bool = False, form: str = "all") -> Iterator[np.ndarray]:
    """Task predictions, a batch of ids at a time (float32): `[b, 8, d]` for the 8 views of each image (views in
    data.views.VIEW_NAMES order; with `form` what keep_views keeps of them), or `[b, d]` for the image as it is
    (`views=False`), read from the memmap `cache` in file order."""
    index = cache.rows(ids)

    def predict(images: torch.Tensor) -> torch.Tensor:
        x = normalize(images)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        pred = task.predict(model(x).float())
        return pred.reshape(pred.shape[0], -1)

    for start in range(0, len(index), batch_size):
        rows = np.sort(index[start:start + batch_size])
        order = np.argsort(np.argsort(index[start:start + batch_size]))  # memmap reads in file order
        images = torch.from_numpy(np.ascontiguousarray(cache.array[rows][order])).permute(0, 3, 1, 2).to(device)
        batch = keep_views(view_outputs(predict, images), form) if views else predict(images)
        yield batch.float().cpu().numpy()


def predict_images(model, task: Task, cache: ImageCache, ids, device: torch.device, batch_size: int,
                   views: bool = True, channels_last: bool = False, form: str = "all") -> np.ndarray:
    """predicted_batches, whole: `[n, 8, d]` (or the form's views) or `[n, d]`."""
    outputs = list(predicted_batches(model, task, cache, ids, device, batch_size, views, channels_last, form))
    if not outputs:
        return np.zeros((0, len(rundir.VIEW_FORMS[form]), 0) if views else (0, 0), dtype=np.float32)
    return np.concatenate(outputs).astype(np.float32, copy=False)


class NpzStream:
    """An uncompressed .npz written array by array into an open file, the big one a batch of rows at a time
    (np.savez needs it whole; a wide test part of 90k rows would be gigabytes in memory). The members are stored
    as np.savez stores them, so np.load and the mapped readers (stacking.runs) read it the same."""

    def __init__(self, file):
        self.zip = zipfile.ZipFile(file, "w", zipfile.ZIP_STORED, allowZip64=True)

    def add(self, name: str, array: np.ndarray) -> None:
        with self.zip.open(f"{name}.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array(f, np.asanyarray(array), allow_pickle=False)

    @contextmanager
    def rows(self, name: str, n: int, dtype: str):
        """A `write(batch)` for an [n, ...] array in `dtype`, n > 0; its header is written with the first batch
        (which gives the other dimensions), and exactly n rows must arrive."""
        with self.zip.open(f"{name}.npy", "w", force_zip64=True) as f:
            rows = NpyRows(f, dtype)
            yield lambda batch: rows(batch, n)
        if rows.written != n:
            raise ValueError(f"NpzStream: {rows.written} rows of {name!r} written, {n} announced")

    def close(self) -> None:
        self.zip.close()

    def __enter__(self) -> "NpzStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_part(path: Path, ids, batches: Iterator[np.ndarray], form: str, dtype: str,
               scored: bool = True) -> tuple[list, list]:
    """One part's eval npz, streamed (NpzStream), atomically; `batches` hold the 8 views (`form` all) or the mean
    and the identity view (the others), from which the form's views are kept. Returns the rows' mean and identity
    views, batch by batch (float32), which the metrics read (`scored`: the oof part; none for the others)."""
    means, identities = [], []
    views = rundir.VIEW_FORMS[form]
    with atomic_path(path) as tmp, open(tmp, "wb") as f, NpzStream(f) as npz:
        npz.add("ids", np.asarray(list(ids), dtype=str))
        npz.add("views", np.asarray(views))
        if not len(ids):
            npz.add("outputs", np.zeros((0, len(views), 0), dtype))
            return means, identities
        with npz.rows("outputs", len(ids), dtype) as write:
            for batch in batches:
                if scored:
                    means.append(batch.mean(axis=1) if form == "all" else batch[:, 0])
                    identities.append(batch[:, 0] if form == "all" else batch[:, 1])
                write(batch[:, :len(views)])
    return means, identities


def evaluate_checkpoint(run: str | Path, epoch: int | None = None, parts=None, device: str | None = None,
                        checkpoint: str | Path | None = None, tag: str | None = None,
                        batch_size: int | None = None, ema: bool = False, extra: dict | None = None) -> dict:
    """Evaluate `{run}/{epoch}.pth` (or `checkpoint`, named `tag`), write the npz files and metrics.json; `ema`:
    the file's EMA weights, under the tag `ema{epoch}` unless `tag` says otherwise; `extra`: more metrics keys.

    Returns the metrics dict (also written to eval/{tag}_metrics.json when `oof` is among the parts or the split
    has no oof). Raises CheckpointError naming the file when the checkpoint is corrupt or truncated.
    """
    run = Path(run)
    cfg = rundir.read_run_config(run)
    if checkpoint is None:
        if epoch is None:
            raise ValueError("evaluate_checkpoint needs an epoch or a checkpoint path")
        checkpoint = rundir.checkpoint_path(run, epoch)
    tag = tag or (rundir.ema_tag(epoch) if ema else rundir.epoch_tag(epoch))
    parts = list(parts) if parts else default_parts(cfg, epoch)
    for part in parts:
        if part not in rundir.PARTS:
            raise UsageError(f"unknown part {part!r}; expected some of {', '.join(rundir.PARTS)}")

    device = resolve_device(device)
    configure_torch(cfg, device)
    cfg, task, model = load_model(run, checkpoint, device, cfg, ema=ema)
    model = wrap_model(model, device)
    channels_last = uses_channels_last(cfg, device)
    frames, cache = task.part_frames(cfg), task.image_cache(cfg)  # clip: the MUGE splits' galleries
    batch_size = int(batch_size or cfg.eval.batch_size)
    metrics = {"epoch": epoch, "task": cfg.task, "split": cfg.split, "n": 0,
               "primary": task.primary, "lower_is_better": bool(task.lower_is_better),
               "views": {"mean": {}, "identity": {}}}
    if task.primary_view != "mean":  # only then: every other task's metrics.json stays as it was
        metrics["primary_view"] = task.primary_view
    if ema:
        metrics["ema"] = True
    if epoch is None or tag not in (rundir.epoch_tag(epoch), rundir.ema_tag(epoch)):  # a soup: which file it was
        metrics["checkpoint"] = Path(checkpoint).name
    if "test" in parts and "test" in frames:  # which test tables it predicted (common.rundir.has_current_test)
        metrics["test_tables"] = rundir.test_tables_digest(cfg.dataroot)
    metrics.update(extra or {})
    for part in parts:
        if part not in frames:
            continue  # split `all` has no oof
        ids = list(frames[part]["object_id"])
        form = cfg.eval.views
        batches = predicted_batches(model, task, cache, ids, device, batch_size, channels_last=channels_last,
                                    form="all" if form == "all" else "mean_identity")  # the metrics need both
        means, identities = write_part(rundir.eval_npz_path(run, tag, part), ids, batches, form, cfg.eval.dtype,
                                       scored=part == "oof")
        if part == "oof":
            metrics["n"] = len(ids)
            metrics["views"] = {view: task.metrics(np.concatenate(rows) if rows else np.zeros((0, 0), np.float32),
                                                   frames["oof"], cfg.dataroot, cfg)
                                for view, rows in (("mean", means), ("identity", identities))}
    if "oof" in parts or "oof" not in frames:
        write_json(rundir.metrics_path(run, tag), metrics)
    return metrics


def evaluate_epoch(run: str | Path, epoch: int, parts=None, device: str | None = None, redo: bool = True,
                   batch_size: int | None = None) -> list[dict]:
    """Evaluate epoch `epoch` of `run`: its weights (tag `epoch{E}`) and, in a run with `ema.decay` > 0, their
    moving average (tag `ema{E}`); returns the metrics of each tag evaluated. `redo=False` skips a tag whose
    metrics.json exists (a restarted watcher finishing an epoch it had half done)."""
    run = Path(run)
    done = []
    for ema in (False, True) if rundir.has_ema(run) else (False,):
        tag = rundir.ema_tag(epoch) if ema else rundir.epoch_tag(epoch)
        if redo or not (rundir.is_evaluated(run, epoch, ema=ema) and rundir.has_current_test(run, tag)):
            done.append(evaluate_checkpoint(run, epoch, parts=parts, device=device, batch_size=batch_size, ema=ema))
    return done


def evaluate_step(run: str | Path, step: int, parts=None, device: str | None = None,
                  batch_size: int | None = None) -> dict:
    """Evaluate the step checkpoint `step{S}.pth` (eval_every_steps) under the tag `step{S}`; its metrics.json
    says the step and the epoch it fell in. Epoch picks (last, best, soups) never see it."""
    run = Path(run)
    return evaluate_checkpoint(run, None, parts=parts, device=device, batch_size=batch_size,
                               checkpoint=rundir.step_checkpoint_path(run, step), tag=rundir.step_tag(step),
                               extra={"step": int(step)})


def evaluate_soup(run: str | Path, n: int, parts=None, device: str | None = None) -> dict:
    """Uniform soup of the run's last `n` epoch checkpoints -> `{run}/soup{n}.pth`, evaluated under the tag
    `soup{n}` (eval/soup{n}_{part}.npz, eval/soup{n}_metrics.json with "epoch" = the last souped epoch)."""
    run = Path(run)
    found = rundir.list_checkpoints(run)
    if n < 1:
        raise UsageError(f"--soup {n}: a soup averages the last N >= 1 epoch checkpoints")
    if len(found) < n:
        raise UsageError(f"{run}: --soup {n} needs {n} epoch checkpoints, found {len(found)}")
    chosen = found[-n:]
    out = rundir.soup_path(run, n)
    uniform_soup([p for _, p in chosen], out)
    print(f"{out}: uniform soup of epochs {', '.join(str(e) for e, _ in chosen)}", file=sys.stderr)
    return evaluate_checkpoint(run, chosen[-1][0], parts=parts, device=device, checkpoint=out, tag=f"soup{n}")
