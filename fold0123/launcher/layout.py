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

GPU groups (`parse_groups`): with a `/` or a `*` in it, `devices` lists one group of devices per row, the groups
separated by `/` and a group's devices by `,`: `0,1/2,3/4,5/6,7` gives each of four rows two GPUs (rows cycle
over the groups, as over single devices); one group for every row ends with `/` (`0,1,2,3/`); `cpu*2` is a group
of two CPU ranks (for testing; quote it in a shell). A row with a group of N > 1 trains one run over N ranks:
its train pane runs `python -m torch.distributed.run --standalone --nproc_per_node=N train.py ... --device cuda`
with CUDA_VISIBLE_DEVICES set to the group's GPUs (each rank on cuda:LOCAL_RANK of them; --device cpu and gloo for
a CPU group, each rank with its share of the row's threads). `--standalone` gives every row its own rendezvous on a
free port (torchrun's c10d store on localhost:0), so rows never share one. The evaluator stays on one device: the
group's first GPU (or the CPU) unless `eval_devices` says otherwise. When torchrun exits non-zero and no rank
wrote FAILED (rank 0 killed, a rendezvous that never formed) the pane writes it, as for train.py.
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
from fold0123.common.costs import cache_bill
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
    nodes: int = 1           # Slurm: the nodes of one row's job (launcher.slurm: one task per GPU, torch.distributed)
    tasks_per_node: int = 1  # Slurm: its tasks (ranks) on each node
    timeout_min: int = 24 * 60  # the Slurm job's time limit
    timeout_s: float | None = None
    poll_s: float = 1.0
    close: bool = True
    linger_s: float = 5.0
    verbose: bool = True
    redo_stale: bool = False
    cores: int | None = None  # the CPU cores these rows share (default: the machine's; tune.py's workers split them)


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
    ranks: int = 1  # > 1: a device group, trained over that many torchrun ranks (`device` names the group)


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
    cache_line: str | None = None              # the image cache's bill (common.costs.cache_bill), when rows train

    def run_path(self, run_dir: str) -> Path:
        """A run directory as this process sees it (commands run in `root`)."""
        return Path(self.root) / run_dir

    def retrained(self) -> list[Path]:
        """The run directories its rows train again from scratch (stale, --redo-stale): their old DONE goes at
        launch, before anything waits on it (the trainer wipes the rest when it starts)."""
        return [self.run_path(row.run_dir) for row in self.rows if "--redo-stale" in row.train_argv]

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


def _device_name(item: str, spec: str, option: str) -> str:
    item = item.strip()
    if re.fullmatch(r"[0-9]+", item):
        return f"cuda:{item}"
    if item == "cpu" or re.fullmatch(r"(cuda|mps)(:[0-9]+)?", item):
        return item
    raise LaunchError(f"{option} {spec!r}: {item!r} is not a GPU index, cuda:N, mps or cpu")


def is_group_spec(spec: str | None) -> bool:
    """Whether `spec` lists device groups (a `/` or a `*` in it) rather than one device per row."""
    return spec is not None and ("/" in spec or "*" in spec)


def parse_devices(spec: str | None, n_rows: int, option: str = "--devices") -> list[str]:
    """`None`/`auto` -> every visible GPU, else cpu; `cpu`; `0,1,2,3` or `cuda:0,cuda:1` -> rows cycle over them.
    One device per row: a group spec (`0,1/2,3`, `cpu*2`) is refused here (parse_groups reads it)."""
    if n_rows == 0:
        return []
    spec = (spec or "auto").strip()
    if is_group_spec(spec):
        raise LaunchError(f"{option} {spec!r}: one device per row here (a group, '/' or '*', is for --devices: "
                          f"the evaluator watches on one device)")
    if spec == "auto":
        n = gpu_count()
        devices = [f"cuda:{i}" for i in range(n)] if n else ["cpu"]
    else:
        devices = [_device_name(item, spec, option) for item in spec.split(",")]
    return [devices[i % len(devices)] for i in range(n_rows)]


def _group(text: str, spec: str, option: str) -> tuple[str, ...]:
    """One group: `0,1` -> (cuda:0, cuda:1); `cpu*2` or `cpu,cpu` -> (cpu, cpu)."""
    devices: list[str] = []
    for item in text.split(","):
        name, star, count = item.strip().partition("*")
        if star and not (count.strip().isdigit() and int(count) >= 1):
            raise LaunchError(f"{option} {spec!r}: {item.strip()!r}: DEVICE*N needs a whole number of ranks N >= 1")
        devices += [_device_name(name, spec, option)] * (int(count) if star else 1)
    if len(devices) > 1:
        if set(devices) == {"cpu"}:
            return tuple(devices)
        if any(not re.fullmatch(r"cuda:[0-9]+", d) for d in devices):
            raise LaunchError(f"{option} {spec!r}: group {text.strip()!r}: a group is GPU indices (0,1) or CPU "
                              f"ranks (cpu*2), not a mixture (nor mps)")
        if len(set(devices)) < len(devices):
            raise LaunchError(f"{option} {spec!r}: group {text.strip()!r} names a GPU twice (one rank per GPU)")
    return tuple(devices)


def parse_groups(spec: str | None, n_rows: int, option: str = "--devices") -> list[tuple[str, ...]]:
    """Each row's devices: one (parse_devices' forms: rows cycle over `0,1,2,3`), or a group for a spec with a
    `/` or a `*`: groups separated by `/` (`0,1/2,3/4,5/6,7`; a trailing `/` for one group: `0,1,2,3/`), a
    group's devices by `,`, `cpu*N` for N CPU ranks; rows cycle over the groups."""
    if not is_group_spec(spec):
        return [(device,) for device in parse_devices(spec, n_rows, option)]
    if n_rows == 0:
        return []
    texts = spec.strip().split("/")
    if texts[-1].strip() == "" and len(texts) > 1:
        texts = texts[:-1]
    if any(not t.strip() for t in texts):
        raise LaunchError(f"{option} {spec!r}: an empty group (groups are separated by '/': 0,1/2,3)")
    groups = [_group(t, spec, option) for t in texts]
    return [groups[i % len(groups)] for i in range(n_rows)]


def group_label(group: Sequence[str]) -> str:
    """A row's devices as titles and plans show them: `cuda:0`, `cuda:0,1` (a GPU group), `cpu*2`."""
    if len(group) == 1:
        return group[0]
    if group[0] == "cpu":
        return f"cpu*{len(group)}"
    return "cuda:" + ",".join(d.split(":")[1] for d in group)


def devices_on_cpu(spec: str | None) -> bool:
    """Whether every trainer of `spec` (launch.py --devices, a recipe's `devices`) runs on the CPU: what device
    the recipe's own evaluate.py calls (soups) then use."""
    if spec is None or spec.strip() == "auto":
        return gpu_count() == 0
    return all(set(group) == {"cpu"} for group in parse_groups(spec, 1 + spec.count("/") + spec.count(",")))


def evaluation_device(spec: str | None) -> str:
    """evaluate.py's --device for the evaluations a recipe or an ablation runs itself (soups, train parts, a
    variant's epoch): where its trainers of `spec` ran."""
    return "cpu" if devices_on_cpu(spec) else "cuda"


def row_devices(devices: str | None, eval_devices: str | None, n_rows: int) -> list[tuple[tuple[str, ...], str]]:
    """(trainer's devices, evaluator's device) per row; `eval_devices` None puts each evaluator on its trainer's
    (first) device."""
    train = parse_groups(devices, n_rows)
    if eval_devices is None:
        return [(group, group[0]) for group in train]
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
    """`title; ENV=.. argv || on_failure --status N`: the pane's shell stays open after a failure, showing the
    error, and `on_failure` (status mark-failed) is told argv's exit status, so the marker says whether the script
    failed (1: it printed why) or was killed (128 + the signal), even once the pane is gone. The pane names itself
    from inside ($TMUX_PANE), so tmuxinator and libtmux panes are titled the same way."""
    line = shlex.join(argv)
    if env:
        line = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " " + line
    if on_failure:
        line += " || " + shlex.join(on_failure) + ' --status "$?"'
    return f'tmux select-pane -t "$TMUX_PANE" -T {shlex.quote(title)}; {line}'


def torchrun_argv(python: str, ranks: int) -> list[str]:
    """torchrun for one row's group on this machine: a standalone rendezvous on a free port of its own."""
    return [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]


def train_argv(python: str, conf: str, split: str, device: str, threads: int | None,
               overrides: Sequence[str], resume: bool, redo_stale: bool = False, ranks: int = 1) -> list[str]:
    """train.py's command line; with `ranks` > 1 under torchrun (`device` then `cuda` or `cpu`: every rank on
    its own GPU of the visible ones, or on the CPU, `threads` each)."""
    launch = torchrun_argv(python, ranks) if ranks > 1 else [python]
    argv = [*launch, "train.py", "--conf", conf, "--split", split, "--device", device, *set_args(overrides)]
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
        message = ([] if row.ranks == 1 else
                   ["--message", f"torchrun (train.py over {row.ranks} ranks) exited non-zero and no rank wrote "
                                 f"FAILED (rank 0 killed, or the ranks never met): see its pane"])
        train = pane_command(train_title, row.train_argv, row.env,
                             status_argv(python, "mark-failed", row.run_dir, "--role", "train", *message))
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

    `devices` places the trainers (rows cycle over the list, or over its groups: `0,1/2,3` trains each row over
    two GPUs with torchrun, see the module's docstring), `eval_devices` the evaluators (default: each on its
    trainer's (first) device; `4,5,6,7` beside devices `0,1,2,3` is the original's layout). `checkpoints` overrides
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
    n_cpu = sum(1 for group, ev in placed if "cpu" in (group[0], ev))  # rows with a CPU trainer or evaluator
    threads = (o.cpus_per_task if o.executor == "slurm" else cpu_threads(n_cpu, cores or o.cores)) if n_cpu else None
    rows = []
    for (split, rdir), (group, eval_device) in zip(active, placed):
        on_cpu, ranks = group[0] == "cpu", len(group)
        row_threads = threads if "cpu" in (group[0], eval_device) else None
        # each CPU rank's share (a local job's tasks share this machine's cores too; a Slurm task has its own)
        here = ranks if ranks > 1 else o.tasks_per_node if o.executor == "local" else 1
        rank_threads = max(1, row_threads // here) if row_threads and on_cpu else None
        env = {"OMP_NUM_THREADS": str(rank_threads)} if rank_threads else {}
        if ranks > 1 and not on_cpu:  # the group's GPUs, as cuda:0.. of its ranks (LOCAL_RANK)
            env = {"CUDA_VISIBLE_DEVICES": ",".join(d.split(":")[1] for d in group), **env}
        eval_env = {"OMP_NUM_THREADS": str(row_threads)} if row_threads and eval_device == "cpu" else {}
        redo = rdir in stale
        epochs = [] if redo else checkpoint_epochs(root / rdir)
        done = not redo and training_done(root / rdir) and bool(epochs) and max(epochs) >= cfg.epochs
        resume = not done and bool(epochs)
        train_device = group[0] if ranks == 1 else "cpu" if on_cpu else "cuda"
        row = RowSpec(split=split, device=group_label(group), eval_device=eval_device, threads=row_threads,
                      run_dir=rdir, resume=resume, train_done=done,
                      train_argv=tuple(train_argv(python, conf_shown, split, train_device, rank_threads, overrides,
                                                  resume, redo, ranks)),
                      eval_argv=(python, "evaluate.py", "--run", rdir, "--watch", "--device", eval_device),
                      monitor_argv=(python, "-m", "fold0123.launcher.monitor", rdir), env=env, eval_env=eval_env,
                      ranks=ranks)
        rows.append(replace(row, panes=row_panes(row, python)))
    cache_line = None
    if any(not row.train_done for row in rows) and cfg.task != "clip":  # clip's images: the MUGE LMDB's cache
        dataroot, cache = (p if p.is_absolute() else root / p
                           for p in (Path(cfg.dataroot), rundir.cache_dir(cfg.checkpoints_dir)))
        cache_line, problem = cache_bill(dataroot, cfg.image_size, cache, cfg.image_cache)
        if problem:  # every train pane would refuse it: say it once, before any starts
            raise LaunchError(problem)
    active_dirs = [d for _, d in active]
    extending = [r.run_dir for r in rows if r.resume and training_done(root / r.run_dir)
                 or "--redo-stale" in r.train_argv]  # extended, or trained again: the old DONE must go first
    prepare = status_argv(python, "clear", *active_dirs, *(["--extend", *extending] if extending else []))
    waiter = status_argv(python, "wait", *(["--close", "--linger", f"{o.linger_s:g}"] if o.close else []),
                         *active_dirs)
    return Plan(exp=str(cfg.exp), conf=conf_shown, session=o.session or session_name(str(cfg.exp)),
                root=str(root), python=python, rows=tuple(rows), skipped=skipped, all_run_dirs=all_dirs,
                prepare_argv=tuple(prepare) if active_dirs else (),
                waiter_argv=tuple(waiter), cache_line=cache_line)


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
        if row.ranks > 1:
            threads = f", {row.ranks} ranks (torchrun)" + (f", {row.env['OMP_NUM_THREADS']} threads each"
                                                           if "OMP_NUM_THREADS" in row.env else "")
        evaluator = f", evaluated on {row.eval_device}" if row.eval_device != row.device else ""
        lines.append(f"  {row.split:8s} {row.device}{evaluator}{threads}: {how} -> {row.run_dir}")
    for split, rdir in plan.skipped:
        lines.append(f"  {split:8s} skipped: already DONE and evaluated ({rdir})")
    if plan.cache_line:
        lines.append(f"  {plan.cache_line}")
    return "\n".join(lines)
