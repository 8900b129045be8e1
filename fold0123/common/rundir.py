"""Names of everything in a run directory, and the readers of its small files, in one place, so writer, watcher
and readers agree (the stacking room and the monitor read through here; the npz arrays are read by stacking.runs).

Layout (DESIGN.md section 3): `{checkpoints_dir}/{exp}_{split}/` with config.yml, fingerprint.json (what made
the run, common.fingerprint), `{epoch}.pth` (1-based, the weights of each epoch), resume.pth (the one state to
resume from: optimiser, scheduler, scaler, RNG, step; replaced every epoch, see models.checkpoints), loss.log, tb/,
eval/{tag}_{part}.npz and eval/{tag}_metrics.json (tag = `epoch{E}`; `ema{E}` for the moving average of the
weights that `{E}.pth` holds beside them in a run with `ema.decay` > 0; `soup{N}` for a model soup of the last N
epochs, soup{N}.pth), DONE and FAILED markers. Only final epoch names match `CHECKPOINT_RE` (resume.pth and soups
do not); temporary names (fold0123.common.io.is_temporary) never do, so a watcher that filters with
`checkpoint_epoch` never sees a partial file. `evaluated_epochs` counts `epoch{E}` tags only.

eval/{tag}_{part}.npz: arrays `ids` [n] (str) and `outputs` [n, V, d] float32 or float16 (`eval.dtype`), and `views`
[V] (str), the names along axis 1: the 8 dihedral views in the order of VIEWS (`eval.views: all`, the default; a
file without `views` is this form), or the views' mean (`mean`), or the mean and the identity view
(`mean_identity`): VIEW_FORMS. Outputs are predictions in the task's saved space, not logits (class
probabilities after the softmax for the classification tasks).
eval/{tag}_metrics.json: {"epoch", "task", "split", "n", "primary", "lower_is_better",
"views": {"mean": {metric: value}, "identity": {...}}} (+ "checkpoint" for a soup; + "primary_view": "identity"
for a task whose primary metric is read from the identity view, clip's: absent means the 8-view mean, see
`primary_view`; + "ema": true for an `ema{E}` tag); split `all` has n = 0 and empty views. The evaluator writes it
after the npz files, so its presence means the tag is fully evaluated.
"""
from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

from fold0123.common.config import ConfigError, read_config_text
from fold0123.common.schema import RunConfig
from fold0123.common.errors import LayoutError
from fold0123.common.dataroot import test_tables
from fold0123.common.io import file_hash, folder_entries, read_user_text
from fold0123.common.names import check_name

CHECKPOINT_RE = re.compile(r"^([1-9][0-9]*)\.pth$")
STEP_CHECKPOINT_RE = re.compile(r"^step([1-9][0-9]*)\.pth$")
PARTS = ("oof", "test", "train")
DONE, FAILED = "DONE", "FAILED"  # markers: training finished / crashed (with the error line)
# The 8 dihedral views along axis 1 of every eval npz (data.views applies them, in this order).
VIEWS = ("identity", "h", "v", "hv", "r", "hr", "vr", "hvr")
# What eval.views keeps along that axis: the names an npz's `views` array holds for each form.
VIEW_FORMS = {"all": VIEWS, "mean": ("mean",), "mean_identity": ("mean", "identity")}
METRICS_KEYS = ("epoch", "task", "split", "n", "primary", "lower_is_better", "views")
METRIC_VIEWS = ("mean", "identity")  # the views metrics.json scores: the 8-view mean and the identity view
RESUME = "resume.pth"


class RunError(LayoutError):
    """A run, epoch or eval file that is missing or malformed (one line naming it)."""


def run_path(checkpoints_dir: str | Path, exp: str, split: str) -> Path:
    return Path(checkpoints_dir) / f"{check_name(exp, 'experiment name')}_{check_name(split, 'split name')}"


def run_dir(cfg: RunConfig, split: str) -> Path:
    return run_path(cfg.checkpoints_dir, cfg.exp, split)


def cache_dir(checkpoints_dir: str | Path) -> Path:
    """The decoded-image caches (data.images) and the photo features of every run under `checkpoints_dir`."""
    return Path(checkpoints_dir) / "cache"


def config_path(run: Path) -> Path:
    return Path(run) / "config.yml"


def read_run_config(run: Path) -> RunConfig:
    """The resolved config train.py wrote (with its `split`); ConfigError naming the file when it is not one."""
    path = config_path(run)
    if not path.is_file():
        raise ConfigError(f"{path}: run config not found (is {run} a run directory written by train.py?)")
    cfg = read_config_text(read_user_text(path, "run config", ConfigError), RunConfig, str(path))
    if cfg.split is None:
        raise ConfigError(f"{path}: not a resolved run config (no 'split' key)")
    return cfg


def eval_lock_path(run: Path) -> Path:
    """Held (flock) by the run's one `evaluate.py --watch`; holds its PID."""
    return Path(run) / "eval.lock"


TRAIN_LOCK = "train.lock"


def train_lock_path(run: Path) -> Path:
    """Held (flock) by the run's one training process (train.py); holds its PID."""
    return Path(run) / TRAIN_LOCK


def fingerprint_path(run: Path) -> Path:
    """What made the run (common.fingerprint): its config's identity and digests of its inputs."""
    return Path(run) / "fingerprint.json"


def resolve_transfer(cfg: RunConfig, quiet: bool = False) -> Path | None:
    """`transfer_from` as a checkpoint file: a .pth path, a run directory, or a run name under checkpoints_dir
    (a run resolves to its last epoch checkpoint)."""
    source = cfg.transfer_from
    if not source:
        return None
    candidates = [Path(source), Path(cfg.checkpoints_dir) / str(source)]
    for path in candidates:
        if path.is_file():
            return path
        if path.is_dir():
            found = list_checkpoints(path)
            if not found:
                raise RunError(f"transfer_from {source!r}: run directory {path} holds no epoch checkpoint yet")
            if not done_path(path).is_file() and not quiet:
                print(f"warning: transfer_from {path} has no DONE marker; using its last epoch {found[-1][0]}",
                      file=sys.stderr)
            return found[-1][1]
    raise RunError(f"transfer_from {source!r}: transfer checkpoint not found "
                   f"(looked for {candidates[0]} and {candidates[1]})")


def checkpoint_path(run: Path, epoch: int) -> Path:
    return Path(run) / f"{int(epoch)}.pth"


def step_checkpoint_path(run: Path, step: int) -> Path:
    """The weights after optimiser step `step`, written inside an epoch (save_every_steps, eval_every_steps)."""
    return Path(run) / f"step{int(step)}.pth"


def checkpoint_step(path: str | Path) -> int | None:
    """The step of a final step-checkpoint name (`step40.pth` -> 40); None for anything else."""
    return _numbered(STEP_CHECKPOINT_RE, path)


def list_step_checkpoints(run: Path) -> list[tuple[int, Path]]:
    """(step, path) of the run's step checkpoints, in step order."""
    return _listed(STEP_CHECKPOINT_RE, run)


def step_tag(step: int) -> str:
    """The eval tag of a step checkpoint; never `epoch...`, so the stack's epoch picks do not see it."""
    return f"step{int(step)}"


def resume_path(run: Path) -> Path:
    """The run's resume state: written after each epoch's weights, atomically replacing the previous one."""
    return Path(run) / RESUME


def soup_path(run: Path, n: int) -> Path:
    return Path(run) / f"soup{int(n)}.pth"


def checkpoint_epoch(path: str | Path) -> int | None:
    """The epoch of a final checkpoint name (`3.pth` -> 3); None for anything else, temp names included."""
    return _numbered(CHECKPOINT_RE, path)


def list_checkpoints(run: Path) -> list[tuple[int, Path]]:
    """(epoch, path) of the run's epoch checkpoints, in epoch order."""
    return _listed(CHECKPOINT_RE, run)


def _numbered(pattern: re.Pattern, path: str | Path) -> int | None:
    """The number a checkpoint name's pattern captures; None for any other name."""
    match = pattern.match(Path(path).name)
    return int(match.group(1)) if match else None


def _listed(pattern: re.Pattern, run: Path) -> list[tuple[int, Path]]:
    """(number, path) of the run's files whose names match `pattern`, in number order."""
    found = [(_numbered(pattern, p), p) for p in folder_entries(run)]
    return sorted((n, p) for n, p in found if n is not None)


def loss_log_path(run: Path) -> Path:
    return Path(run) / "loss.log"


def tb_dir(run: Path) -> Path:
    return Path(run) / "tb"


def eval_dir(run: Path) -> Path:
    return Path(run) / "eval"


def epoch_tag(epoch: int) -> str:
    return f"epoch{int(epoch)}"


def ema_tag(epoch: int) -> str:
    """The eval tag of the EMA weights saved in `{epoch}.pth` (a run with `ema.decay` > 0)."""
    return f"ema{int(epoch)}"


def has_ema(run: Path) -> bool:
    """Whether the run trains a moving average of its weights (its config.yml's `ema.decay` > 0), so each epoch
    has an `ema{E}` tag to evaluate besides `epoch{E}`; False while it has no readable config."""
    try:
        return read_run_config(run).ema.decay > 0
    except (OSError, ValueError):  # ConfigError is a ValueError
        return False


def eval_npz_path(run: Path, tag: str, part: str) -> Path:
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}; expected one of {PARTS}")
    return eval_dir(run) / f"{tag}_{part}.npz"


def metrics_path(run: Path, tag: str) -> Path:
    return eval_dir(run) / f"{tag}_metrics.json"


def is_evaluated(run: Path, epoch: int, ema: bool = False) -> bool:
    """metrics.json is written last by the evaluator, so its presence means the epoch (`ema`: its EMA weights) is
    fully evaluated."""
    return metrics_path(run, ema_tag(epoch) if ema else epoch_tag(epoch)).is_file()


def test_tables_digest(dataroot: str | Path) -> str:
    """What a test part was predicted from: each test set's table (common.dataroot.test_tables), by content. An
    eval's metrics.json keeps it, so an epoch evaluated before test B was added (or test.csv replaced) is
    evaluated again by the watcher and the launcher, though its run needs no training."""
    digest = hashlib.sha256()
    for table in test_tables(dataroot):
        content = file_hash(table).hexdigest() if table.is_file() else "missing"
        digest.update(f"{table.name}|{content}\n".encode())
    return digest.hexdigest()[:16]


def has_current_test(run: Path, tag: str) -> bool:
    """Whether eval `tag`'s test part (if the run evaluates one) was predicted from today's test tables; a
    metrics.json from before the digest was kept counts as test.csv alone."""
    try:
        cfg = read_run_config(run)
        stored = json.loads(metrics_path(run, tag).read_text()).get("test_tables")
    except (OSError, ValueError, AttributeError):  # no readable config or metrics: nothing says it is out of date
        return True
    if "test" not in cfg.eval.parts:
        return True
    if stored is None:
        return len(test_tables(cfg.dataroot)) == 1
    return stored == test_tables_digest(cfg.dataroot)


def is_fully_evaluated(run: Path, epoch: int) -> bool:
    """The epoch's weights are evaluated, and so are their EMA's where the run has one (`has_ema`), from today's
    test tables (`has_current_test`): what the watcher and the launcher's status wait for."""
    tags = [epoch_tag(epoch)] + ([ema_tag(epoch)] if has_ema(run) else [])
    return all(metrics_path(run, tag).is_file() and has_current_test(run, tag) for tag in tags)


def evaluated_epochs(run: Path, part: str | None = None) -> list[int]:
    """Epochs with a final eval/epoch{E}_metrics.json (`part` None: fully evaluated) or, for a part, an
    eval/epoch{E}_{part}.npz, in epoch order. Temporary names and soups never count; no eval/ is no epoch."""
    if part is not None and part not in PARTS:
        raise ValueError(f"unknown part {part!r}; expected one of {PARTS}")
    suffix = "_metrics.json" if part is None else f"_{part}.npz"
    epochs = []
    for path in folder_entries(eval_dir(run)):
        middle = path.name[len("epoch"):-len(suffix)]
        if path.name.startswith("epoch") and path.name.endswith(suffix) and middle.isdigit():
            epochs.append(int(middle))
    return sorted(epochs)


def read_metrics(run: Path, tag: str) -> dict:
    """eval/{tag}_metrics.json as a dict with every key of METRICS_KEYS; RunError naming the file otherwise."""
    path = metrics_path(run, tag)
    try:
        metrics = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunError(f"{path}: metrics file missing ({tag} not evaluated)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunError(f"{path}: not a readable metrics JSON ({' '.join(str(err).split())})") from None
    if not isinstance(metrics, dict):
        raise RunError(f"{path}: not a metrics JSON object")
    for key in METRICS_KEYS:
        if key not in metrics:
            raise RunError(f"{path}: missing key {key!r}")
    if not isinstance(metrics["views"], dict):
        raise RunError(f"{path}: 'views' must map view names to metrics")
    if metrics.get("primary_view", "mean") not in METRIC_VIEWS:
        raise RunError(f"{path}: 'primary_view' must be one of {', '.join(METRIC_VIEWS)}, "
                       f"got {metrics['primary_view']!r}")
    return metrics


def primary_view(metrics: dict) -> str:
    """The view a metrics dict's primary metric is read from: its `primary_view`, else the 8-view mean (every
    task but clip, whose metrics files predate the key or never need it)."""
    return str(metrics.get("primary_view", "mean"))


def done_path(run: Path) -> Path:
    return Path(run) / DONE


def failed_path(run: Path) -> Path:
    return Path(run) / FAILED
