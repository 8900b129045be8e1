"""The fold0123 layout as plain data: which rows run, on which device, with which commands in which panes.

One builder serves every way of running the rows (libtmux, tmuxinator, Slurm/submitit), so they cannot drift:
the tmuxinator YAML asks `python launch.py fold0123 --json ...` for its rows and panes instead of spelling the
commands out a second time, and tests/test_tmuxinator.py compares what `tmuxinator debug` would type with
`plan_fold0123`.

A plan is decided once, at launch, from the run directories (DESIGN section 3):
  - a run that is DONE with its last epoch evaluated is skipped (its row is not laid out at all);
  - a run with checkpoints but no DONE is resumed (`--resume`);
  - a run that is DONE but not fully evaluated gets a row whose trainer pane only says so.
Devices: `cuda:0..` when GPUs are present (rows cycle over them), else every row on the CPU with
`--set threads=N`, N = cores // rows, so four rows on a small machine do not oversubscribe it. A row's evaluator
runs on the trainer's device unless `eval_devices` names others: the original trained on GPUs 0-3 and evaluated
on 4-7, so evaluation never slows training down.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

from fold0123.common import muge, rundir
from fold0123.common.config import ConfigError, load_config, set_args
from fold0123.common.fingerprint import run_staleness, stale_message
from fold0123.common.io import cpu_cores
from fold0123.common.schema import RunConfig
from fold0123.common.errors import Fold0123Error
from fold0123.common.dataroot import split_names
from fold0123.launcher.status import checkpoint_epochs, read_status, training_done

REPO = Path(__file__).resolve().parents[2]
SHELLS = {"bash", "zsh", "sh", "dash", "fish", "ksh", "tcsh", "csh"}
EXECUTORS = ("tmux", "slurm", "local")


class LaunchError(Fold0123Error):
    """A launch that cannot start as asked; the message is one line saying why and what to do."""


@dataclass(frozen=True)
class LaunchOptions:
    """How to plan (plan_fold0123) and launch (launcher.fold0123.launch_fold0123) an experiment's rows: launch.py's
    flags by the same names (its --help says what each does; `socket_name` is --socket, `close` the opposite of
    --no-close), and the callers' own: `timeout_s` (stop waiting; the rows still running are reported so),
    `poll_s`, `linger_s` (the waiter shows its summary that long before it closes the session; with `wait` the
    launch returns once it has) and `verbose`."""
    devices: str | None = None
    eval_devices: str | None = None
    checkpoints: str | Path | None = None
    overrides: tuple[str, ...] = ()
    splits: tuple[str, ...] | None = None
    wait: bool = True
    attach: bool = False
    session: str | None = None
    executor: str = "tmux"
    socket_name: str | None = None
    root: str | Path | None = None
    partition: str | None = None
    gpus_per_job: int = 1
    cpus_per_task: int = 4
    timeout_min: int = 24 * 60  # the Slurm job's time limit
    timeout_s: float | None = None
    poll_s: float = 1.0
    close: bool = True
    linger_s: float = 5.0
    verbose: bool = True
    redo_stale: bool = False


@dataclass(frozen=True)
class PaneSpec:
    split: str
    role: str      # train | loss | eval
    title: str     # what the pane border shows, e.g. "3fold0 train (cpu)"
    command: str   # the shell line typed into the pane


@dataclass(frozen=True)
class RowSpec:
    """One split's run: the trainer, its loss monitor and its evaluator (on the trainer's device unless asked)."""
    split: str
    device: str                       # the trainer's
    eval_device: str                  # the evaluator's: the trainer's unless `eval_devices` says otherwise
    threads: int | None               # the threads of this row's CPU processes (None: none runs on the CPU)
    run_dir: str                      # as the commands see it (relative to the plan's root when inside it)
    resume: bool
    train_done: bool                  # DONE but not fully evaluated: the trainer pane only says so
    train_argv: tuple[str, ...]
    eval_argv: tuple[str, ...]
    monitor_argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)       # the trainer's (OMP_NUM_THREADS on the CPU)
    panes: tuple[PaneSpec, ...] = ()
    eval_env: dict[str, str] = field(default_factory=dict)  # the evaluator's


@dataclass(frozen=True)
class Plan:
    exp: str
    conf: str
    session: str
    root: str
    python: str
    rows: tuple[RowSpec, ...]                  # the rows to run, in split order
    skipped: tuple[tuple[str, str], ...]       # (split, run_dir) already DONE and evaluated
    all_run_dirs: tuple[tuple[str, str], ...]  # (split, run_dir) of every split, run or skipped
    prepare_argv: tuple[str, ...]              # clears stale failure markers (and DONE of runs being extended)
    waiter_argv: tuple[str, ...]               # the last window: waits, prints elapsed minutes, closes

    def run_path(self, run_dir: str) -> Path:
        """A run directory as this process sees it (commands run in `root`)."""
        return Path(self.root) / run_dir

    @property
    def panes(self) -> list[PaneSpec]:
        return [pane for row in self.rows for pane in row.panes]

    def to_json(self) -> str:
        out = asdict(self)
        out["prepare"] = shlex.join(self.prepare_argv)
        out["waiter"] = shlex.join(self.waiter_argv)
        return json.dumps(out, indent=1)


def gpu_count() -> int:
    """GPUs this process may use, without importing torch: CUDA_VISIBLE_DEVICES, else `nvidia-smi -L`."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [v for v in visible.split(",") if v.strip() and v.strip() != "-1"]
        return len(ids)
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def parse_devices(spec: str | None, n_rows: int, option: str = "--devices") -> list[str]:
    """`None`/`auto` -> every visible GPU, else cpu; `cpu`; `0,1,2,3` or `cuda:0,cuda:1` -> rows cycle over them."""
    if n_rows == 0:
        return []
    spec = (spec or "auto").strip()
    if spec == "auto":
        n = gpu_count()
        devices = [f"cuda:{i}" for i in range(n)] if n else ["cpu"]
    else:
        devices = []
        for item in spec.split(","):
            item = item.strip()
            if re.fullmatch(r"[0-9]+", item):
                devices.append(f"cuda:{item}")
            elif item == "cpu" or re.fullmatch(r"(cuda|mps)(:[0-9]+)?", item):
                devices.append(item)
            else:
                raise LaunchError(f"{option} {spec!r}: {item!r} is not a GPU index, cuda:N, mps or cpu")
    return [devices[i % len(devices)] for i in range(n_rows)]


def row_devices(devices: str | None, eval_devices: str | None, n_rows: int) -> list[tuple[str, str]]:
    """(trainer, evaluator) device per row; `eval_devices` None puts each evaluator on its trainer's device."""
    train = parse_devices(devices, n_rows)
    if eval_devices is None:
        return [(d, d) for d in train]
    return list(zip(train, parse_devices(eval_devices, n_rows, "--eval-devices")))


def cpu_threads(n_cpu_rows: int, cores: int | None = None) -> int:
    """Threads per CPU row so the rows share the cores instead of fighting over them."""
    return max(1, (cores or cpu_cores()) // max(1, n_cpu_rows))


def session_name(exp: str) -> str:
    """tmux forbids '.' and ':' in session names."""
    return re.sub(r"[.:\s]", "_", f"fold0123_{exp}")


def _shown(path: Path, root: Path) -> str:
    """Paths in commands: relative to the root the panes start in when inside it (short, readable), else absolute."""
    path = Path(os.path.abspath(path))
    try:
        return str(path.relative_to(Path(os.path.abspath(root))))
    except ValueError:
        return str(path)


def _conf_path(conf: str | Path, root: Path) -> Path:
    conf = Path(conf)
    if conf.is_absolute():
        return conf
    for base in (Path.cwd(), root):
        if (base / conf).is_file():
            return base / conf
    raise LaunchError(f"{conf}: config file not found (looked in {Path.cwd()} and {root})")


def pane_command(title: str, argv: Sequence[str], env: dict[str, str] | None = None,
                 on_failure: Sequence[str] | None = None) -> str:
    """`title; ENV=.. argv || on_failure`: the pane's shell stays open after a failure, showing the error. The
    pane names itself from inside ($TMUX_PANE), so tmuxinator and libtmux panes are titled the same way."""
    line = shlex.join(argv)
    if env:
        line = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " " + line
    if on_failure:
        line += " || " + shlex.join(on_failure)
    return f'tmux select-pane -t "$TMUX_PANE" -T {shlex.quote(title)}; {line}'


def train_argv(python: str, conf: str, split: str, device: str, threads: int | None,
               overrides: Sequence[str], resume: bool, redo_stale: bool = False) -> list[str]:
    argv = [python, "train.py", "--conf", conf, "--split", split, "--device", device, *set_args(overrides)]
    if threads is not None:
        argv += ["--set", f"threads={threads}"]
    if resume:
        argv.append("--resume")
    if redo_stale:
        argv.append("--redo-stale")
    return argv


def status_argv(python: str, *args: str) -> list[str]:
    return [python, "-m", "fold0123.launcher.status", *args]


def row_panes(row: RowSpec, python: str) -> tuple[PaneSpec, ...]:
    train_title, loss_title, eval_title = f"{row.split} train ({row.device})", f"{row.split} loss", f"{row.split} eval"
    if row.eval_device != row.device:  # say where it runs only when that is not the row's device
        eval_title += f" ({row.eval_device})"
    if row.train_done:
        train = pane_command(train_title,
                             ["echo", f"{row.split}: training already DONE in {row.run_dir}; evaluating only"])
    else:
        train = pane_command(train_title, row.train_argv, row.env,
                             status_argv(python, "mark-failed", row.run_dir, "--role", "train"))
    evaluate = pane_command(eval_title, row.eval_argv, row.eval_env,
                            status_argv(python, "mark-failed", row.run_dir, "--role", "evaluate"))
    return (PaneSpec(row.split, "train", train_title, train),
            PaneSpec(row.split, "loss", loss_title, pane_command(loss_title, row.monitor_argv)),
            PaneSpec(row.split, "eval", eval_title, evaluate))


def plan_fold0123(conf: str | Path, options: LaunchOptions = LaunchOptions(), python: str | None = None,
                  cores: int | None = None) -> Plan:
    """Decide the rows of one experiment's fold0123 from its config and its run directories.

    A run made by another config or from other inputs (common.fingerprint) is a LaunchError naming what differs,
    or with `redo_stale` a row that trains it again from scratch; a finished run asked for more epochs resumes.

    `devices` places the trainers (rows cycle over the list), `eval_devices` the evaluators (default: each on
    its trainer's device; `4,5,6,7` beside devices `0,1,2,3` is the original's layout). `checkpoints` overrides
    the config's checkpoints_dir (passed on to train.py as `--set checkpoints_dir=`), `splits` restricts the
    rows (default: every split of the config's `folds`; a clip config's `train` and `all`), `root` is where the
    commands run (default: the repository), `python` the interpreter they use (default: this one). Each CPU row
    gets the threads of the `cores` (default: this machine's) divided among the rows with a trainer or an
    evaluator on the CPU, a Slurm job its `cpus_per_task`: a row's trainer and evaluator share them, as they
    would share its GPU.
    """
    o = options
    root = Path(os.path.abspath(o.root or REPO))
    python = python or sys.executable
    conf_shown = _shown(_conf_path(conf, root), root)
    overrides = list(o.overrides)
    if o.checkpoints is not None:
        ckpt = Path(o.checkpoints)
        overrides.append(f"checkpoints_dir={_shown(ckpt if ckpt.is_absolute() else Path.cwd() / ckpt, root)}")
    try:
        cfg = load_config(root / conf_shown, overrides, schema=RunConfig)
    except ConfigError as err:
        raise LaunchError(str(err)) from None
    known = run_splits(cfg)
    wanted = list(o.splits) if o.splits is not None else known
    bad = [s for s in wanted if not re.fullmatch(r"[A-Za-z0-9_]+", s)]
    if bad or not wanted:
        raise LaunchError(f"splits {wanted!r}: expected names like {', '.join(known)}")
    if cfg.task == "clip" and set(wanted) - set(known):  # train.py would fail in every pane: say it once, here
        raise LaunchError(f"{conf_shown}: splits {', '.join(s for s in wanted if s not in known)}: a clip run "
                          f"trains on {' or '.join(known)} (the MUGE splits; train holds out valid)")

    def run_dir(split: str) -> str:
        """The split's run directory (common.rundir), shown relative to root."""
        path = rundir.run_dir(cfg, split)
        return _shown(path if path.is_absolute() else root / path, root)

    all_dirs = tuple((s, run_dir(s)) for s in wanted)
    stale = stale_runs(cfg, all_dirs, root)
    if stale and not o.redo_stale:
        raise LaunchError(" | ".join(stale_message(root / d, reasons) for d, reasons in stale.items()))

    def needs_work(split: str, rdir: str) -> bool:
        """Stale, unfinished, not fully evaluated, or finished with fewer epochs than asked (an extension)."""
        epochs = checkpoint_epochs(root / rdir)
        return (rdir in stale or read_status(root / rdir).state != "done"
                or bool(epochs) and max(epochs) < cfg.epochs)

    active = [(s, d) for s, d in all_dirs if needs_work(s, d)]
    skipped = tuple((s, d) for s, d in all_dirs if (s, d) not in active)
    placed = row_devices(o.devices, o.eval_devices, len(active))
    n_cpu = sum(1 for pair in placed if "cpu" in pair)  # rows with a trainer or an evaluator on the CPU
    threads = (o.cpus_per_task if o.executor == "slurm" else cpu_threads(n_cpu, cores)) if n_cpu else None
    rows = []
    for (split, rdir), (device, eval_device) in zip(active, placed):
        row_threads = threads if "cpu" in (device, eval_device) else None
        env = {"OMP_NUM_THREADS": str(row_threads)} if row_threads and device == "cpu" else {}
        eval_env = {"OMP_NUM_THREADS": str(row_threads)} if row_threads and eval_device == "cpu" else {}
        redo = rdir in stale
        epochs = [] if redo else checkpoint_epochs(root / rdir)
        done = not redo and training_done(root / rdir) and bool(epochs) and max(epochs) >= cfg.epochs
        resume = not done and bool(epochs)
        row = RowSpec(split=split, device=device, eval_device=eval_device, threads=row_threads, run_dir=rdir,
                      resume=resume, train_done=done,
                      train_argv=tuple(train_argv(python, conf_shown, split, device,
                                                  row_threads if device == "cpu" else None, overrides, resume,
                                                  redo)),
                      eval_argv=(python, "evaluate.py", "--run", rdir, "--watch", "--device", eval_device),
                      monitor_argv=(python, "-m", "fold0123.launcher.monitor", rdir), env=env, eval_env=eval_env)
        rows.append(replace(row, panes=row_panes(row, python)))
    active_dirs = [d for _, d in active]
    extending = [r.run_dir for r in rows if r.resume and training_done(root / r.run_dir)]
    prepare = status_argv(python, "clear", *active_dirs, *(["--extend", *extending] if extending else []))
    waiter = status_argv(python, "wait", *(["--close", "--linger", f"{o.linger_s:g}"] if o.close else []),
                         *active_dirs)
    return Plan(exp=str(cfg.exp), conf=conf_shown, session=o.session or session_name(str(cfg.exp)),
                root=str(root), python=python, rows=tuple(rows), skipped=skipped, all_run_dirs=all_dirs,
                prepare_argv=tuple(prepare) if active_dirs else (),
                waiter_argv=tuple(waiter))


def run_splits(cfg: RunConfig) -> list[str]:
    """The rows of an experiment: `{k}fold0 .. {k}fold{k-1}` and `all`, or for a retrieval (clip) config the MUGE
    run splits `train` (held out: valid) and `all` (train + valid), which have no folds."""
    return list(muge.RUN_SPLITS) if cfg.task == "clip" else split_names(cfg.folds)


def stale_runs(cfg: RunConfig, run_dirs: Sequence[tuple[str, str]], root: Path) -> dict[str, list[str]]:
    """{run_dir: what differs} for the runs with checkpoints that `cfg` did not make from today's inputs
    (common.fingerprint); paths in the config are relative to `root`, where the panes run."""
    anchored = {k: str(root / getattr(cfg, k)) for k in ("dataroot", "checkpoints_dir")
                if not Path(getattr(cfg, k)).is_absolute()}
    check = cfg.model_copy(update=anchored)
    stale = {}
    for split, rdir in run_dirs:
        if checkpoint_epochs(root / rdir):
            reasons = run_staleness(root / rdir, check, split)
            if reasons:
                stale[rdir] = reasons
    return stale


def describe(plan: Plan) -> str:
    """A few lines for the terminal: what runs where, what is skipped."""
    lines = [f"fold0123 {plan.exp} ({plan.conf}) in {plan.root}"]
    for row in plan.rows:
        how = ("evaluate only" if row.train_done else "resume" if row.resume
               else "train again (stale)" if "--redo-stale" in row.train_argv else "train")
        threads = f", {row.threads} threads" if row.threads else ""
        evaluator = f", evaluated on {row.eval_device}" if row.eval_device != row.device else ""
        lines.append(f"  {row.split:8s} {row.device}{evaluator}{threads}: {how} -> {row.run_dir}")
    for split, rdir in plan.skipped:
        lines.append(f"  {split:8s} skipped: already DONE and evaluated ({rdir})")
    return "\n".join(lines)
