"""Read the run directories train.py and evaluate.py write (the contract in DESIGN.md §3).

Layout read, per run `{checkpoints_dir}/{exp}_{split}/` (names, the metrics reader and the epoch listing are
common.rundir's; the npz arrays are read here, the one place that needs them):
  eval/epoch{E}_{part}.npz      part in oof | test | train; arrays `ids` [n] (str), `outputs` [n, V, d] float32 or
                                float16 and `views` [V]: the 8 dihedral views in the order of rundir.VIEWS, or the
                                form `eval.views` kept (rundir.VIEW_FORMS; no `views`: all 8); predictions, not
                                logits. `outputs` is mapped, not read whole: readers take the rows they need
                                (Outputs.rows, .view), so a reader's memory follows its chunk, not n
  eval/epoch{E}_metrics.json    see common.rundir (read_metrics)

An epoch is resolved ONCE per experiment and used for every split of it ('last', 'best', an int or 'soup{N}'), so
the fold models whose out-of-fold rows are stacked together and the `all` model that predicts test are the same
recipe at the same point of training. 'best' picks the epoch with the best mean-over-folds primary metric (this
looks at the folds' own validation rows, as the original did; the stack's CV is then slightly optimistic).
'soup{N}' reads each run's uniform soup of its last N epochs (eval/soup{N}_*, `evaluate.py --soup N`, which the
recipe runs for the soups its stack names); a resolved choice is then that tag instead of an epoch number.
'ema' reads the moving average of the weights (a run trained with `ema.decay` > 0) at the epoch 'last' resolves
to, eval/ema{E}_* (evaluate.py evaluates it beside each epoch), and 'ema{E}' that of epoch E; resolved, the tag.
An EMA evaluation older than that epoch is never taken in its place: its absence is an error naming the file.
"""
from __future__ import annotations

import os
import re
import zipfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from fold0123.common import rundir
from fold0123.common.rundir import VIEWS, RunError
from fold0123.data.layout import split_names
from fold0123.data.metrics import expected_class

SOUP_RE = re.compile(r"^soup([1-9][0-9]*)$")  # an eval tag / epoch spec: the uniform soup of the last N epochs
EMA_RE = re.compile(r"^ema([1-9][0-9]*)?$")  # an epoch spec: the EMA weights of the last epoch (`ema`) or of E


@dataclass(frozen=True)
class Outputs:
    """One eval file: `outputs[i]` holds the kept views' predictions for object `ids[i]` (`views` names them)."""
    ids: np.ndarray      # [n] str
    outputs: np.ndarray  # [n, V, d] as stored (float32, float16), read-only (a memory map of the file where it can
                         # be); read it through rows() and view(), which give float32
    path: Path
    views: tuple[str, ...] = VIEWS
    handle: object = field(default=None, repr=False, compare=False)  # the file as it was when mapped (see rows)

    @property
    def form(self) -> str:
        return next(form for form, names in rundir.VIEW_FORMS.items() if names == self.views)

    def rows(self, index=slice(None)) -> np.ndarray:
        """`[len(index), V, d]` float32 of the rows `index` (positions in the file). A mapped file is read with
        plain reads of the span the rows cover, never through the map: mapped pages once touched count in the
        process's resident memory until it exits, read ones stay in the OS's page cache only. The reads go through
        the handle opened with the map, so a file replaced meanwhile (a re-evaluation) is never read half old."""
        mapped = self.outputs
        if not isinstance(mapped, np.memmap) or not mapped.flags.c_contiguous or self.handle is None:
            return np.asarray(mapped[index], dtype=np.float32)
        rows = np.arange(len(mapped))[index] if isinstance(index, slice) else np.asarray(index, np.int64)
        if rows.size == 0:
            return np.zeros((0, *mapped.shape[1:]), np.float32)
        low, high = int(rows.min()), int(rows.max()) + 1
        row_values = int(np.prod(mapped.shape[1:]))
        size = mapped.dtype.itemsize
        data = os.pread(self.handle.fileno(), (high - low) * row_values * size, mapped.offset + low * row_values * size)
        block = np.frombuffer(data, mapped.dtype)
        block = block.reshape(high - low, *mapped.shape[1:])
        whole_span = len(rows) == high - low and bool(np.all(np.diff(rows) == 1))
        return (block if whole_span else block[rows - low]).astype(np.float32, copy=False)

    def view(self, name: str, index=slice(None)) -> np.ndarray:
        """`[len(index), d]` float32: the views' mean (`mean`) or one view, from whatever the file kept; a view it
        did not keep is a one-line RunError."""
        if name in self.views:
            return self.rows(index)[:, self.views.index(name)]
        if name == "mean" and self.views == VIEWS:
            return self.rows(index).mean(axis=1)
        raise RunError(f"{self.path}: holds the views {list(self.views)} (eval.views: {self.form}), not {name!r}: "
                       f"evaluate the run again with eval.views: all")

    def require_all_views(self, what: str) -> None:
        if self.views != VIEWS:
            raise RunError(f"{self.path}: holds the views {list(self.views)} (eval.views: {self.form}), so {what} "
                           f"cannot come from it: use aggregations: [mean], or evaluate with eval.views: all")


def _npz_member(handle, name: str) -> np.ndarray | None:
    """A read-only memory map of the array `name` of the npz open as `handle`, stored uncompressed (np.savez
    writes them so), or None when it is compressed (then np.load reads it whole)."""
    info = zipfile.ZipFile(handle).getinfo(f"{name}.npy")
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    handle.seek(info.header_offset)
    local = handle.read(30)  # the zip local file header: name and extra-field lengths at bytes 26..29
    name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
    handle.seek(info.header_offset + 30 + name_len + extra_len)
    version = np.lib.format.read_magic(handle)
    shape, fortran, dtype = (np.lib.format.read_array_header_1_0(handle) if version == (1, 0)
                             else np.lib.format.read_array_header_2_0(handle))
    offset = handle.tell()
    if dtype.hasobject:
        raise ValueError(f"array {name!r} holds Python objects")
    if not shape or 0 in shape:
        return np.zeros(shape, dtype)
    return np.memmap(handle, dtype=dtype, mode="r", shape=shape, offset=offset, order="F" if fortran else "C")


CHUNK_VALUES = 1 << 20  # values per read where a reader walks a whole file (the finite check, the ensemble)


run_dir = rundir.run_path  # {checkpoints_dir}/{exp}_{split}


def as_target(task: str, outputs: np.ndarray) -> np.ndarray:
    """A run's outputs ([..., d], views kept or averaged) as target predictions: the value (target), the
    expected class (onehot probabilities)."""
    if task == "target":
        return outputs[..., 0]
    if task == "onehot":
        return expected_class(outputs)
    raise ValueError(f"task {task!r} has no direct target prediction")


def round_entry(name: str, split_suffix: str = "") -> tuple[str, str]:
    """(experiment, split suffix) of an ensemble entry: `onehot` is the stack's own round (`split_suffix`),
    `onehot@_pseudo2` that experiment's runs of another round (the runs `{exp}_{split}_pseudo2`), so one final
    ensemble can mix rounds, as the ACCV 2022 winner's did."""
    exp, at, suffix = name.partition("@")
    return (exp, suffix) if at else (name, split_suffix)


def fold_splits(k: int, split_suffix: str = "") -> list[str]:
    """The K fold splits of a round (`{K}fold{k}{suffix}`), without `all`."""
    return [f"{split}{split_suffix}" for split in split_names(k) if split != "all"]


def _existing_run(run: Path) -> Path:
    if not run.is_dir():
        raise RunError(f"{run}: run directory not found (train it, or fix checkpoints_dir / the run name)")
    return run


def eval_tag(epoch: int | str) -> str:
    """The eval tag of a resolved choice: `epoch{E}` for an epoch number, the tag itself (`soup5`) otherwise."""
    return rundir.epoch_tag(epoch) if isinstance(epoch, int) else str(epoch)


def choice_label(epoch: int | str) -> str:
    """How reports name a resolved choice: `epoch 3`, `soup5`."""
    return f"epoch {epoch}" if isinstance(epoch, int) else str(epoch)


def eval_path(run: Path, epoch: int | str, part: str) -> Path:
    """The eval npz of an epoch or an eval tag such as `soup5` (rundir names them by tag)."""
    return rundir.eval_npz_path(run, eval_tag(epoch), part)


@lru_cache(maxsize=256)
def _load_npz(path: str, mtime_ns: int, size: int) -> Outputs:
    handle = None
    try:
        handle = open(path, "rb")  # everything below reads this one file, even if it is replaced meanwhile
        with np.load(handle, allow_pickle=False) as data:
            if "ids" not in data or "outputs" not in data:
                raise RunError(f"{path}: expected arrays 'ids' and 'outputs' (has {', '.join(data.files)})")
            ids = data["ids"]
            views = tuple(str(v) for v in data["views"]) if "views" in data else VIEWS
            outputs = _npz_member(handle, "outputs")
            if outputs is None:
                outputs = data["outputs"]
        found = _checked(path, ids, outputs, views, handle if isinstance(outputs, np.memmap) else None)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, RunError) as err:  # EOFError: a zero-byte file
        if handle is not None:
            handle.close()
        if isinstance(err, RunError):
            raise
        raise RunError(f"{path}: not a readable npz ({str(err).splitlines()[0]})") from None
    if found.handle is None:
        handle.close()
    return found


def _checked(path: str, ids: np.ndarray, outputs: np.ndarray, views: tuple, handle) -> Outputs:
    """The file's arrays as Outputs, once their types, shapes and values are what the contract says."""
    if ids.dtype.kind != "U":
        raise RunError(f"{path}: 'ids' must be a unicode string array, got dtype {ids.dtype}")
    if views not in rundir.VIEW_FORMS.values():
        raise RunError(f"{path}: 'views' {list(views)} is none of the forms {', '.join(rundir.VIEW_FORMS)}")
    if outputs.ndim != 3 or outputs.shape[1] != len(views) or outputs.shape[0] != len(ids):
        raise RunError(f"{path}: 'outputs' must be [n={len(ids)}, {len(views)}, d], got {list(outputs.shape)}")
    if outputs.dtype.kind not in "fiu":  # evaluate.py writes float32 or float16; rows() reads any as float32
        raise RunError(f"{path}: 'outputs' must be numbers (float32 or float16), got dtype {outputs.dtype}")
    found = Outputs(ids=ids, outputs=outputs, path=Path(path), views=views, handle=handle)
    step = max(1, CHUNK_VALUES // max(int(np.prod(outputs.shape[1:])), 1))
    for start in range(0, len(ids), step):
        chunk = found.rows(slice(start, start + step))
        if not np.isfinite(chunk).all():
            row = start + int(np.flatnonzero(~np.isfinite(chunk).reshape(len(chunk), -1).all(axis=1))[0])
            raise RunError(f"{path}: non-finite outputs for object_id {ids[row]!r}")
    if not isinstance(outputs, np.memmap):
        outputs.flags.writeable = False
    ids.flags.writeable = False
    return found


def load_outputs(run: str | Path, epoch: int | str, part: str) -> Outputs:
    """The eval file of `run` at `epoch` (or an eval tag such as `soup3`) for `part`; cached until the file
    changes (size or mtime)."""
    run = _existing_run(Path(run))
    path = eval_path(run, epoch, part)
    if not path.is_file():
        have = rundir.evaluated_epochs(run, part)
        raise RunError(f"{path}: missing (epoch {epoch}, part {part}; this run has {part} at epochs {have or 'none'})")
    stat = os.stat(path)
    return _load_npz(str(path), stat.st_mtime_ns, stat.st_size)


def run_task(checkpoints_dir: str | Path, exp: str, split: str) -> str:
    """The task of an experiment, from the metrics of its first evaluated epoch on `split`."""
    run = _existing_run(run_dir(checkpoints_dir, exp, split))
    epochs = rundir.evaluated_epochs(run, "test") or rundir.evaluated_epochs(run, "oof")
    if not epochs:
        raise RunError(f"{run}: no evaluated epoch yet (no eval/epoch*_oof.npz or _test.npz)")
    return rundir.read_metrics(run, rundir.epoch_tag(epochs[0]))["task"]


METRIC_COLUMNS = ["exp", "task", "split", "epoch", "metric", "value", "lower_is_better"]


def _primary_row(run: Path, tag: str, exp: str, split: str, epoch: int | str) -> dict:
    """One METRIC_COLUMNS row: the primary metric of `run`'s `tag`, read from the task's primary view."""
    metrics = rundir.read_metrics(run, tag)
    primary, view = metrics["primary"], rundir.primary_view(metrics)
    value = metrics["views"].get(view, {}).get(primary)
    if value is None:
        raise RunError(f"{rundir.metrics_path(run, tag)}: views.{view} has no primary metric {primary!r}")
    return dict(exp=exp, task=metrics["task"], split=split, epoch=epoch, metric=primary, value=float(value),
                lower_is_better=bool(metrics["lower_is_better"]))


def metrics_table(checkpoints_dir: str | Path, exp: str, fold_splits: list[str]) -> pd.DataFrame:
    """Every evaluated epoch of the fold runs of `exp`: one row per (epoch, split) with the primary metric.

    Columns: exp, task, split, epoch, metric, value, lower_is_better (the value is on the task's primary view:
    the mean of the 8 views unless the metrics file names another, common.rundir.primary_view).
    """
    rows = []
    for split in fold_splits:
        run = _existing_run(run_dir(checkpoints_dir, exp, split))
        for epoch in rundir.evaluated_epochs(run, "oof"):
            if not rundir.is_evaluated(run, epoch):
                continue  # evaluate.py writes the metrics after the npz files; this epoch is still being written
            rows.append(_primary_row(run, rundir.epoch_tag(epoch), exp, split, epoch))
    return pd.DataFrame(rows, columns=METRIC_COLUMNS)


def choice_metrics(checkpoints_dir: str | Path, exp: str, fold_splits: list[str], epoch: int | str) -> pd.DataFrame:
    """The fold runs' metrics at a resolved choice (an epoch, or a tag such as `soup5`): metrics_table's columns,
    one row per split."""
    rows = [_primary_row(run_dir(checkpoints_dir, exp, split), eval_tag(epoch), exp, split, epoch)
            for split in fold_splits]
    return pd.DataFrame(rows, columns=METRIC_COLUMNS)


def soup_size(spec) -> int | None:
    """N of a `soup{N}` spec, None for anything else."""
    match = SOUP_RE.match(spec) if isinstance(spec, str) else None
    return int(match.group(1)) if match else None


def resolve_soup(checkpoints_dir: str | Path, exp: str, fold_splits: list[str], tag: str) -> str:
    """`soup{N}` -> the tag, once every fold run of `exp` has it evaluated (oof npz + metrics) and all of them
    souped up to the same epoch (the same point of training, as 'last' requires)."""
    last = {}
    for split in fold_splits:
        run = _existing_run(run_dir(checkpoints_dir, exp, split))
        if not (rundir.metrics_path(run, tag).is_file() and eval_path(run, tag, "oof").is_file()):
            raise RunError(f"{rundir.metrics_path(run, tag)}: missing: make the soup with evaluate.py --run {run} "
                           f"--soup {soup_size(tag)} (the recipe makes the soups its stack names)")
        last[split] = rundir.read_metrics(run, tag)["epoch"]
    if len(set(last.values())) > 1:
        behind = min(last, key=lambda s: last[s] or 0)
        raise RunError(f"{rundir.metrics_path(run_dir(checkpoints_dir, exp, behind), tag)}: souped up to epoch "
                       f"{last[behind]}, the other folds up to {max(v or 0 for v in last.values())}: make it again "
                       f"(evaluate.py --run ... --soup {soup_size(tag)})")
    return tag


def resolve_ema(checkpoints_dir: str | Path, exp: str, fold_splits: list[str], spec: str) -> str:
    """`ema` -> `ema{L}` (L: the epoch 'last' resolves to), `ema{E}` -> itself, once every fold run of `exp` has
    that tag evaluated (oof npz + metrics). A run trained without EMA, or whose EMA of that epoch is not evaluated
    (an older one does not stand in for it), is a one-line RunError naming it."""
    number = EMA_RE.match(spec).group(1)
    epoch = int(number) if number else resolve_epoch(checkpoints_dir, exp, fold_splits, "last")
    tag = rundir.ema_tag(epoch)
    for split in fold_splits:
        run = _existing_run(run_dir(checkpoints_dir, exp, split))
        if rundir.metrics_path(run, tag).is_file() and eval_path(run, tag, "oof").is_file():
            continue
        if rundir.read_run_config(run).ema.decay <= 0:
            raise RunError(f"{run}: has no EMA weights (trained with ema.decay 0), so `{exp}: {spec}` cannot be "
                           f"stacked: set ema.decay (e.g. 0.998) in its config and train it again, or choose "
                           f"another epoch for {exp} in `runs`")
        raise RunError(f"{rundir.metrics_path(run, tag)}: missing: the EMA weights of epoch {epoch} are not "
                       f"evaluated (evaluate.py --run {run} --epoch {epoch} evaluates them)")
    return tag


def resolve_epoch(checkpoints_dir: str | Path, exp: str, fold_splits: list[str], spec) -> int | str:
    """'last' | 'best' | int -> one epoch that every fold run of `exp` has evaluated (oof npz + metrics);
    'soup{N}' -> that tag, once every fold run has its soup evaluated (resolve_soup); 'ema' | 'ema{E}' -> the
    tag of those EMA weights, once every fold run has them evaluated (resolve_ema)."""
    if soup_size(spec) is not None:
        return resolve_soup(checkpoints_dir, exp, fold_splits, spec)
    if isinstance(spec, str) and EMA_RE.match(spec):
        return resolve_ema(checkpoints_dir, exp, fold_splits, spec)
    table = metrics_table(checkpoints_dir, exp, fold_splits)
    per_split = {split: set(table.loc[table["split"] == split, "epoch"]) for split in fold_splits}
    for split, epochs in per_split.items():
        if not epochs:
            run = run_dir(checkpoints_dir, exp, split)
            raise RunError(f"{run}: no evaluated epoch (eval/epoch*_oof.npz with its metrics json)")
    common = sorted(set.intersection(*per_split.values()))
    if isinstance(spec, str) and spec.isdigit():
        spec = int(spec)
    if isinstance(spec, int) and not isinstance(spec, bool):
        for split, epochs in per_split.items():
            if spec not in epochs:
                run = run_dir(checkpoints_dir, exp, split)
                raise RunError(f"{eval_path(run, spec, 'oof')}: epoch {spec} of {exp} not evaluated "
                               f"(has {sorted(epochs)})")
        return spec
    if not common:
        raise RunError(f"{exp}: its fold runs {fold_splits} have no evaluated epoch in common "
                       f"({ {s: sorted(e) for s, e in per_split.items()} })")
    if spec == "last":
        # every fold at the same point of training: a fold whose newest evaluation lags the others is an error
        # (naming it), never a silent fall-back to an earlier epoch of all of them
        newest = {split: max(epochs) for split, epochs in per_split.items()}
        if len(set(newest.values())) > 1:
            behind = min(newest, key=newest.get)
            raise RunError(f"{run_dir(checkpoints_dir, exp, behind)}: newest evaluated epoch {newest[behind]}, "
                           f"the other folds' {max(newest.values())}: evaluate it (evaluate.py --run ... --epoch "
                           f"{max(newest.values())}) or name an epoch for {exp} in `runs`")
        return common[-1]
    if spec == "best":
        means = table[table["epoch"].isin(common)].groupby("epoch")["value"].mean()
        lower = bool(table["lower_is_better"].iloc[0])
        return int(means.idxmin() if lower else means.idxmax())
    raise RunError(f"{exp}: epoch must be 'last', 'best', an integer, 'soup<N>' or 'ema', got {spec!r}")
