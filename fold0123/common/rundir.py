"""Names of everything in a run directory, in one place, so writer, watcher and readers agree.

Layout (DESIGN.md section 3): `{checkpoints_dir}/{exp}_{split}/` with config.yml, `{epoch}.pth` (1-based, the
weights of each epoch), resume.pth (the one state to resume from: optimiser, scheduler, scaler, RNG, step; replaced
every epoch, see models.checkpoints), loss.log, tb/, eval/{tag}_{part}.npz and eval/{tag}_metrics.json (tag =
`epoch{E}`, or `soup{N}` for a model soup of the last N epochs, soup{N}.pth), DONE and FAILED markers. Only final
epoch names match `CHECKPOINT_RE` (resume.pth and soups do not); temporary names (fold0123.common.io.is_temporary)
never do, so a watcher that filters with `checkpoint_epoch` never sees a partial file.
"""
from __future__ import annotations

import re
from pathlib import Path

from fold0123.common.config import parse_value
from fold0123.data.layout import LayoutError

CHECKPOINT_RE = re.compile(r"^([1-9][0-9]*)\.pth$")
PARTS = ("oof", "test", "train")
DONE, FAILED = "DONE", "FAILED"  # markers: training finished / crashed (with the error line)
RESUME = "resume.pth"


def run_dir(cfg: dict, split: str) -> Path:
    return Path(cfg["checkpoints_dir"]) / f"{cfg['exp']}_{split}"


def config_path(run: Path) -> Path:
    return Path(run) / "config.yml"


def read_run_config(run: Path) -> dict:
    """The resolved config train.py wrote (with its `split`); LayoutError naming the file when it is not one."""
    path = config_path(run)
    if not path.is_file():
        raise LayoutError(f"{path}: run config not found (is {run} a run directory written by train.py?)")
    cfg = parse_value(path.read_text())
    if not isinstance(cfg, dict) or "split" not in cfg:
        raise LayoutError(f"{path}: not a resolved run config (no 'split' key)")
    return cfg


def checkpoint_path(run: Path, epoch: int) -> Path:
    return Path(run) / f"{int(epoch)}.pth"


def resume_path(run: Path) -> Path:
    """The run's resume state: written after each epoch's weights, atomically replacing the previous one."""
    return Path(run) / RESUME


def soup_path(run: Path, n: int) -> Path:
    return Path(run) / f"soup{int(n)}.pth"


def checkpoint_epoch(path: str | Path) -> int | None:
    """The epoch of a final checkpoint name (`3.pth` -> 3); None for anything else, temp names included."""
    match = CHECKPOINT_RE.match(Path(path).name)
    return int(match.group(1)) if match else None


def list_checkpoints(run: Path) -> list[tuple[int, Path]]:
    """(epoch, path) of the run's epoch checkpoints, in epoch order."""
    run = Path(run)
    if not run.is_dir():
        return []
    found = [(checkpoint_epoch(p), p) for p in run.iterdir()]
    return sorted((e, p) for e, p in found if e is not None)


def loss_log_path(run: Path) -> Path:
    return Path(run) / "loss.log"


def tb_dir(run: Path) -> Path:
    return Path(run) / "tb"


def eval_dir(run: Path) -> Path:
    return Path(run) / "eval"


def epoch_tag(epoch: int) -> str:
    return f"epoch{int(epoch)}"


def eval_npz_path(run: Path, tag: str, part: str) -> Path:
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}; expected one of {PARTS}")
    return eval_dir(run) / f"{tag}_{part}.npz"


def metrics_path(run: Path, tag: str) -> Path:
    return eval_dir(run) / f"{tag}_metrics.json"


def is_evaluated(run: Path, epoch: int) -> bool:
    """metrics.json is written last by the evaluator, so its presence means the epoch is fully evaluated."""
    return metrics_path(run, epoch_tag(epoch)).is_file()


def done_path(run: Path) -> Path:
    return Path(run) / DONE


def failed_path(run: Path) -> Path:
    return Path(run) / FAILED
