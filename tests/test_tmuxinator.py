"""tmuxinator/fold0123.yml: rendered by the real tmuxinator, compared with launcher.layout, started for real.

`tmuxinator debug` prints the shell script `tmuxinator start` would run; its send-keys lines are the pane
commands. They must equal what `plan_fold0123` builds (the libtmux launcher's commands), so the YAML and the
launcher cannot drift. The project is rendered both by name (`tmuxinator debug fold0123`, after
scripts/link_tmuxinator.sh linked it into a private $TMUXINATOR_CONFIG, as the set-up does) and by path (`-p`).
One real `tmuxinator start --no-attach` runs the tiny preset to DONE on a private socket.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from fold0123.common.poll import wait_until
from fold0123.launcher.fold0123 import LaunchOptions, plan_fold0123
from fold0123.launcher.status import read_status
from tests.conftest import ROOT
from tests.test_launcher import SPLITS, TINY, fake_run, tiny_experiment

YML = ROOT / "tmuxinator" / "fold0123.yml"
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
LINK_SCRIPT = ROOT / "scripts" / "link_tmuxinator.sh"

pytestmark = pytest.mark.skipif(shutil.which("tmuxinator") is None or shutil.which("tmux") is None,
                                reason="tmux and tmuxinator are not installed")


def tmuxinator(command: str, *settings: str, cwd: Path, extra: tuple[str, ...] = (),
               config: Path | None = None) -> subprocess.CompletedProcess:
    """`tmuxinator COMMAND -p tmuxinator/fold0123.yml SETTINGS`, or by name (`tmuxinator COMMAND fold0123`) from
    the private config folder `config` (with a private HOME, so the user's own folders play no part)."""
    env = {k: v for k, v in os.environ.items() if k not in ("TMUX", "TMUX_PANE")}
    project = ["-p", str(YML)]
    if config is not None:
        env.update(TMUXINATOR_CONFIG=str(config), HOME=str(config.parent / "home"))
        project = ["fold0123"]
    return subprocess.run(["tmuxinator", command, *project, *extra, *settings], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def link(config: Path, script: Path = LINK_SCRIPT) -> subprocess.CompletedProcess:
    """scripts/link_tmuxinator.sh, as scripts/ensure_env.sh runs it, into the private config folder `config`."""
    home = config.parent / "home"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "TMUXINATOR_CONFIG": str(config), "HOME": str(home)}
    env.pop("XDG_CONFIG_HOME", None)
    return subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)


def sent_keys(script: str) -> dict[str, str]:
    """{tmux target: command typed there} from the script tmuxinator debug prints (the `cd root` key excepted)."""
    out = {}
    for line in script.splitlines():
        words = shlex.split(line) if "send-keys" in line else []
        if not words:
            continue
        target = words[words.index("-t") + 1]
        command = words[words.index("-t") + 2]
        if command.startswith("cd "):
            continue
        out[target] = command
    return out


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    path = tmp_path / "tinymux.yml"
    path.write_text(f"base: {TINY}\ncheckpoints_dir: {tmp_path / 'runs'}\n")
    return path


@pytest.mark.parametrize("by", ["name", "path"])
def test_debug_renders_four_rows_of_three_panes_exactly_as_the_launcher_plans(conf: Path, tmp_path: Path, by: str):
    config = None
    if by == "name":  # `tmuxinator start fold0123 conf=...`, the design card's command, after the set-up's link
        config = tmp_path / "tmuxinator_config"
        linked = link(config)
        assert linked.returncode == 0 and "linked" in linked.stdout, linked.stdout + linked.stderr
        assert (config / "fold0123.yml").resolve() == YML.resolve()
    rendered = tmuxinator("debug", f"conf={conf}", "devices=cpu", "socket=h6_debug_only", cwd=tmp_path,
                          config=config)
    assert rendered.returncode == 0, rendered.stderr
    script = rendered.stdout
    plan = plan_fold0123(conf, LaunchOptions(devices="cpu", root=ROOT), python=str(VENV_PYTHON))
    assert "new-session -d -s fold0123_tinymux -n fold0123" in script
    assert "tmux -L h6_debug_only" in script and "select-layout -t fold0123_tinymux:0 tiled" in script
    keys = sent_keys(script)
    panes = {t: c for t, c in keys.items() if t.startswith("fold0123_tinymux:0.")}
    assert list(panes) == [f"fold0123_tinymux:0.{i}" for i in range(12)]
    assert list(panes.values()) == [p.command for p in plan.panes]  # the YAML and libtmux cannot drift
    for i, split in enumerate(SPLITS):
        train, loss, evaluate = (panes[f"fold0123_tinymux:0.{3 * i + j}"] for j in range(3))
        run_dir = str(tmp_path / "runs" / f"tinymux_{split}")
        assert f"train.py --conf {conf} --split {split} --device cpu --set threads=" in train
        assert f"-T '{split} train (cpu)'" in train and f"mark-failed {run_dir} --role train" in train
        assert f"-m fold0123.launcher.monitor {run_dir}" in loss and f"-T '{split} loss'" in loss
        assert f"evaluate.py --run {run_dir} --watch --device cpu" in evaluate
    threads = max(1, (os.cpu_count() or 1) // 4)
    assert all(f"OMP_NUM_THREADS={threads} " in panes[f"fold0123_tinymux:0.{3 * i}"] for i in range(4))
    waiter = shlex.split(keys["fold0123_tinymux:1"])
    assert waiter[1:5] == ["-m", "fold0123.launcher.status", "wait", "--close"]
    assert waiter[-4:] == [str(tmp_path / "runs" / f"tinymux_{s}") for s in SPLITS]
    assert f"launcher.status clear {tmp_path / 'runs' / 'tinymux_3fold0'}" in script  # before the panes


def test_debug_devices_checkpoints_and_finished_runs(conf: Path, tmp_path: Path):
    elsewhere = tmp_path / "elsewhere"
    fake_run(elsewhere / "tinymux_3fold1", epochs=2, done=True, evaluated=True, conf=conf)
    rendered = tmuxinator("debug", f"conf={conf}", "devices=0,1,2,3", f"checkpoints={elsewhere}", cwd=tmp_path)
    assert rendered.returncode == 0, rendered.stderr
    panes = [c for t, c in sent_keys(rendered.stdout).items() if ":0." in t]
    assert len(panes) == 9  # 3fold1 is DONE and evaluated: no row
    trains = panes[0::3]
    assert [c.split("--split ")[1].split()[0] for c in trains] == ["3fold0", "3fold2", "all"]
    assert [c.split("--device ")[1].split()[0] for c in trains] == ["cuda:0", "cuda:1", "cuda:2"]
    assert all(f"--set checkpoints_dir={elsewhere}" in c and "threads=" not in c for c in trains)
    assert f"--run {elsewhere / 'tinymux_all'} --watch --device cuda:2" in panes[8]


def test_debug_eval_devices_match_the_launcher_plan(conf: Path, tmp_path: Path):
    """The original's layout: train on GPUs 0-3, evaluate on 4-7 (rendering needs no GPU)."""
    rendered = tmuxinator("debug", f"conf={conf}", "devices=0,1,2,3", "eval_devices=4,5,6,7", cwd=tmp_path)
    assert rendered.returncode == 0, rendered.stderr
    panes = [c for t, c in sent_keys(rendered.stdout).items() if t.startswith("fold0123_tinymux:0.")]
    plan = plan_fold0123(conf, LaunchOptions(devices="0,1,2,3", eval_devices="4,5,6,7", root=ROOT),
                         python=str(VENV_PYTHON))
    assert panes == [p.command for p in plan.panes]
    for i, split in enumerate(SPLITS):
        assert f"--split {split} --device cuda:{i} " in panes[3 * i]
        assert f"evaluate.py --run {tmp_path / 'runs' / f'tinymux_{split}'} --watch --device cuda:{i + 4}" \
            in panes[3 * i + 2] and f"-T '{split} eval (cuda:{i + 4})'" in panes[3 * i + 2]


def test_debug_gpu_groups_run_torchrun_as_the_launcher_plans(conf: Path, tmp_path: Path):
    """`devices=0,1/2,3/4,5/6,7`: each row trains over its two GPUs with torchrun, as launch.py lays it out."""
    rendered = tmuxinator("debug", f"conf={conf}", "devices=0,1/2,3/4,5/6,7", cwd=tmp_path)
    assert rendered.returncode == 0, rendered.stderr
    panes = [c for t, c in sent_keys(rendered.stdout).items() if t.startswith("fold0123_tinymux:0.")]
    plan = plan_fold0123(conf, LaunchOptions(devices="0,1/2,3/4,5/6,7", root=ROOT), python=str(VENV_PYTHON))
    assert panes == [p.command for p in plan.panes]
    for i, split in enumerate(SPLITS):
        assert (f"CUDA_VISIBLE_DEVICES={2 * i},{2 * i + 1} {VENV_PYTHON} -m torch.distributed.run --standalone "
                f"--nproc_per_node=2 train.py --conf {conf} --split {split} --device cuda") in panes[3 * i]
        assert f"--watch --device cuda:{2 * i}" in panes[3 * i + 2]


def test_link_points_at_the_checkout_set_up_last_and_never_replaces_a_users_own_file(tmp_path: Path):
    config = tmp_path / "tmuxinator_config"
    clone = tmp_path / "clone"  # another clone of the project on the same machine, set up first
    for path in ("tmuxinator/fold0123.yml", "fold0123/launcher/layout.py"):
        (clone / path).parent.mkdir(parents=True, exist_ok=True)
        (clone / path).write_text("")
    (clone / "scripts").mkdir()
    shutil.copy(LINK_SCRIPT, clone / "scripts" / "link_tmuxinator.sh")
    assert link(config, clone / "scripts" / "link_tmuxinator.sh").returncode == 0
    assert (config / "fold0123.yml").resolve() == (clone / "tmuxinator" / "fold0123.yml").resolve()
    moved = link(config)  # this checkout's set-up runs later: it wins, and says so
    assert moved.returncode == 0 and "latest set-up wins" in moved.stdout, moved.stdout + moved.stderr
    assert (config / "fold0123.yml").resolve() == YML.resolve()
    again = link(config)
    assert again.returncode == 0 and again.stdout == again.stderr == ""  # already this checkout: silent
    (config / "fold0123.yml").unlink()
    (config / "fold0123.yml").write_text("name: mine\n")  # the user's own project of that name
    kept = link(config)
    assert kept.returncode == 0 and "your own file" in kept.stderr and "-p tmuxinator/fold0123.yml" in kept.stderr
    assert (config / "fold0123.yml").read_text() == "name: mine\n"
    (config / "fold0123.yml").unlink()
    (config / "mine").mkdir()
    (config / "mine" / "fold0123.yaml").write_text("name: mine\n")  # found by name too: the link would hide it
    hidden = link(config)
    assert hidden.returncode == 0 and "another tmuxinator project named fold0123" in hidden.stderr
    assert not (config / "fold0123.yml").exists() and not (config / "fold0123.yml").is_symlink()


def test_missing_conf_is_a_usage_error(tmp_path: Path):
    rendered = tmuxinator("debug", "devices=cpu", cwd=tmp_path)
    assert rendered.returncode != 0
    assert "usage: tmuxinator start -p tmuxinator/fold0123.yml conf=" in rendered.stdout + rendered.stderr
    missing = tmuxinator("debug", f"conf={tmp_path / 'none.yml'}", cwd=tmp_path)
    assert missing.returncode != 0 and "none.yml: config file not found" in missing.stderr


@pytest.mark.integration
def test_tmuxinator_start_runs_the_tiny_preset_to_done_and_closes(tmp_path: Path, tmux_socket: str):
    conf = tiny_experiment(tmp_path, name="tinystart")
    started = tmuxinator("start", f"conf={conf}", "devices=cpu", f"socket={tmux_socket}", cwd=tmp_path,
                         extra=("--no-attach",))
    assert started.returncode == 0, started.stdout + started.stderr
    runs = [tmp_path / "runs" / f"tinystart_{s}" for s in SPLITS]
    wanted = [f"{s} {r}" for s in SPLITS for r in ("train (cpu)", "loss", "eval")]

    def titled() -> bool:  # the titles are on show (the border set by the waiter)
        titles = subprocess.run(["tmux", "-L", tmux_socket, "list-panes", "-t", "fold0123_tinystart:fold0123",
                                 "-F", "#{pane_title}"], capture_output=True, text=True).stdout.splitlines()
        border = subprocess.run(["tmux", "-L", tmux_socket, "show-options", "-w", "-t",
                                 "fold0123_tinystart:fold0123", "pane-border-status"],
                                capture_output=True, text=True).stdout.strip()
        return titles == wanted and border == "pane-border-status top"

    wait_until(titled, 30, 0.5, what=f"pane titles {wanted} with pane-border-status top")
    wait_until(lambda: all(read_status(r).finished for r in runs), 480, 1, what="every run to finish")
    assert [read_status(r).state for r in runs] == ["done"] * 4, [read_status(r).detail for r in runs]
    for run in runs:
        assert (run / "1.pth").is_file() and (run / "eval" / "epoch1_metrics.json").is_file()
    said = ""

    def closed() -> bool:  # the waiter prints the elapsed minutes, lingers 5 s, closes the session
        nonlocal said
        alive = subprocess.run(["tmux", "-L", tmux_socket, "has-session", "-t", "=fold0123_tinystart"],
                               capture_output=True)
        if alive.returncode != 0:
            return True
        shown = subprocess.run(["tmux", "-L", tmux_socket, "capture-pane", "-p", "-J", "-t",
                                "fold0123_tinystart:done"], capture_output=True, text=True).stdout
        said = shown if "runs DONE in" in shown else said
        return False

    wait_until(closed, 30, 0.3, what="the session to close itself after every run was DONE")
    assert re.search(r"fold0123: all 4 runs DONE in [0-9.]+ min", said), said
