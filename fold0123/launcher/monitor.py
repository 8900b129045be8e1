"""The loss-monitor pane: the original's `tail -f loss.log`, drawn as a live curve with the held-out metric beside it.

`python -m fold0123.launcher.monitor RUN_DIR [--once] [--follow] [--interval 1]`

Re-reads `loss.log` every interval (redrawing only when it or the evaluations changed, so four monitors cost
the trainers nothing), tolerates a missing file and a half-written last line (the trainer appends while we
read), and plots the training loss against the step with the evaluator's per-epoch held-out primary metric on
the right axis. The newest `eval/epoch*_metrics.json` is written under the plot. It exits after a final frame
once the run is DONE or FAILED, unless `--follow`; `--once` prints one frame and exits (what tests call).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from fold0123.common import rundir
from fold0123.common.io import folder_entries
from fold0123.common.poll import wait_until
from fold0123.launcher.status import read_status, training_done

LOG_COLUMNS = ("epoch", "step", "loss", "lr", "images_per_s")


@dataclass(frozen=True)
class LossPoint:
    epoch: int
    step: float
    loss: float
    lr: float
    images_per_s: float


@dataclass(frozen=True)
class EpochMetric:
    epoch: int
    name: str            # the primary metric's name, e.g. "rmse"
    value: float | None  # None for split `all` (no held-out rows)
    lower_is_better: bool
    n: int
    identity: float | None = None
    view: str = "mean"   # the view `value` is read from (common.rundir.primary_view)


def read_loss_log(path: str | Path) -> list[LossPoint]:
    """Parse loss.log; a missing file is an empty curve, and a line that is not whole yet is skipped."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return []
    lines = text.split("\n")
    if not text.endswith("\n"):
        lines = lines[:-1]  # the trainer is still writing the last line
    header = None
    points = []
    for line in lines:
        fields = line.split()
        if not fields:
            continue
        if header is None and _float(fields[0]) is None:
            header = fields
            continue
        names = header or list(LOG_COLUMNS)
        row = dict(zip(names, fields))
        try:
            points.append(LossPoint(int(float(row["epoch"])), float(row["step"]), float(row["loss"]),
                                    float(row.get("lr", "nan")), float(row.get("images_per_s", "nan"))))
        except (KeyError, ValueError):
            continue
    return points


def held_out_metrics(run_dir: str | Path) -> list[EpochMetric]:
    """Every evaluated epoch's primary held-out metric (on the task's primary view: the mean of the 8 views, or
    the identity view where metrics.json says so), in epoch order (common.rundir
    lists and reads the metrics files)."""
    run_dir = Path(run_dir)
    found = []
    for epoch in rundir.evaluated_epochs(run_dir):
        try:
            data = rundir.read_metrics(run_dir, rundir.epoch_tag(epoch))
            name, views = str(data["primary"]), data["views"]
            view = rundir.primary_view(data)
            primary, identity = views.get(view) or {}, views.get("identity") or {}
            found.append(EpochMetric(epoch, name, _float(primary.get(name)), bool(data["lower_is_better"]),
                                     int(data["n"]), _float(identity.get(name)), view))
        except (ValueError, TypeError, AttributeError):  # RunError included
            continue  # being replaced, or not ours: the next frame will see what is there then
    return found


def _float(value) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def run_state(run_dir: Path) -> str:
    """FAILED (trainer or, from the launcher's marker, evaluator) with its error line, DONE or running."""
    status = read_status(run_dir)
    if status.state == "failed":
        return "FAILED: " + status.detail.removeprefix("train: ")
    return "DONE" if training_done(run_dir) else "running"


def _x_values(points: list[LossPoint]) -> list[float]:
    """The step when it counts globally; a running index when it restarts each epoch."""
    steps = [p.step for p in points]
    if all(b >= a for a, b in zip(steps, steps[1:])):
        return steps
    return [float(i + 1) for i in range(len(points))]


def metric_line(metrics: list[EpochMetric]) -> str:
    if not metrics:
        return "held-out: not evaluated yet"
    last = metrics[-1]
    if last.value is None:
        return f"held-out: epoch {last.epoch} evaluated (split without held-out rows: test predictions only)"
    better = "lower" if last.lower_is_better else "higher"
    values = [m.value for m in metrics if m.value is not None]
    best = min(values) if last.lower_is_better else max(values)
    if last.view == "identity":
        view = "identity view, the task's primary"
    else:
        view = "8-view mean" + (f", identity view {last.identity:.4f}" if last.identity is not None else "")
    return (f"held-out {last.name} = {last.value:.4f} (epoch {last.epoch}, {view}; "
            f"best {best:.4f}, {better} is better; n={last.n})")


def _fit(text: str, width: int) -> str:
    """Wrap to the pane's width: a narrow pane must still show the whole metric."""
    return "\n".join(textwrap.wrap(text, width=max(width, 20))) or text


def render(run_dir: str | Path, width: int = 80, height: int = 20, color: bool = False) -> str:
    """One frame: a status line, the loss curve with the per-epoch metric on the right axis, the metric line."""
    import plotext as plt  # imported here so `--help` and the tests of the parsers stay fast

    run_dir = Path(run_dir)
    points = read_loss_log(rundir.loss_log_path(run_dir))
    metrics = held_out_metrics(run_dir)
    head = f"{run_dir.name}  [{run_state(run_dir)}]"
    under = _fit(metric_line(metrics), width)
    if not points:
        return "\n".join([_fit(head, width), f"waiting for {rundir.loss_log_path(run_dir)} ...", under])
    last = points[-1]
    speed = f"  {last.images_per_s:.0f} img/s" if last.images_per_s == last.images_per_s else ""
    head = _fit(f"{head}  epoch {last.epoch}  loss {last.loss:.4f}{speed}", width)
    fig = plt.figure
    fig.clear()
    fig.theme("dark" if color else "colorless")
    fig.plot_size(max(width, 30), max(height - head.count("\n") - under.count("\n") - 2, 8))
    xs = _x_values(points)
    loss = fig.signal(xs, [p.loss for p in points])
    loss.lines()
    fig.draw(loss)
    epoch_end = {p.epoch: x for x, p in zip(xs, points)}  # each evaluated epoch sits at its last logged step
    held = [(epoch_end[m.epoch], m.value) for m in metrics if m.value is not None and m.epoch in epoch_end]
    if held:
        metric = fig.signal([x for x, _ in held], [v for _, v in held], yside="right")
        metric.lines()
        fig.draw(metric)
        fig.label(f"held-out {metrics[-1].name}", "y", 1)
    fig.label("step", "x")
    fig.label("loss", "y", 0)
    plot = fig.build().string(colorless=not color)
    return "\n".join([head, plot.rstrip("\n"), under])


def _signature(run_dir: Path) -> tuple:
    """What a redraw depends on; unchanged signature, no redraw."""
    def stat(path: Path):
        try:
            s = path.stat()
            return s.st_mtime_ns, s.st_size
        except OSError:
            return None
    evals = sorted(p.name for p in folder_entries(rundir.eval_dir(run_dir)))
    size = shutil.get_terminal_size((80, 24))
    return (stat(rundir.loss_log_path(run_dir)), tuple(evals), stat(rundir.done_path(run_dir)),
            stat(rundir.failed_path(run_dir)),
            size.columns, size.lines)


def watch(run_dir: Path, interval: float = 1.0, follow: bool = False, color: bool = True) -> None:
    """Redraw whenever what a frame shows changed; return after the final frame of a DONE or FAILED run."""
    last_seen = None

    def frame_drawn_and_finished() -> bool:
        nonlocal last_seen
        finished = rundir.done_path(run_dir).is_file() or rundir.failed_path(run_dir).is_file()
        seen = _signature(run_dir)
        if seen != last_seen:
            size = shutil.get_terminal_size((80, 24))
            frame = render(run_dir, size.columns - 1, size.lines - 1, color=color)
            sys.stdout.write("\033[H\033[2J" + frame + "\n")
            sys.stdout.flush()
            last_seen = seen
        return finished and not follow

    wait_until(frame_drawn_and_finished, None, interval, what=f"{run_dir} to finish")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fold0123.launcher.monitor", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="{checkpoints_dir}/{exp}_{split}")
    parser.add_argument("--once", action="store_true", help="print one frame (no colours) and exit")
    parser.add_argument("--follow", action="store_true", help="keep watching after DONE/FAILED")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between re-reads")
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--height", type=int, default=None)
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    if args.once:
        size = shutil.get_terminal_size((80, 24))
        print(render(run_dir, args.width or size.columns - 1, args.height or size.lines - 1, color=False))
        return 0
    try:
        watch(run_dir, args.interval, args.follow, color=sys.stdout.isatty())
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
