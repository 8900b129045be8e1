"""The ablation's verdicts over seeds x folds (fold0123.ablation.table: spread_of, judge) and its seeds' layout
(fold0123.ablation.plan, run): on synthetic metrics with a known effect and known noise, and on synthetic run
directories laid out where the driver puts each seed's runs. No training: the driver's steps are recorded, not
run."""
from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

import ablation
from fold0123.ablation import run as ablation_run
from fold0123.ablation import table as ablation_table
from fold0123.ablation.plan import (CLAIMS, claim_keys, seed_recipe, seed_runs_dir, stack_dirs, steps_for,
                                    target_variants, task_confs)
from fold0123.ablation.table import Row, collect, halves, judge, spread_of, verdict_of
from fold0123.common.config import load_config
from fold0123.common.errors import UsageError
from fold0123.common.schema import AblationConfig
from fold0123.stacking.runs import run_dir
from tests.conftest import ROOT, make_runs, make_synthetic_dataroot, save_npz, write

FOLDS = np.array([0.95, 0.90, 1.00])  # the worse row's score per fold (the folds stay across seeds)


def rows_from(d, base=FOLDS, seeds=None) -> tuple[Row, Row]:
    """(better, worse) rows whose seed-by-fold differences are exactly `d` [seeds, folds]."""
    d = np.atleast_2d(np.asarray(d, float))
    seeds = list(range(len(d))) if seeds is None else seeds
    worse = {s: Row.scored("b", "worse", "run", base + 0.01 * i, seed=s) for i, s in enumerate(seeds)}
    better = {s: Row.scored("a", "better", "run", np.asarray(worse[s].folds) + d[i], seed=s)
              for i, s in enumerate(seeds)}
    return Row.over_seeds(better), Row.over_seeds(worse)


def simulate(effect: float, seed_sd: float, noise_sd: float, rng, n_seeds: int = 3) -> tuple[Row, Row]:
    """Two rows over `n_seeds` seeds: the better one lower by `effect` on every fold, each row with its own
    run-to-run shift per seed (sd `seed_sd`) and seed-by-fold noise (sd `noise_sd`)."""
    per_seed = {"a": {}, "b": {}}
    for s in range(n_seeds):
        for id_, shift in (("a", -effect), ("b", 0.0)):
            folds = FOLDS + shift + seed_sd * rng.standard_normal() + noise_sd * rng.standard_normal(3)
            per_seed[id_][s] = Row.scored(id_, id_, "run", folds, seed=s)
    return Row.over_seeds(per_seed["a"]), Row.over_seeds(per_seed["b"])


# ------------------------------------------------------------------------------------------------ the spread

def test_one_seed_keeps_the_fold_paired_rule():
    d = np.array([-0.02, -0.05, -0.01])
    mean, spread = spread_of(d)
    assert mean == pytest.approx(d.mean()) and spread == pytest.approx(2 * d.std(ddof=1) / math.sqrt(3))
    better, worse = rows_from(d)
    claim = judge("a beats b", better, worse)
    assert claim.verdict == claim.verdict_all == "confirmed" and claim.halves == [] and claim.seeds == [0]


def test_the_spread_comes_from_seeds_times_folds():
    """The same fold differences in three seeds give the fold-paired spread; seed noise added on top (a shift per
    seed, or noise per seed-fold pair) makes the spread grow, with the same folds."""
    folds = np.array([-0.02, -0.05, -0.01])
    same = np.tile(folds, (3, 1))
    base = spread_of(same)[1]
    assert base == pytest.approx(spread_of(folds)[1])
    shifted = same + np.array([[0.03], [0.0], [-0.03]])  # seed shifts: mean unchanged
    assert spread_of(shifted)[0] == pytest.approx(spread_of(same)[0]) and spread_of(shifted)[1] > base
    noisy = same + np.array([[0.02, -0.01, 0.0], [-0.02, 0.0, 0.01], [0.0, 0.01, -0.01]])
    assert spread_of(noisy)[1] > base
    # on rows: more run-to-run noise, a wider spread (averaged over many draws, same effect)
    rng = np.random.default_rng(0)
    quiet = np.mean([judge("c", *simulate(0.02, 0.001, 0.005, rng)).spread for _ in range(200)])
    loud = np.mean([judge("c", *simulate(0.02, 0.02, 0.005, rng)).spread for _ in range(200)])
    assert loud > 2 * quiet


def test_the_standard_error_is_cautious_under_seed_and_fold_noise():
    """Under d = effect + fold_k + seed_s + noise_sk, the rule's s.e.^2 is on average the variance of the mean
    difference plus noise / (S K): never below it (the rule counts the seed-by-fold noise twice)."""
    rng = np.random.default_rng(1)
    sd_fold, sd_seed, sd_noise, n_seeds, n_folds = 0.02, 0.01, 0.01, 3, 3
    means, variances = [], []
    for _ in range(4000):
        d = (rng.normal(0, sd_fold, n_folds)[None] + rng.normal(0, sd_seed, n_seeds)[:, None]
             + rng.normal(0, sd_noise, (n_seeds, n_folds)))
        mean, spread = spread_of(d)
        means.append(mean), variances.append((spread / 2) ** 2)
    true = sd_fold ** 2 / n_folds + sd_seed ** 2 / n_seeds + sd_noise ** 2 / (n_seeds * n_folds)
    assert np.var(means) == pytest.approx(true, rel=0.1)
    assert np.mean(variances) == pytest.approx(true + sd_noise ** 2 / (n_seeds * n_folds), rel=0.1)


# ------------------------------------------------------------------------------------------------ verdicts

def test_a_true_effect_larger_than_the_seed_spread_is_confirmed():
    rng = np.random.default_rng(2)
    better, worse = simulate(0.05, 0.005, 0.003, rng)
    claim = judge("a beats b", better, worse, seeds=[0, 1, 2])
    assert claim.verdict == "confirmed" and claim.difference == pytest.approx(-0.05, abs=0.01)
    assert [h["seeds"] for h in claim.halves] == [[0, 1], [2]]
    assert [h["verdict"] for h in claim.halves] == ["confirmed", "confirmed"]
    assert judge("b beats a", worse, better).verdict == "refuted"


def test_no_effect_is_not_significant():
    d = np.array([[0.01, -0.01, 0.0], [-0.02, 0.0, 0.02], [0.0, 0.015, -0.015]])  # every seed's mean is 0
    claim = judge("a beats b", *rows_from(d))
    assert claim.verdict == "not significant" and claim.difference == pytest.approx(0.0, abs=1e-12)
    assert {h["verdict"] for h in claim.halves} == {"not significant"}


def test_an_effect_in_one_seed_only_is_not_confirmed():
    """Seed 0 (in the first half) or seed 2 (the second half alone) sees a large effect, the others none."""
    one = np.array([[-0.05, -0.052, -0.048], [0.001, -0.001, 0.0], [0.0, 0.001, -0.001]])
    for d in (one, one[::-1]):
        claim = judge("a beats b", *rows_from(d))
        assert claim.verdict != "confirmed", claim
        assert claim.verdict_all == "not significant"  # the seeds' spread swallows it
    # one seed of that kind, judged alone, would have been confirmed: what a one-seed table printed
    assert judge("a beats b", *rows_from(one[:1])).verdict == "confirmed"


def test_halves_that_disagree_give_unstable():
    # the first half confirms, the second refutes
    claim = judge("a beats b", *rows_from([[-0.05] * 3, [-0.05] * 3, [0.05] * 3]))
    assert [h["verdict"] for h in claim.halves] == ["confirmed", "refuted"] and claim.verdict == "unstable"
    # all seeds confirm, but the second half alone (one noisy seed) does not: unstable, not confirmed
    d = np.array([[-0.05, -0.05, -0.05], [-0.05, -0.05, -0.05], [0.06, -0.14, -0.04]])
    claim = judge("a beats b", *rows_from(d))
    assert claim.verdict_all == "confirmed" and claim.verdict == "unstable"
    assert [h["verdict"] for h in claim.halves] == ["confirmed", "not significant"]
    # two seeds: one seed per half
    claim = judge("a beats b", *rows_from([[-0.05] * 3, [0.0, 0.01, -0.01]]))
    assert [h["seeds"] for h in claim.halves] == [[0], [1]] and claim.verdict == "unstable"


def test_printed_verdicts_under_no_effect_are_rare():
    """Null claims (fold, seed and seed-fold noise, no effect): a one-seed table calls a quarter of them
    confirmed or refuted; with three seeds and the halves, few are printed either way."""
    rng = np.random.default_rng(3)
    one_seed = printed = 0
    for _ in range(1000):
        d = (rng.normal(0, 0.02, 3)[None] + rng.normal(0, 0.01, 3)[:, None] + rng.normal(0, 0.01, (3, 3)))
        one_seed += verdict_of(d[:1])[2] != "not significant"
        printed += judge("null", *rows_from(d)).verdict in ("confirmed", "refuted")
    assert printed < 100 and one_seed > 2 * printed


def test_halves_and_rows_over_seeds():
    assert halves([0, 1, 2]) == ([0, 1], [2]) and halves([3, 4]) == ([3], [4]) and halves([7]) == ([7], [])
    assert halves([0, 1, 2, 3]) == ([0, 1], [2, 3])
    row = Row.over_seeds({0: Row.scored("r", "r", "run", [1.0, 0.8, 0.9], seed=0),
                          1: Row.scored("r", "r", "run", [1.2, 1.0, 1.1], seed=1),
                          2: Row("r", "r", "run", note="not measured: its step did not run")}, seeds=[0, 1, 2])
    assert row.seeds == [0, 1] and row.folds == pytest.approx([1.1, 0.9, 1.0]) and row.cv_mean == pytest.approx(1.0)
    assert row.seed_std == pytest.approx(np.std([0.9, 1.1], ddof=1))
    assert row.cv_std == pytest.approx(np.std([1.0, 0.8, 0.9]))
    assert "measured on seeds 0, 1 of 0, 1, 2" in row.note


def test_the_tables_header_names_the_folds_it_has():
    """results/cpu_5fold is a 5-fold table: its header must not say 3 folds (it once did, hard-coded)."""
    def results(k: int) -> dict:
        rows = [asdict(Row.scored("2", "pixels", "baseline", [0.9] * k)),
                asdict(Row("3", "a row not measured", "run", note="not measured"))]
        return {"title": "t", "command": "c", "preset": "p", "device": "CPU", "seeds": [0], "wall_seconds": 60,
                "answers": None, "rows": rows, "claims": []}

    for k in (3, 5):
        header = ablation_table.markdown(results(k)).splitlines()[2]
        assert f"the {k} group folds" in header and f"the {8 - k} group folds" not in header


def test_a_claim_with_fewer_seeds_than_asked_is_not_measured():
    better, worse = rows_from([[-0.05] * 3, [-0.05] * 3])
    claim = judge("a beats b", better, worse, seeds=[0, 1, 2])
    assert claim.verdict == "not measured" and claim.verdict_all == "confirmed"
    assert "measured on seeds 0, 1 of 0, 1, 2" in claim.note
    assert judge("a beats b", None, worse).verdict == "not measured"


# ------------------------------------------------------------------------------------------------ --claims

def test_claims_by_key_or_text_and_unknown_ones_fail_in_one_line():
    assert claim_keys(None) is None
    assert claim_keys(["pretext,soup", CLAIMS["pixels"], "pretext"]) == ["pretext", "soup", "pixels"]
    assert steps_for(["pretext"]) == {"scratch"} and "tags" in steps_for(None)
    with pytest.raises(UsageError, match="unknown claim 'nope'.*pretext, freeze, stack, pixels"):
        claim_keys(["nope"])
    with pytest.raises(SystemExit) as exit_:
        ablation.main(["--conf", str(ROOT / "parameters" / "ablation" / "cpu.yml"), "--claims", "pretext", "nope"])
    message = str(exit_.value.code)
    assert message.startswith("error: --claims: unknown claim 'nope'") and "\n" not in message
    assert all(key in message for key in CLAIMS)


# ------------------------------------------------------------------------------------------------ seeds' layout

def synthetic_ablation(root: Path, seeds: str = "[0, 1, 2]", scratch_recipe: bool = False,
                       freeze_modes: str = "[]") -> AblationConfig:
    """An ablation of a one-task recipe (target) on the synthetic dataroot, its runs under root/runs; with
    `scratch_recipe`, the recipe has no pretext and its task trains from scratch (as the CPU demo), and the
    ablation names the pretext of its rows 4 and 5."""
    dataroot = make_synthetic_dataroot(root / "data")
    runs, tiny = root / "runs", ROOT / "parameters" / "tiny"
    confs = {name: write(root / f"{name}.yml", f"base: {tiny / name}.yml\ncheckpoints_dir: {runs}\n"
                                               + ("transfer_from: null\n" * (scratch_recipe and name == "target")))
             for name in ("jigsaw", "target")}
    stack = write(root / "stack.yml", f"base: {tiny / 'stack.yml'}\ncheckpoints_dir: {runs}\n"
                                      f"out_dir: {root / 'submissions'}\nruns: {{target: last}}\n")
    pretext = "null" if scratch_recipe else confs["jigsaw"]
    base = ROOT / "parameters" / "demo" / "three_folds_all" / "recipe.yml"
    recipe = write(root / "recipe.yml", f"base: {base}\ndataset: null\n"
                                        f"dataroot: {dataroot}\nanswers: {root / 'answers.csv'}\ndevices: cpu\n"
                                        f"pretext: {pretext}\ntasks: [{confs['target']}]\nstack: {stack}\n")
    conf = write(root / "ablation.yml", f"recipe: {recipe}\nout_dir: {root / 'results'}\n"
                                        f"freeze_modes: {freeze_modes}\nsoup: 0\npseudo: false\nseeds: {seeds}\n"
                                        + (f"pretext: {confs['jigsaw']}\n" if scratch_recipe else ""))
    return load_config(conf, schema=AblationConfig)


def test_each_seed_trains_and_stacks_in_its_own_place(tmp_path: Path):
    cfg = synthetic_ablation(tmp_path)
    runs = tmp_path / "runs"
    assert seed_runs_dir(cfg, 0) is None and seed_recipe(cfg, 0).checkpoints_dir is None  # make demo's places
    assert seed_runs_dir(cfg, 2) == runs / "seed2"
    assert [seed_recipe(cfg, s).seed for s in (0, 1, 2)] == [0, 1, 2]
    assert {seed_recipe(cfg, s).dataroot for s in (0, 1, 2)} == {seed_recipe(cfg, 0).dataroot}
    dirs = [stack_dirs(cfg, ["target"], seed=s)["post"] for s in (0, 1, 2)]
    assert dirs[0] == tmp_path / "results" / "stacks" / "post" and len(set(dirs)) == 3


def test_the_driver_runs_each_seed_and_only_the_claims_asked(tmp_path: Path, monkeypatch):
    """`--claims pretext`: the recipe's runs and the scratch variant, per seed, each in its own folder (the image
    cache shared); no stack, no baselines. The dataset, folds and tag vectors once, with the recipe's seed."""
    cfg = synthetic_ablation(tmp_path, "[0, 1]")
    calls = []
    for name in ("build_dataset", "make_folds", "make_tag_vectors", "pretext", "fold0123", "make_soups"):
        monkeypatch.setattr(ablation_run, name, lambda recipe, *a, _n=name: calls.append((_n, recipe.seed,
                                                                                          recipe.checkpoints_dir)))
    monkeypatch.setattr(ablation_run, "launch", lambda recipe, conf, redo, *a: calls.append(
        ("launch", recipe.seed, recipe.checkpoints_dir, *a)))
    monkeypatch.setattr(ablation_run, "run_cli", lambda *a, **k: calls.append(("cli", *a)))
    ablation_run.run_ablation(cfg, ["--conf", "x.yml"], claims=["pretext"])
    assert [c[:2] for c in calls[:3]] == [("build_dataset", 0), ("make_folds", 0), ("make_tag_vectors", 0)]
    launches = [c for c in calls if c[0] == "launch"]
    assert [(c[1], c[2]) for c in launches] == [(0, None), (1, str(tmp_path / "runs" / "seed1"))]
    assert all("exp=target_scratch" in c for c in launches)
    table_call = [c for c in calls if c[0] == "cli"][-1]
    assert table_call[1:3] == ("-m", "fold0123.ablation.table")  # no stack.py
    assert table_call[-2:] == ("--claims", "pretext")  # the header's command says which steps ran
    assert not any(c[0] == "cli" and c[1] == "stack.py" for c in calls)
    cache = tmp_path / "runs" / "seed1" / "cache"
    assert cache.is_symlink() and cache.resolve() == (tmp_path / "runs" / "cache").resolve()
    timings = json.loads((tmp_path / "results" / "timings.json").read_text())
    assert {"tasks", "target_scratch", "seed 1: tasks", "seed 1: target_scratch"} <= set(timings)


def test_a_recipe_from_scratch_gets_its_transferred_rows_from_the_ablations_pretext(tmp_path: Path, monkeypatch):
    """The CPU demo's tasks train from scratch: the pretext claim then trains the ablation's own pretext run and a
    transferred variant of the target task (row 4), and the freeze variants transfer from it too; the recipe's
    own pretext step stays a no-op."""
    cfg = synthetic_ablation(tmp_path, "[0]", scratch_recipe=True, freeze_modes="[none, layer34]")
    calls = []
    monkeypatch.setattr(ablation_run, "pretext", lambda recipe, *a: calls.append(("pretext", recipe.pretext)))
    for name in ("build_dataset", "make_folds", "make_tag_vectors", "fold0123", "make_soups"):
        monkeypatch.setattr(ablation_run, name, lambda recipe, *a: None)
    monkeypatch.setattr(ablation_run, "launch", lambda recipe, conf, redo, *a: calls.append(("launch", *a)))
    monkeypatch.setattr(ablation_run, "run_cli", lambda *a, **k: None)
    ablation_run.run_ablation(cfg, ["--conf", "x.yml"], claims=["pretext", "freeze"])
    assert [c for c in calls if c[0] == "pretext"] == [("pretext", None), ("pretext", cfg.pretext)]
    launches = [" ".join(c[1:]) for c in calls if c[0] == "launch"]
    assert len(launches) == 2 and all("transfer_from=jigsaw_all" in c for c in launches), launches
    assert "exp=target_transfer" in launches[0] and "exp=target_freeze_layer34 " in launches[1] + " "
    assert "freeze=" not in launches[0]  # the transferred run at the base's freeze mode: row 5-none
    base = task_confs(seed_recipe(cfg, 0))["target"][1]
    with pytest.raises(UsageError, match="neither it nor the ablation config names a pretext"):
        target_variants(cfg.model_copy(update={"pretext": None}), base, None)


def test_the_table_reads_rows_3_and_4_the_other_way_round_for_a_recipe_from_scratch(tmp_path: Path):
    """Row 3 is then the recipe's own target run, row 4 the ablation's `target_transfer` variant."""
    cfg = synthetic_ablation(tmp_path, "[0]", scratch_recipe=True)
    runs, dataroot = tmp_path / "runs", tmp_path / "data"
    make_runs(runs, dataroot, ("target",), seed=0)
    for run in make_runs(tmp_path / "transferred", dataroot, ("target",), seed=1):
        shift_outputs(run, 0.8)
        run.rename(run_dir(runs, "target_transfer", run.name.removeprefix("target_")))
    meta = {"title": "t", "preset": "p", "command": "c", "device": "cpu", "seeds": cfg.seeds, "wall_seconds": 1.0}
    results = collect(cfg, meta)
    rows, claims = ({r["id"]: r for r in results["rows"]}, {c["key"]: c for c in results["claims"]})
    assert rows["4"]["cv_mean"] > rows["3"]["cv_mean"] + 0.1  # the shifted (worse) runs are row 4's
    assert claims["pretext"]["verdict"] == "refuted"


def test_the_in_fold_parts_are_evaluated_for_the_fold_runs_only(tmp_path: Path, monkeypatch):
    """Row 8-infold reads each fold run's predictions on its own train rows; the `all` run has no held-out rows
    and no in-fold variant, so its train part (the largest) is not evaluated."""
    cfg = synthetic_ablation(tmp_path, "[0]")
    recipe = seed_recipe(cfg, 0)
    for split in ("3fold0", "3fold1", "3fold2", "all"):
        (run_dir(tmp_path / "runs", "target", split) / "8.pth").parent.mkdir(parents=True)
        (run_dir(tmp_path / "runs", "target", split) / "8.pth").write_bytes(b"")
    calls = []
    monkeypatch.setattr(ablation_run, "run_cli", lambda *a: calls.append(a))
    ablation_run.evaluate_train_parts(recipe)
    folds = [str(run_dir(tmp_path / "runs", "target", f"3fold{i}")) for i in range(3)]
    assert calls == [("evaluate.py", "--run", *folds, "--epoch", "8", "--parts", "train", "--device", "cpu")]


def shift_outputs(run: Path, by: float) -> None:
    """Move every prediction of a synthetic run by `by` (a worse model)."""
    for path in (run / "eval").glob("*.npz"):
        with np.load(path) as data:
            ids, outputs = data["ids"], data["outputs"]
        save_npz(path, ids, outputs + by)


def test_the_table_reads_every_seed_and_confirms_a_true_effect(tmp_path: Path):
    """Synthetic run directories per seed where the driver puts them: the transferred run (row 4) better than
    the run from scratch (row 3) by much more than the seeds' spread; the table sees three seeds per row and
    confirms the pretext claim, with both halves; the claims without rows are not measured."""
    cfg = synthetic_ablation(tmp_path)
    dataroot = tmp_path / "data"
    for seed in cfg.seeds:
        runs = seed_runs_dir(cfg, seed) or tmp_path / "runs"
        make_runs(runs, dataroot, ("target",), seed=seed)
        for run in make_runs(tmp_path / f"scratch{seed}", dataroot, ("target",), seed=100 + seed):
            shift_outputs(run, 0.8)
            run.rename(run_dir(runs, "target_scratch", run.name.removeprefix("target_")))
    meta = {"title": "t", "preset": "p", "command": "c", "device": "cpu", "seeds": cfg.seeds, "wall_seconds": 60.0}
    results = collect(cfg, meta)
    rows = {r["id"]: r for r in results["rows"]}
    for id_ in ("3", "4"):
        assert rows[id_]["seeds"] == [0, 1, 2] and len(rows[id_]["seed_folds"]) == 3, rows[id_]
        assert rows[id_]["seed_std"] > 0 and math.isfinite(rows[id_]["answers"])
    assert len({tuple(f) for f in rows["4"]["seed_folds"]}) == 3  # each seed its own runs
    claims = {c["key"]: c for c in results["claims"]}
    assert claims["pretext"]["verdict"] == "confirmed" and claims["pretext"]["seeds"] == [0, 1, 2]
    assert [h["verdict"] for h in claims["pretext"]["halves"]] == ["confirmed", "confirmed"]
    assert claims["pixels"]["verdict"] == "not measured"
    text = (tmp_path / "results" / "RESULTS.md").read_text()
    assert "seeds [0, 1, 2]" in text and "**unstable**" in text and "| 0, 1, 2 |" in text
    assert (tmp_path / "results" / "report.html").is_file()


def test_the_tables_command_repeats_the_claims_the_driver_ran(tmp_path: Path):
    """A table made by `ablation.py --claims ...` says so in its header: the command it prints reproduces the
    run (without the claims it would train every row)."""
    synthetic_ablation(tmp_path, "[0]")
    conf = str(tmp_path / "ablation.yml")
    ablation_table.main(["--conf", conf, "--set", "soup=0", "--claims", "baseline", "pretext"])
    results = json.loads((tmp_path / "results" / "results.json").read_text())
    assert results["command"] == f"python ablation.py --conf {conf} --set soup=0 --claims baseline pretext"
    assert f"`{results['command']}`" in (tmp_path / "results" / "RESULTS.md").read_text()
    ablation_table.main(["--conf", conf])
    assert json.loads((tmp_path / "results" / "results.json").read_text())["command"].endswith(conf)
