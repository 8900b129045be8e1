"""tune.py: Optuna studies whose trials are real fold0123 rows (tmux, the tiny presets), pruned fold by fold,
shared by two workers, resumed after a SIGKILL without losing or repeating a trial, refused when stale; and a bad
search space as one line naming the key."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from fold0123.common.config import ConfigError, load_config
from fold0123.common.fingerprint import StaleError
from fold0123.common.schema import TuneConfig
from fold0123.tuning.space import SpaceError, check_space
from fold0123.tuning.study import plan_study, prepare_study
from fold0123.tuning.workers import worker_devices
from tests.conftest import ROOT, run_script, tiny_recipe, write

GOOD, ALSO_GOOD, BAD = 0.003, 0.001, 1e-7  # lr: a run at 1e-7 learns nothing in its one epoch


def study_conf(root: Path, name: str, trials: int, enqueue: list[tuple[float, int]], **keys) -> Path:
    """A study of the tiny target run over lr and `log_every` (which changes nothing a run computes: two trials
    that differ in it alone train bit-identical runs), its `enqueue` as (lr, log_every) pairs."""
    recipe = root / "recipe.yml" if (root / "recipe.yml").is_file() else tiny_recipe(root)
    extra = "".join(f"{k}: {json.dumps(v)}\n" for k, v in keys.items())
    queued = ", ".join(f"{{lr: {lr}, log_every: {every}}}" for lr, every in enqueue)
    return Path(write(root / f"{name}.yml", f"""recipe: {recipe}
run: {root / 'target.yml'}
set: [transfer_from=null]
space:
  lr: {{choices: [{GOOD}, {ALSO_GOOD}, {BAD}]}}
  log_every: {{choices: [1, 2]}}
enqueue: [{queued}]
trials: {trials}
out_dir: {root / name}
{extra}"""))


def tune_cfg(conf: Path, *sets: str) -> TuneConfig:
    return load_config(conf, sets, schema=TuneConfig)


def states(conf: Path) -> list[str]:
    study = optuna.load_study(study_name=tune_cfg(conf).exp, storage=plan_study(tune_cfg(conf)).storage_url)
    return [t.state.name for t in study.get_trials()]


def test_a_bad_search_space_is_one_line_naming_the_key(tmp_path):
    conf = study_conf(tmp_path, "space", 2, [(GOOD, 1)])
    cfg = tune_cfg(conf)
    recipe_sets = ["dataroot=/nowhere", "folds=3", "seed=0"]
    bad = {"lerning_rate": "{choices: [0.1]}", "image_size": "{choices: [4]}", "freeze": "{choices: [sideways]}"}
    for key, value in bad.items():
        with pytest.raises(SpaceError, match=rf"^space key '{key}'") as err:
            check_space(cfg.run, tune_cfg(conf, f"space={{{key}: {value}}}", "enqueue=[]").space, [], recipe_sets)
        assert "\n" not in str(err.value)
    for key, value, why in (("lr", "{low: 0.1, high: 0.01}", "empty range"), ("lr", "{choices: []}", "empty"),
                            ("lr", "{low: small, high: 1}", "space.lr.low"), ("seed", "{low: 1, high: 2}", "seed")):
        with pytest.raises(ConfigError, match=why) as err:
            tune_cfg(conf, f"space={{{key}: {value}}}", "enqueue=[]")
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"key 'enqueue': .*'log_every' is not a key of space \(lerning_rate\)"):
        tune_cfg(conf, "space={lerning_rate: {choices: [0.1]}}")
    out = run_script("tune.py", "--conf", str(conf), "--set", "space={lerning_rate: {choices: [0.1]}}", "--set",
                     "enqueue=[]")
    assert out.returncode != 0 and out.stderr.strip().count("\n") == 0 and "lerning_rate" in out.stderr
    assert not (tmp_path / "space").exists()  # refused before anything was made
    assert worker_devices(cfg, "cpu", "0,1/2,3") == ["0,1/", "2,3/"] and worker_devices(cfg, "0,1") == ["0"]


@pytest.mark.integration
def test_two_workers_share_a_study_a_bad_trial_is_pruned_after_its_first_fold_and_the_report_matches(tmp_path):
    # trials 0 and 1 run side by side and train the same runs (they differ in log_every alone), so neither can
    # be pruned against the other whichever finishes first; trial 2 starts once one of them is complete
    conf = study_conf(tmp_path, "pair", 3, [(GOOD, 1), (GOOD, 2), (BAD, 1)], startup_trials=1, rerun_seeds=[1],
                      devices="cpu/cpu")
    out = run_script("tune.py", "--conf", str(conf), "--socket", f"tune{os.getpid()}")
    assert out.returncode == 0, out.stderr[-3000:]
    cfg = tune_cfg(conf)
    study = optuna.load_study(study_name="pair", storage=plan_study(cfg).storage_url)
    trials = {t.number: t for t in study.get_trials()}
    assert sorted(trials) == [0, 1, 2] and [trials[n].params["lr"] for n in range(3)] == [GOOD, GOOD, BAD]
    assert trials[2].state.name == "PRUNED" and len(trials[2].user_attrs["fold_scores"]) == 1
    assert {trials[0].state.name, trials[1].state.name} == {"COMPLETE"}
    assert {trials[0].user_attrs["worker"], trials[1].user_attrs["worker"]} == {0, 1}  # side by side
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir() if p.name.startswith("pair_"))
    folds = ["3fold0", "3fold1", "3fold2"]
    assert runs == sorted([f"pair_t000_{s}" for s in folds] + [f"pair_t001_{s}" for s in folds]
                          + ["pair_t002_3fold0"] + [f"pair_t{study.best_trial.number:03d}_s1_{s}" for s in folds])
    facts = json.loads((tmp_path / "pair" / "tune.json").read_text())
    assert facts["best"]["trial"] == study.best_trial.number and facts["best"]["cv"] == study.best_value
    assert facts["compared"] == 3 and facts["states"]["pruned"] == 1 and facts["metric"] == "rmse"
    assert facts["winner"]["seeds"]["1"]["cv"] == pytest.approx(sum(facts["winner"]["seeds"]["1"]["fold_scores"]) / 3)
    table = pd.read_csv(tmp_path / "pair" / "trials.csv")
    assert table.set_index("trial").loc[2, "state"] == "pruned" and len(table) == 3
    assert "optimisation history" in (tmp_path / "pair" / "report.html").read_text()
    # a changed base config refuses to resume the study, in one line naming what changed
    with pytest.raises(StaleError, match=r"study pair .* is stale \(run.label_smoothing") as err:
        prepare_study(tune_cfg(conf, "set=[transfer_from=null, label_smoothing=0.1]"))
    assert "\n" not in str(err.value)
    subprocess.run(["tmux", "-L", f"tune{os.getpid()}", "kill-server"], capture_output=True)


def wait_for(path: Path, timeout_s: float = 300) -> None:
    end = time.time() + timeout_s
    while not path.exists():
        assert time.time() < end, f"{path} never appeared"
        time.sleep(0.2)


@pytest.mark.faults
def test_a_killed_study_resumes_its_interrupted_trial_under_its_own_runs_and_counts_it_once(tmp_path):
    conf = study_conf(tmp_path, "killed", 2, [(GOOD, 1), (ALSO_GOOD, 1)], heartbeat_s=1, rerun_seeds=[],
                      pruner="none")
    socket = f"tunekill{os.getpid()}"
    argv = [sys.executable, str(ROOT / "tune.py"), "--conf", str(conf), "--socket", socket]
    first = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done_fold = tmp_path / "runs" / "killed_t000_3fold0" / "DONE"
    wait_for(tmp_path / "runs" / "killed_t000_3fold1" / "config.yml")  # trial 0 is on its second fold
    first.send_signal(signal.SIGKILL)
    first.wait()
    made = done_fold.stat().st_mtime_ns
    assert states(conf)[0] == "RUNNING"  # the dead worker's trial, until its heartbeat is stale
    time.sleep(2.5)
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    study = optuna.load_study(study_name="killed", storage=plan_study(tune_cfg(conf)).storage_url)
    trials = {t.number: t for t in study.get_trials()}
    assert [trials[n].state.name for n in sorted(trials)] == ["FAIL", "COMPLETE", "COMPLETE"]
    retry = trials[2]
    assert retry.params == trials[0].params and retry.user_attrs["runs"] == "killed_t000"
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials.values()) == 2  # counted once
    assert done_fold.stat().st_mtime_ns == made  # its finished fold was not trained again
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir() if p.name.startswith("killed_"))
    assert runs == [f"killed_t00{n}_3fold{k}" for n in (0, 1) for k in range(3)]  # no runs of a trial 2
    facts = json.loads((tmp_path / "killed" / "tune.json").read_text())
    assert facts["compared"] == 2 and facts["states"]["fail"] == 1
    subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True)
