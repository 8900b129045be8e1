"""The ablation table: every piece of the pipeline against the simple baselines, on the same folds and answers.

The driver (ablation.run) trains the variant runs and writes the stacks; this module only reads what
they left (run directories, stack reports, baselines.json, the driver's timings.json) and turns it into rows,
verdicts on the atmaCup #11 write-up's claims, `results.json`, `RESULTS.md` and the HTML report.

A row is scored the way the stack is: RMSE on the target per fold, over all out-of-fold rows, and on the held-out
answers (test predictions of the `all` run, or the stack's submission). Nothing here chooses anything: every
choice was made out of fold by the step that made the file.

Every row is measured once per seed of the config's `seeds` (ablation.plan: where each seed's runs and stacks
are); the folds are the same for every seed. A row shows its mean over seeds x folds ± the standard deviation of
its per-seed CV means (the run-to-run spread), beside the fold-to-fold standard deviation (within a seed,
averaged over seeds).

A claim compares two rows on the seeds both were measured on, seed by seed and fold by fold (`spread_of`):

    d[s, k] = score_a[s, k] - score_b[s, k]   (lower is better; S seeds x K folds, paired by seed and fold)
    mean    = the mean of d over all S x K seed-fold pairs
    s.e.^2  = var_k(mean_s d[s, k]) / K + var_s(mean_k d[s, k]) / S   (sample variances, ddof 1)

The first term is the fold-paired standard error of the seed-averaged fold differences (the fold-to-fold spread),
the second the standard error of the per-seed mean differences across seeds (the run-to-run spread; only with
S >= 2). Under the two-way model d = mu + fold_k + seed_s + noise_sk its expectation is the variance of `mean`
plus var(noise) / (S K): the seed-by-fold noise is counted twice, so the rule errs on the cautious side, and
neither source can hide the other (both terms are >= 0). With one seed it is the fold-paired rule of one run.
The spread is 2 s.e.: `confirmed` when the mean difference goes the claimed way by more than the spread,
`refuted` when it goes the other way by more, `not significant` otherwise.

The reproducibility check (`judge`): the seeds, in the config's order, are split into two halves, the first
ceil(S/2) seeds and the rest ([0, 1, 2]: {0, 1} and {2}; two seeds: one each), and each half is judged by the
same rule on its own seeds. The printed verdict is the all-seeds verdict only when both halves reach that same
verdict on their own; otherwise it is `unstable` (the halves disagree with each other, or both with all the
seeds), never confirmed or refuted. With one seed there are no halves and the all-seeds verdict
is printed. A claim is `not measured` when a row is missing, or was measured on fewer seeds than the config
asks for (its difference and spread still say what the seeds it has give).
"""
from __future__ import annotations

import argparse
import json
import math
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fold0123.ablation.plan import (CLAIMS, base_seed, baselines_dir, pretext_exp, pretext_pair, pretext_variant,
                                    seed_recipe, stack_dirs, task_confs, timing_key)
from fold0123.common import rundir
from fold0123.common.config import add_config_args, config_from_args, set_args
from fold0123.common.errors import Fold0123Error, cli_main
from fold0123.common.io import write_json, write_text
from fold0123.common.schema import AblationConfig
from fold0123.data.answers import score_answers
from fold0123.data.layout import read_train
from fold0123.data.metrics import rmse
from fold0123.reports.html import (esc, facts_table, fmt, image, is_missing, page, paragraph, section,
                                   stack_sections, table)
from fold0123.stacking.pipeline import INFOLD_ROW, INFOLD_VARIANT, NESTED_ROW, OOF_ROW, OOF_VARIANT
from fold0123.stacking.runs import as_target, eval_tag, fold_splits, load_outputs, resolve_epoch, run_dir


@dataclass
class Row:
    """One row of the table. Over several seeds (`over_seeds`): `folds` are the seed-averaged fold scores,
    `cv_mean` the mean over seeds x folds, `cv_std` the fold-to-fold std (within a seed, averaged over seeds),
    `seed_std` the std (ddof 1) of the per-seed CV means (None with one seed), `oof`, `answers` and `seconds`
    means over seeds; `seed_folds[i]` are seed `seeds[i]`'s fold scores."""
    id: str
    name: str
    group: str
    folds: list[float] = field(default_factory=list)
    cv_mean: float | None = None
    cv_std: float | None = None
    oof: float | None = None
    answers: float | None = None
    seconds: float | None = None
    note: str = ""
    seeds: list[int] = field(default_factory=list)
    seed_folds: list[list[float]] = field(default_factory=list)
    seed_std: float | None = None

    @classmethod
    def scored(cls, id: str, name: str, group: str, folds, oof=None, answers=None, seconds=None, note="",
               seed: int = 0):
        """One seed's row."""
        folds = [float(f) for f in folds]
        return cls(id, name, group, folds, float(np.mean(folds)) if folds else None,
                   float(np.std(folds)) if folds else None, _num(oof), _num(answers), _num(seconds), note,
                   [seed] if folds else [], [folds] if folds else [])

    @classmethod
    def over_seeds(cls, per_seed: dict[int, "Row"], seeds: list[int] | None = None) -> "Row":
        """One row from the same row of several seeds (`{seed: one seed's row}`); the seeds whose row is not
        measured (or has another fold count) are left out, and the note says so when `seeds` (the seeds asked
        for) are not all there."""
        rows = list(per_seed.values())
        measured = [(s, r) for s, r in per_seed.items() if r.folds]
        first = measured[0][1] if measured else rows[0]
        measured = [(s, r) for s, r in measured if len(r.folds) == len(first.folds)]
        wanted = list(per_seed) if seeds is None else list(seeds)
        if not measured:
            return cls(first.id, first.name, first.group, note=first.note)
        scores = np.array([r.folds for _, r in measured], float)
        seed_means = scores.mean(axis=1)
        mean_of = lambda values: (float(np.mean(values)) if values else None)  # noqa: E731
        note = first.note
        have = [s for s, _ in measured]
        if set(wanted) - set(have):
            note = f"{note}; measured on seeds {_seed_list(have)} of {_seed_list(wanted)}".lstrip("; ")
        return cls(first.id, first.name, first.group, scores.mean(axis=0).tolist(), float(scores.mean()),
                   float(scores.std(axis=1).mean()), mean_of([r.oof for _, r in measured if r.oof is not None]),
                   mean_of([r.answers for _, r in measured if r.answers is not None]),
                   mean_of([r.seconds for _, r in measured if r.seconds is not None]), note, have,
                   scores.tolist(), float(seed_means.std(ddof=1)) if len(have) > 1 else None)


@dataclass
class Claim:
    claim: str
    rows: list[str]
    difference: float | None = None     # mean of d over seeds x folds
    spread: float | None = None         # 2 s.e. (spread_of)
    verdict: str = "not measured"       # what is printed: the all-seeds verdict, or `unstable` (judge)
    cost_seconds: float | None = None
    note: str = ""
    key: str = ""                       # plan.CLAIMS key (`ablation.py --claims`)
    seeds: list[int] = field(default_factory=list)
    per_seed: list[float] = field(default_factory=list)  # each seed's mean fold difference
    verdict_all: str | None = None      # the verdict of all the seeds, before the halves are compared
    halves: list[dict] = field(default_factory=list)     # {seeds, difference, spread, verdict} per half


def _seed_list(seeds) -> str:
    return ", ".join(map(str, seeds))


def _num(value) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


# ------------------------------------------------------------------------------------------------- reading

def run_seconds(checkpoints_dir: str | Path, exp: str, splits: list[str]) -> float | None:
    """Device time of an experiment: per split, config.yml (written at the start) to DONE, summed over splits."""
    total = 0.0
    for split in splits:
        run = run_dir(checkpoints_dir, exp, split)
        done, config = rundir.done_path(run), rundir.config_path(run)
        if not (done.is_file() and config.is_file()):
            return None
        total += done.stat().st_mtime - config.stat().st_mtime
    return total


def run_row(id: str, name: str, group: str, dataroot, checkpoints_dir, exp: str, task: str, k: int,
            answers: str | None, tag: str | None = None, view: str = "mean", note: str = "") -> Row:
    """A run scored on the target directly: its `tag` (`epoch3`, `soup2`; default its last evaluated epoch)
    outputs, the 8-view mean or the identity view, per fold on the held-out rows, over all OOF rows, and the `all`
    run's test rows on the answers."""
    tag = tag or eval_tag(resolve_epoch(checkpoints_dir, exp, fold_splits(k), "last"))
    train = read_train(dataroot).set_index("object_id")["target"]
    splits = fold_splits(k)
    preds, truth, scores = [], [], []
    for split in splits:
        out = load_outputs(run_dir(checkpoints_dir, exp, split), tag, "oof")
        pred = as_target(task, out.view(view))
        y = train.loc[out.ids].to_numpy(float)
        scores.append(rmse(y, pred))
        preds.append(pred), truth.append(y)
    answer = None
    if answers:
        out = load_outputs(run_dir(checkpoints_dir, exp, "all"), tag, "test")
        answer = score_answers(out.ids, as_target(task, out.view(view)), answers)["rmse"]
    return Row.scored(id, name, group, scores, rmse(np.concatenate(truth), np.concatenate(preds)), answer,
                      run_seconds(checkpoints_dir, exp, splits + ["all"]), note)


def stack_rows(report_json: str | Path, rows: dict[str, tuple[str, str, str]], seconds: float | None = None,
               group: str = "stack") -> list[Row]:
    """Rows from a stack report: `{cv-table row name: (id, name, answers column)}` where the answers column is
    `stack` or `post-processed` of the out-of-fold stack's `all` test features (or of the in-fold stack's when the
    CV row is the in-fold one)."""
    report = json.loads(Path(report_json).read_text())
    cv = {row["name"]: row for row in report["tables"]["cv"]}
    answers = {(row["variant"], row["test_features"]): row for row in report["tables"].get("answers", [])}
    out = []
    for cv_name, (id, name, column) in rows.items():
        if cv_name not in cv:
            notes = "; ".join(report.get("notes", []))[:200]
            out.append(Row(id, name, group, note=f"not measured: no {cv_name!r} row in its report ({notes})"))
            continue
        row = cv[cv_name]
        folds = [row[c] for c in sorted(row) if c.startswith("fold")]
        variant = INFOLD_VARIANT if cv_name == INFOLD_ROW else OOF_VARIANT
        source = report["facts"].get("test_features", "all")
        answer = answers.get((variant, source), {}).get(column)
        out.append(Row.scored(id, name, group, folds, row.get("oof"), answer, seconds,
                              note=f"{Path(report_json).name}: {cv_name}"))
    return out


def baseline_rows(baselines_json: str | Path) -> list[Row]:
    """The constant (a classification competition's: majority class) and pixel-statistics rows (and the tags row
    when it ran) from baselines.json (class_baselines.json)."""
    data = json.loads(Path(baselines_json).read_text())
    ids = {"constant mean": "1", "majority class": "1", "pixel statistics LightGBM": "2", "tags LightGBM": "12b"}
    rows = []
    for row in data["rows"]:
        if row["name"] not in ids:
            continue
        if row.get("status") == "skipped":
            rows.append(Row(ids[row["name"]], row["name"], "baseline", note=f"skipped: {row.get('reason', '')}"))
            continue
        rows.append(Row.scored(ids[row["name"]], row["name"], "baseline", row["fold_scores"], row["oof"],
                               row.get("answers"), row.get("seconds"),
                               note="answers: model refit on all train rows"))
    return rows


# ------------------------------------------------------------------------------------------------- claims

def spread_of(d) -> tuple[float, float]:
    """(mean, 2 s.e.) of the differences `d` [seeds, folds] by the module docstring's rule (one seed: the
    fold-paired s.e.); the spread is inf with fewer than 2 folds."""
    d = np.atleast_2d(np.asarray(d, float))
    n_seeds, n_folds = d.shape
    if n_folds < 2:
        return float(d.mean()), math.inf
    variance = d.mean(axis=0).var(ddof=1) / n_folds
    if n_seeds > 1:
        variance += d.mean(axis=1).var(ddof=1) / n_seeds
    return float(d.mean()), float(2 * math.sqrt(variance))


def verdict_of(d) -> tuple[float, float, str]:
    """(mean, spread, verdict) of `d` [seeds, folds] = better - worse (lower is better)."""
    mean, spread = spread_of(d)
    return mean, spread, "confirmed" if mean < -spread else "refuted" if mean > spread else "not significant"


def halves(seeds: list) -> tuple[list, list]:
    """The seeds' two halves: the first ceil(S/2) seeds and the rest ([0, 1, 2] -> [0, 1], [2])."""
    cut = (len(seeds) + 1) // 2
    return list(seeds[:cut]), list(seeds[cut:])


def judge(claim: str, better: Row | None, worse: Row | None, cost: float | None = None, note: str = "",
          seeds: list[int] | None = None, key: str = "") -> Claim:
    """`better` is claimed to score lower than `worse`, seed by seed and fold by fold, on the seeds both rows have
    (see the module docstring); `seeds`: the seeds the config asks for (fewer measured: not measured)."""
    ids = [getattr(better, "id", "?"), getattr(worse, "id", "?")]
    if better is None or worse is None or not better.folds or not worse.folds:
        return Claim(claim, ids, note=note or "a row is missing", key=key)
    worse_folds = dict(zip(worse.seeds, worse.seed_folds))
    common = [s for s in better.seeds if s in worse_folds]
    pairs = [(s, a, worse_folds[s]) for s, a in zip(better.seeds, better.seed_folds)
             if s in worse_folds and len(a) == len(worse_folds[s])]
    if not pairs:
        why = "no seed measured on both rows" if not common else "the rows have different fold counts"
        return Claim(claim, ids, note=f"{note}; {why}".lstrip("; "), key=key)
    used = [s for s, _, _ in pairs]
    d = np.array([np.asarray(a) - np.asarray(b) for _, a, b in pairs])
    mean, spread, verdict_all = verdict_of(d)
    claim_row = Claim(claim, ids, mean, spread, verdict_all, cost, note, key, used, d.mean(axis=1).tolist(),
                      verdict_all)
    if seeds is not None and set(seeds) - set(used):
        claim_row.verdict = "not measured"
        claim_row.note = f"{note}; measured on seeds {_seed_list(used)} of {_seed_list(seeds)}".lstrip("; ")
        return claim_row
    if len(used) > 1:
        for half in halves(list(range(len(used)))):
            h_mean, h_spread, h_verdict = verdict_of(d[half])
            claim_row.halves.append({"seeds": [used[i] for i in half], "difference": h_mean, "spread": h_spread,
                                     "verdict": h_verdict})
        if any(h["verdict"] != verdict_all for h in claim_row.halves):
            claim_row.verdict = "unstable"
    return claim_row


def claims(rows: dict[str, Row], extra_cost: dict[str, float | None], seeds: list[int] | None = None) -> list[Claim]:
    """The write-up's claims (plan.CLAIMS) and the one every method owes: beating the simple baselines. `seeds`:
    the seeds asked for (a claim measured on fewer is not measured)."""
    by = rows.get
    singles = [r for r in rows.values() if r.group == "task alone" and r.folds]
    best_single = min(singles, key=lambda r: r.cv_mean) if singles else None
    # the in-fold stack's CV is optimistic by construction (its level-2 model saw those rows' runs): never "best"
    deep = [r for r in rows.values() if r.group in ("stack", "run") and r.folds and not r.id.endswith("infold")]
    best_deep = min(deep, key=lambda r: r.cv_mean) if deep else None

    def claim(key: str, better: Row | None, worse: Row | None, cost: float | None = None, note: str = "") -> Claim:
        return judge(CLAIMS[key], better, worse, cost, note, seeds, key)

    return [
        claim("pretext", by("4"), by("3"), extra_cost.get("pretext")),
        claim("freeze", by("5-none"), by("5-layer34")),
        claim("stack", by("8"), best_single,
              note=f"against the best single task ({best_single.name})" if best_single else ""),
        claim("pixels", by("9"), by("8"), extra_cost.get("pixel_stats")),
        claim("post", by("10"), by("9")),
        claim("soup", by("7-soup"), by("7-last")),
        claim("pseudo", by("11"), by("10"), extra_cost.get("pseudo")),
        claim("baseline", best_deep, by("2"), note=f"best deep row: {best_deep.name}" if best_deep else ""),
    ]


# ------------------------------------------------------------------------------------------------- writing

RULE = ("Each claim compares two rows on the same seeds and folds: d = score(first) - score(second) per seed-fold "
        "pair (S seeds x K folds, paired by seed and fold). Mean difference: the mean of d over the S x K pairs. "
        "Spread: 2 s.e., with s.e.^2 = var over folds of the seed-averaged fold differences / K + var over seeds "
        "of the per-seed mean differences / S (the fold-to-fold and the run-to-run spread; with one seed, the "
        "fold-paired s.e.). Confirmed (refuted) when the mean difference goes the claimed (other) way by more "
        "than the spread, not significant otherwise. Reproducibility: the seeds are split into halves (the first "
        "ceil(S/2) seeds and the rest), each judged by the same rule; a verdict is printed only when both halves "
        "reach it on their own, otherwise it is **unstable**. Not measured: a row is missing, or has fewer seeds "
        "than the preset asks for.")


def _fold_count(rows: list[dict]) -> int:
    """K of the folds (the most any row has: a row not measured has none)."""
    return max((len(r.get("folds") or []) for r in rows), default=0)


def _halves_text(halves: list[dict]) -> str:
    return "; ".join(f"{_seed_list(h['seeds'])}: {h['verdict']} ({fmt(h['difference'])} ± {fmt(h['spread'])})"
                     for h in halves) or "–"


def markdown(results: dict) -> str:
    seeds = results.get("seeds") or []
    k = _fold_count(results["rows"])
    lines = [f"# {results['title']}", "",
             f"`{results['command']}` (preset `{results['preset']}`, {results['device']}, seeds "
             f"{seeds}), {results['wall_seconds'] / 60:.1f} min wall-clock. RMSE on the target (0..3); "
             f"CV = mean over seeds x the {k} group folds ± std of the per-seed CV means over the seeds (the "
             "run-to-run spread; none with one seed); fold std = the std over folds within a seed, averaged over "
             "seeds; OOF = over all out-of-fold rows; answers = the held-out "
             f"answers ({results['answers'] or 'none'}), read only to score; OOF and answers are means over the "
             "seeds. Seconds: device time of the row's own runs (summed over their splits) or of its stacking "
             "step, per seed (mean over the seeds).", "",
             "| # | row | CV mean ± std over seeds | fold std | OOF | answers | seconds | note |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        cv = "–" if r["cv_mean"] is None else f"{r['cv_mean']:.4f}" + (
            "" if r.get("seed_std") is None else f" ± {r['seed_std']:.4f}")
        lines.append(f"| {r['id']} | {r['name']} | {cv} | {fmt(r['cv_std'])} | {fmt(r['oof'])} | "
                     f"{fmt(r['answers'])} | {fmt(r['seconds'], 1)} | {r['note']} |")
    lines += ["", "## The write-up's claims", "", RULE, "", *claims_table(results["claims"])]
    return "\n".join(lines) + "\n"


def claims_table(claims: list[dict]) -> list[str]:
    """The markdown lines of the claims' table (results.json's `claims`): each claim's rows, seeds, difference,
    spread, per-seed differences, halves, verdict and cost."""
    lines = ["| claim | rows | seeds | mean difference | spread (2 s.e.) | per seed | halves | verdict | "
             "cost (s per seed) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c in claims:
        per_seed = ", ".join(fmt(v) for v in c.get("per_seed") or []) or "–"
        lines.append(f"| {c['claim']} | {' vs '.join(c['rows'])} | {_seed_list(c.get('seeds') or []) or '–'} | "
                     f"{fmt(c['difference'])} | {fmt(c['spread'])} | {per_seed} | "
                     f"{_halves_text(c.get('halves') or [])} | **{c['verdict']}** | {fmt(c['cost_seconds'], 0)} |"
                     + (f" {c['note']}" if c['note'] else ""))
    return lines


def write_results(out_dir: str | Path, meta: dict, rows: list[Row], claim_list: list[Claim],
                  stack: dict | None) -> dict:
    """results.json, RESULTS.md and report.html in `out_dir`."""
    out_dir = Path(out_dir)
    results = {**meta, "rows": [asdict(r) for r in rows], "claims": [asdict(c) for c in claim_list],
               "stack": stack}
    write_json(out_dir / "results.json", results)
    write_text(out_dir / "RESULTS.md", markdown(results))
    ablation_html(out_dir / "results.json", out_dir / "report.html")
    return results


def stack_report(folder: Path) -> Path | None:
    """The newest stack report in a stack's out_dir (`{cv}_{time}_report.json`; not a pseudo round's report)."""
    reports = sorted((p for p in folder.glob("*_report.json") if not p.name.startswith("pseudo")),
                     key=lambda p: p.stat().st_mtime)
    return reports[-1] if reports else None


def seed_timings(cfg: AblationConfig, seed: int, timings_json: Path) -> dict[str, float]:
    """Seed `seed`'s step -> seconds from the driver's timings.json (plan.timing_key)."""
    timings = json.loads(timings_json.read_text()) if timings_json.is_file() else {}
    prefix = timing_key(cfg, seed, "")
    if prefix:
        return {k[len(prefix):]: v for k, v in timings.items() if k.startswith(prefix)}
    return {k: v for k, v in timings.items() if not re.match(r"seed \d+: ", k)}


def collect_seed(cfg: AblationConfig, seed: int) -> tuple[list[Row], dict[str, float | None], Path]:
    """One seed's rows (missing steps are rows with a note), the extra costs of its claims, and its
    post-processed stack's folder, from what the driver left for that seed (plan: seed_recipe, stack_dirs,
    baselines_dir, timing_key)."""
    recipe = seed_recipe(cfg, seed)
    timings = seed_timings(cfg, seed, Path(cfg.out_dir) / "timings.json")
    tasks = task_confs(recipe)
    target_exp = next(exp for exp, (_, c) in tasks.items() if c.task == "target")
    target_cfg = tasks[target_exp][1]
    ckpt, k, root, answers = target_cfg.checkpoints_dir, recipe.folds, recipe.dataroot, recipe.answers
    rows: list[Row] = []

    def add(make, *args, **kwargs) -> None:
        try:
            made = make(*args, **kwargs)
        except (Fold0123Error, OSError) as err:  # a step that did not run: the row says so
            rows.append(Row(args[0], args[1], args[2], note=f"not measured: {' '.join(str(err).split())[:160]}"))
            return
        rows.extend(made if isinstance(made, list) else [made])

    def scored(made: list[Row]) -> list[Row]:  # the rows of this seed
        return [replace(r, seeds=[seed] if r.folds else []) for r in made]

    if (baselines_dir(cfg, seed) / "baselines.json").is_file():
        rows += baseline_rows(baselines_dir(cfg, seed) / "baselines.json")
    scratch_exp, transfer_exp = pretext_pair(target_exp, target_cfg)
    if cfg.scratch or scratch_exp == target_exp:
        add(run_row, "3", "target run from scratch", "run", root, ckpt, scratch_exp, "target", k, answers)
    if cfg.scratch or transfer_exp == target_exp:
        add(run_row, "4", "target run transferred from the jigsaw pretext (8-view mean)", "run", root, ckpt,
            transfer_exp, "target", k, answers)
    add(run_row, "4-identity", "  the same, identity view only", "run", root, ckpt, transfer_exp, "target", k,
        answers, view="identity")
    for mode in cfg.freeze_modes:
        exp = transfer_exp if mode == target_cfg.freeze else f"target_freeze_{mode}"
        add(run_row, f"5-{mode}", f"transferred, freeze {mode}", "run", root, ckpt, exp, "target", k, answers,
            note="the transferred target run itself" if exp == transfer_exp else "")
    stacks = stack_dirs(cfg, list(tasks), recipe.test_tags, seed)
    for exp, (_, run_cfg) in tasks.items():
        report = stack_report(stacks[f"alone_{exp}"])
        if report:
            rows += stack_rows(report, {OOF_ROW: (f"6-{exp}", f"{exp} alone (LightGBM on its features)", "stack")},
                               timings.get(f"stack alone_{exp}"), group="task alone")
        if run_cfg.task == "onehot":
            add(run_row, f"6-{exp}-direct", f"{exp}: expected class, 8-view mean", "run", root, ckpt, exp, "onehot",
                k, answers)
    if cfg.soup > 1 and cfg.scratch:  # on the variant run, which keeps its last epochs
        variant = pretext_variant(target_cfg)
        which = "from scratch" if variant == scratch_exp else "transferred"
        add(run_row, "7-soup", f"target {which}: uniform soup of the last {cfg.soup} epochs", "run", root,
            ckpt, variant, "target", k, answers, tag=f"soup{cfg.soup}")
        add(run_row, "7-last", f"target {which}: last epoch", "run", root, ckpt, variant, "target", k, answers)
    named = {"four": {OOF_ROW: ("8", "OOF LightGBM stack of the tasks", "stack"),
                      INFOLD_ROW: ("8-infold", "  the original's in-fold stack", "stack")},
             "pixels": {OOF_ROW: ("9", "8 + pixel statistics as stack features", "stack")},
             "post": {NESTED_ROW: ("10", "9 + tuned post-processing (CV nested)", "post-processed")},
             "pseudo": {NESTED_ROW: ("11", "10 + one pseudo-label round", "post-processed")},
             "tags": {NESTED_ROW: ("12", "10 + tag features (test objects' tags in the dataroot)", "post-processed")}}
    for name, wanted in named.items():
        if name == "tags" and name not in stacks:
            rows.append(Row("12", "10 + tag features", "stack", note="skipped: the test objects have no tags here "
                                                                      "(the recipe's test_tags: true measures it)"))
            continue
        report = stack_report(stacks[name]) if name in stacks else None
        if report is None:
            rows.append(Row(*next(iter(wanted.values()))[:2], "stack", note="not measured: its step did not run"))
            continue
        seconds = timings.get(f"stack {name}", 0.0) + (timings.get("pseudo", 0.0) if name == "pseudo" else 0.0)
        rows += stack_rows(report, wanted, seconds)
    rows.sort(key=lambda r: r.id.startswith("12"))  # the tag rows (12, 12b) last, as in the list
    pretext = pretext_exp(cfg, recipe)
    cost = {"pretext": pretext and run_seconds(ckpt, pretext, ["all"]), "pixel_stats": timings.get("stack pixels"),
            "pseudo": timings.get("pseudo")}
    return scored(rows), cost, stacks["post"]


def merge_seeds(per_seed: dict[int, list[Row]], seeds: list[int] | None = None) -> list[Row]:
    """Each row over the seeds (Row.over_seeds), in the order the rows first appear."""
    by_id: dict[str, dict[int, Row]] = {}
    for seed, rows in per_seed.items():
        for row in rows:
            by_id.setdefault(row.id, {})[seed] = row
    return [Row.over_seeds(found, list(per_seed) if seeds is None else seeds) for found in by_id.values()]


def collect(cfg: AblationConfig, meta: dict) -> dict:
    """Every row and claim, over the config's seeds, from what the driver left (missing steps are rows with a
    note; a claim whose rows lack a seed is not measured)."""
    per_seed = {seed: collect_seed(cfg, seed) for seed in cfg.seeds}
    rows = merge_seeds({seed: found[0] for seed, found in per_seed.items()}, cfg.seeds)
    by_id = {r.id: r for r in rows}
    cost = {}
    for name in ("pretext", "pixel_stats", "pseudo"):  # per seed: the mean over the seeds that have it
        values = [found[1][name] for found in per_seed.values() if found[1].get(name) is not None]
        cost[name] = float(np.mean(values)) if values else None
    recipe = seed_recipe(cfg, cfg.seeds[0])
    meta = {**meta, "dataroot": recipe.dataroot, "answers": recipe.answers}
    shown = base_seed(cfg) if base_seed(cfg) in cfg.seeds else cfg.seeds[0]  # the report's stack: one seed's
    post_dir = per_seed[shown][2]
    post = stack_report(post_dir)
    stack = post and {"out_dir": str(post_dir), "name": post.name.removesuffix("_report.json"), "seed": shown}
    return write_results(cfg.out_dir, meta, rows, claims(by_id, cost, cfg.seeds), stack)


# ------------------------------------------------------------------------------------------------- the HTML report

def ablation_figure(rows: pd.DataFrame):
    """cv_mean ± cv_std per row as horizontal bars (coloured by group), the answers score as a red diamond; rows
    without a CV keep their line, empty, so every row of the table has its place."""
    labels = [f"{r.id} {r.name}" for r in rows.itertuples()]
    groups = list(dict.fromkeys(rows["group"]))
    colours = {g: plt.cm.tab10(i % 10) for i, g in enumerate(groups)}
    y = np.arange(len(rows))[::-1]
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(rows) + 1.6))
    mean = pd.to_numeric(rows["cv_mean"], errors="coerce").to_numpy(float)
    over_seeds = "seed_std" in rows and pd.to_numeric(rows["seed_std"], errors="coerce").notna().any()
    spread = "seed_std" if over_seeds else "cv_std"  # the run-to-run spread where there are seeds
    std = pd.to_numeric(rows[spread], errors="coerce").fillna(0).to_numpy(float)
    has = ~np.isnan(mean)
    ax.barh(y[has], mean[has], xerr=std[has], capsize=3, color=[colours[g] for g in rows["group"][has]],
            alpha=0.85)
    answers = pd.to_numeric(rows["answers"], errors="coerce").to_numpy(float)
    if (~np.isnan(answers)).any():
        ax.scatter(answers, y, marker="D", color="red", zorder=3, s=22, label="held-out answers")
    for g in groups:
        ax.barh([np.nan], [np.nan], color=colours[g], label=f"CV: {g}")
    values = np.concatenate([mean[has] - std[has], mean[has] + std[has], answers[~np.isnan(answers)]])
    if len(values):  # zoom on the scores: rows differ by hundredths on a scale of one
        lo, hi = values.min(), values.max()
        pad = 0.1 * (hi - lo) + 1e-3
        ax.set_xlim(max(0.0, lo - pad) if lo >= 0 else lo - pad, hi + pad)
    ax.set_yticks(y, labels, fontsize=8)
    zoomed = "; the axis does not start at 0" if ax.get_xlim()[0] > 0 else ""
    what = "mean over seeds x folds ± std over seeds" if over_seeds else "mean ± std over folds"
    ax.set_xlabel(f"score ({what}{zoomed})")
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return fig


def _ablation_rows(rows: list[dict]) -> pd.DataFrame:
    """The rows as a table: each fold's score in its own column (rows may have different fold counts)."""
    k = _fold_count(rows)
    out = []
    for r in rows:
        folds = list(r.get("folds") or [])
        out.append({"id": r["id"], "name": r["name"], "group": r["group"],
                    **{f"fold{i}": folds[i] if i < len(folds) else None for i in range(k)},
                    "cv_mean": r.get("cv_mean"), "seed_std": r.get("seed_std"), "cv_std": r.get("cv_std"),
                    "seeds": _seed_list(r.get("seeds") or []), "oof": r.get("oof"),
                    "answers": r.get("answers"), "seconds": r.get("seconds"), "note": r.get("note", "")})
    return pd.DataFrame(out, dtype=object)


def _claims_table(claims: list[dict], names: dict) -> str:
    label = lambda i: f"{i} ({names[i]})" if i in names else str(i)  # noqa: E731
    frame = pd.DataFrame([{"claim": c["claim"], "rows": " vs ".join(label(i) for i in c.get("rows", [])),
                           "seeds": _seed_list(c.get("seeds") or []), "difference": c.get("difference"),
                           "spread": c.get("spread"), "halves": _halves_text(c.get("halves") or []),
                           "verdict": c["verdict"], "cost_seconds": c.get("cost_seconds"), "note": c.get("note", "")}
                          for c in claims], dtype=object)
    verdict_class = lambda column, value: f"v-{str(value).replace(' ', '-')}" if column == "verdict" else None  # noqa
    return table(frame, cell_class=verdict_class, digits={"cost_seconds": 0})


def _resolve_stack_dir(out_dir: str, results_json: Path) -> Path:
    """A relative stack out_dir is taken from the results.json's folder when it exists there, else as given."""
    path = Path(out_dir)
    beside = results_json.parent / path
    return beside if not path.is_absolute() and beside.is_dir() else path


def ablation_html(results_json: str | Path, out_html: str | Path) -> Path:
    """Write the ablation report (header facts, rows table and plot, claims with verdicts, and the stack's sections
    when results.json names one) to out_html; returns its path. The schema is the ablation driver's results.json."""
    results_json, out_html = Path(results_json), Path(out_html)
    results = json.loads(results_json.read_text())
    rows = _ablation_rows(results["rows"])
    wall = results.get("wall_seconds")
    header = {"command": results.get("command"), "preset": results.get("preset"), "device": results.get("device"),
              "seeds": ", ".join(map(str, results.get("seeds") or [])), "dataroot": results.get("dataroot"),
              "answers": results.get("answers"),
              "wall-clock": None if is_missing(wall) else f"{wall:.0f} s ({wall / 60:.1f} min)"}
    sections = [section("Run", facts_table(header))]
    sections.append(section("Ablation table",
                            paragraph("CV: grouped k-fold RMSE per fold (fold columns: averaged over the seeds); "
                                      "cv_mean over seeds x folds; seed_std: std of the per-seed CV means; cv_std: "
                                      "std over folds within a seed, averaged over seeds; oof: RMSE over all "
                                      "out-of-fold rows; answers: RMSE on the held-out answers (never used for a "
                                      "choice); oof and answers averaged over the seeds; – not measured"),
                            table(rows, digits={"seconds": 0})))
    if len(rows):
        sections.append(section("CV per row", image(ablation_figure(rows), "ablation CV per row")))
    claims = results.get("claims") or []
    if claims:
        names = {r["id"]: r["name"] for r in results["rows"]}
        sections.append(section("Claims of the write-up",
                                paragraph(RULE.replace("**", "") + " Cost: the extra wall-clock seconds per seed."),
                                _claims_table(claims, names)))
    stack = results.get("stack")
    if stack:
        stack_dir = _resolve_stack_dir(stack["out_dir"], results_json)
        report = stack_dir / f"{stack['name']}_report.json"
        if report.is_file():
            sections += [f"<h2>Stack {esc(stack['name'])}</h2>", *stack_sections(stack_dir, stack["name"])]
        else:
            sections.append(section("Stack", paragraph(f"no stack report {report}")))
    write_text(out_html, page(results.get("title") or "Ablation", sections))
    return out_html


@cli_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the ablation table from what `make ablation` ran.")
    add_config_args(parser)
    parser.add_argument("--wall-seconds", type=float, default=float("nan"))
    parser.add_argument("--device", default="")
    parser.add_argument("--claims", nargs="+", default=[], metavar="KEY",
                        help="the claims the driver ran (ablation.py --claims): the header's command repeats them")
    args = parser.parse_args(argv)
    cfg = config_from_args(args, AblationConfig)
    claims = ["--claims", *args.claims] if args.claims else []
    meta = {"title": f"Ablation ({Path(args.conf).name})", "preset": args.conf,
            "command": " ".join(["python ablation.py --conf", args.conf, *set_args(args.overrides), *claims]),
            "device": args.device, "seeds": list(cfg.seeds), "wall_seconds": args.wall_seconds}
    print(markdown(collect(cfg, meta)))
    print(f"wrote {Path(cfg.out_dir) / 'RESULTS.md'} and results.json")


if __name__ == "__main__":
    main()
