"""The ablation table: every piece of the pipeline against the simple baselines, on the same folds and answers.

The driver (fold0123.launcher.ablation) trains the variant runs and writes the stacks; this module only reads what
they left (run directories, stack reports, baselines.json, the driver's timings.json) and turns it into rows,
verdicts on the atmaCup #11 write-up's claims, `results.json`, `RESULTS.md` and the HTML report.

A row is scored the way the stack is: RMSE on the target per fold (mean ± std over folds), over all out-of-fold
rows, and on the held-out answers (test predictions of the `all` run, or the stack's submission). Nothing here
chooses anything: every choice was made out of fold by the step that made the file.

A claim compares two rows fold by fold: d_k = score_a,k - score_b,k (lower is better). It is `confirmed` when
the mean difference goes the claimed way by more than its spread (2 x the standard error of d over the folds),
`refuted` when it goes the other way by more than that, `not significant` otherwise, and `not measured` when a
row is missing.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from fold0123.common import rundir
from fold0123.common.ablation_plan import ablation_recipe, pretext_exp, stack_dirs, target_variants, task_confs
from fold0123.common.config import add_config_args, config_from_args
from fold0123.common.errors import Fold0123Error, error_line
from fold0123.common.io import write_json, write_text
from fold0123.common.schema import AblationConfig
from fold0123.data.answers import score_answers
from fold0123.data.layout import read_train
from fold0123.data.metrics import rmse
from fold0123.stacking.html_report import ablation_html
from fold0123.stacking.pipeline import INFOLD_ROW, INFOLD_VARIANT, NESTED_ROW, OOF_ROW, OOF_VARIANT
from fold0123.stacking.runs import RunError, fold_splits, load_outputs, run_dir


@dataclass
class Row:
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

    @classmethod
    def scored(cls, id: str, name: str, group: str, folds, oof=None, answers=None, seconds=None, note=""):
        folds = [float(f) for f in folds]
        return cls(id, name, group, folds, float(np.mean(folds)) if folds else None,
                   float(np.std(folds)) if folds else None, _num(oof), _num(answers), _num(seconds), note)


@dataclass
class Claim:
    claim: str
    rows: list[str]
    difference: float | None = None
    spread: float | None = None
    verdict: str = "not measured"
    cost_seconds: float | None = None
    note: str = ""


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


def as_target(task: str, outputs: np.ndarray) -> np.ndarray:
    """A run's [n, views, d] outputs as target predictions [n, views]: the value (target), the expected class
    (onehot probabilities)."""
    if task == "target":
        return outputs[..., 0]
    if task == "onehot":
        return outputs @ np.arange(outputs.shape[-1])
    raise ValueError(f"task {task!r} has no direct target prediction")


def run_row(id: str, name: str, group: str, dataroot, checkpoints_dir, exp: str, task: str, k: int,
            answers: str | None, tag: str | None = None, view: str = "mean", note: str = "") -> Row:
    """A run scored on the target directly: its `tag` (`epoch3`, `soup2`; default its last evaluated epoch)
    outputs, the 8-view mean or the identity view, per fold on the held-out rows, over all OOF rows, and the `all`
    run's test rows on the answers."""
    tag = tag or last_tag(checkpoints_dir, exp, k)
    pick = (lambda o: o.mean(axis=1)) if view == "mean" else (lambda o: o[:, rundir.VIEWS.index(view)])
    train = read_train(dataroot).set_index("object_id")["target"]
    splits = fold_splits(k)
    preds, truth, scores = [], [], []
    for split in splits:
        out = load_outputs(run_dir(checkpoints_dir, exp, split), tag, "oof")
        pred = pick(as_target(task, out.outputs))
        y = train.loc[out.ids].to_numpy(float)
        scores.append(rmse(y, pred))
        preds.append(pred), truth.append(y)
    answer = None
    if answers:
        out = load_outputs(run_dir(checkpoints_dir, exp, "all"), tag, "test")
        answer = score_answers(out.ids, pick(as_target(task, out.outputs)), answers)["rmse"]
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
    """The constant and pixel-statistics rows (and the tags row when it ran) from baselines.json."""
    data = json.loads(Path(baselines_json).read_text())
    ids = {"constant mean": "1", "pixel statistics LightGBM": "2", "tags LightGBM": "12b"}
    rows = []
    for row in data["rows"]:
        if row["name"] not in ids:
            continue
        if row.get("status") == "skipped":
            rows.append(Row(ids[row["name"]], row["name"], "baseline", note=f"skipped: {row.get('reason', '')}"))
            continue
        rows.append(Row.scored(ids[row["name"]], row["name"], "baseline", row["fold_scores"], row["oof_rmse"],
                               row.get("answers_rmse"), row.get("seconds"),
                               note="answers: model refit on all train rows"))
    return rows


# ------------------------------------------------------------------------------------------------- claims

def judge(claim: str, better: Row | None, worse: Row | None, cost: float | None = None, note: str = "") -> Claim:
    """`better` is claimed to score lower than `worse`, fold by fold (see the module docstring)."""
    if better is None or worse is None or not better.folds or len(better.folds) != len(worse.folds):
        return Claim(claim, [getattr(better, "id", "?"), getattr(worse, "id", "?")], note=note or "a row is missing")
    d = np.asarray(better.folds) - np.asarray(worse.folds)
    mean, spread = float(d.mean()), float(2 * d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.inf
    verdict = "confirmed" if mean < -spread else "refuted" if mean > spread else "not significant"
    return Claim(claim, [better.id, worse.id], mean, spread, verdict, cost, note)


def claims(rows: dict[str, Row], extra_cost: dict[str, float | None]) -> list[Claim]:
    """The write-up's claims (and the one every method owes: beating the simple baselines)."""
    by = rows.get
    singles = [r for r in rows.values() if r.group == "task alone" and r.folds]
    best_single = min(singles, key=lambda r: r.cv_mean) if singles else None
    # the in-fold stack's CV is optimistic by construction (its level-2 model saw those rows' runs): never "best"
    deep = [r for r in rows.values() if r.group in ("stack", "run") and r.folds and not r.id.endswith("infold")]
    best_deep = min(deep, key=lambda r: r.cv_mean) if deep else None
    freeze = by("5-layer34")
    return [
        judge("the jigsaw pretext helps (transferred beats the same run from scratch)", by("4"), by("3"),
              extra_cost.get("pretext")),
        judge("freezing layer3/4/fc loses to training everything (freeze none beats layer34)", by("5-none"), freeze,
              None),
        judge("the four-task stack beats each task alone", by("8"), best_single,
              note=f"against the best single task ({best_single.name})" if best_single else ""),
        judge("pixel statistics help the stack", by("9"), by("8"), extra_cost.get("pixel_stats")),
        judge("the post-processing helps (nested CV)", by("10"), by("9")),
        judge("a uniform soup of the last epochs beats the last epoch", by("7-soup"), by("7-last")),
        judge("one pseudo-label round helps", by("11"), by("10"), extra_cost.get("pseudo")),
        judge("the pipeline beats the pixel-statistics LightGBM", best_deep, by("2"),
              note=f"best deep row: {best_deep.name}" if best_deep else ""),
    ]


# ------------------------------------------------------------------------------------------------- writing

def _fmt(value, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(results: dict) -> str:
    lines = [f"# {results['title']}", "",
             f"`{results['command']}` (preset `{results['preset']}`, {results['device']}, seeds "
             f"{results['seeds']}), {results['wall_seconds'] / 60:.1f} min wall-clock. RMSE on the target (0..3); "
             "CV = mean ± std over the 3 group folds; OOF = over all out-of-fold rows; answers = the held-out "
             f"answers ({results['answers'] or 'none'}), read only to score. Seconds: device time of the row's own "
             "runs (summed over their splits) or of its stacking step.", "",
             "| # | row | CV mean ± std | OOF | answers | seconds | note |", "|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        cv = "–" if r["cv_mean"] is None else f"{r['cv_mean']:.4f} ± {r['cv_std']:.4f}"
        lines.append(f"| {r['id']} | {r['name']} | {cv} | {_fmt(r['oof'])} | {_fmt(r['answers'])} | "
                     f"{_fmt(r['seconds'], 1)} | {r['note']} |")
    lines += ["", "## The write-up's claims", "",
              "| claim | rows | mean fold difference | spread (2 s.e.) | verdict | cost (s) |",
              "|---|---|---|---|---|---|"]
    for c in results["claims"]:
        lines.append(f"| {c['claim']} | {' vs '.join(c['rows'])} | {_fmt(c['difference'])} | {_fmt(c['spread'])} | "
                     f"**{c['verdict']}** | {_fmt(c['cost_seconds'], 0)} |" + (f" {c['note']}" if c['note'] else ""))
    return "\n".join(lines) + "\n"


def write_results(out_dir: str | Path, meta: dict, rows: list[Row], claim_list: list[Claim],
                  stack: dict | None) -> dict:
    """results.json, RESULTS.md and report.html (stacking.html_report) in `out_dir`."""
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


def last_tag(checkpoints_dir, exp: str, k: int) -> str:
    """`epoch{E}` of the last epoch every fold of `exp` evaluated."""
    epochs = [rundir.evaluated_epochs(run_dir(checkpoints_dir, exp, s), "oof") for s in fold_splits(k)]
    common = set(epochs[0]).intersection(*epochs[1:])
    if not common:
        raise RunError(f"{exp}: no epoch evaluated on every fold")
    return rundir.epoch_tag(max(common))


def collect(cfg: AblationConfig, meta: dict) -> dict:
    """Every row and claim from what the driver left in `cfg.out_dir` (missing steps are rows with a note)."""
    recipe = ablation_recipe(cfg)
    out = Path(cfg.out_dir)
    timings = json.loads((out / "timings.json").read_text()) if (out / "timings.json").is_file() else {}
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

    if (out / "baselines" / "baselines.json").is_file():
        rows += baseline_rows(out / "baselines" / "baselines.json")
    variants = target_variants(cfg, target_cfg)
    if "target_scratch" in variants:
        add(run_row, "3", "target run from scratch", "run", root, ckpt, "target_scratch", "target", k, answers)
    add(run_row, "4", "target run transferred from the jigsaw pretext (8-view mean)", "run", root, ckpt, target_exp,
        "target", k, answers)
    add(run_row, "4-identity", "  the same, identity view only", "run", root, ckpt, target_exp, "target", k,
        answers, view="identity")
    for mode in cfg.freeze_modes:
        exp = target_exp if mode == target_cfg.freeze else f"target_freeze_{mode}"
        add(run_row, f"5-{mode}", f"transferred, freeze {mode}", "run", root, ckpt, exp, "target", k, answers,
            note="the transferred target run itself" if exp == target_exp else "")
    stacks = stack_dirs(cfg, list(tasks), recipe.test_tags)
    for exp, (_, run_cfg) in tasks.items():
        report = stack_report(stacks[f"alone_{exp}"])
        if report:
            rows += stack_rows(report, {OOF_ROW: (f"6-{exp}", f"{exp} alone (LightGBM on its features)", "stack")},
                               timings.get(f"stack alone_{exp}"), group="task alone")
        if run_cfg.task == "onehot":
            add(run_row, f"6-{exp}-direct", f"{exp}: expected class, 8-view mean", "run", root, ckpt, exp, "onehot",
                k, answers)
    if cfg.soup > 1 and "target_scratch" in variants:
        add(run_row, "7-soup", f"target from scratch: uniform soup of the last {cfg.soup} epochs", "run", root,
            ckpt, "target_scratch", "target", k, answers, tag=f"soup{cfg.soup}")
        add(run_row, "7-last", "target from scratch: last epoch", "run", root, ckpt, "target_scratch", "target", k,
            answers)
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
            rows.append(Row(next(iter(wanted.values()))[0], next(iter(wanted.values()))[1], "stack",
                            note="not measured: its step did not run"))
            continue
        seconds = timings.get(f"stack {name}", 0.0) + (timings.get("pseudo", 0.0) if name == "pseudo" else 0.0)
        rows += stack_rows(report, wanted, seconds)
    rows.sort(key=lambda r: r.id.startswith("12"))  # the tag rows (12, 12b) last, as in the issue's list
    by_id = {r.id: r for r in rows}
    cost = {"pretext": run_seconds(ckpt, pretext_exp(recipe), ["all"]), "pixel_stats": timings.get("stack pixels"),
            "pseudo": timings.get("pseudo")}
    meta = {**meta, "dataroot": root, "answers": answers}
    return write_results(out, meta, rows, claims(by_id, cost), _stack_ref(stacks.get("post")))


def _stack_ref(folder: Path | None) -> dict | None:
    report = stack_report(folder) if folder else None
    return None if report is None else {"out_dir": str(folder), "name": report.name.removesuffix("_report.json")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the ablation table from what `make ablation` ran.")
    add_config_args(parser)
    parser.add_argument("--wall-seconds", type=float, default=float("nan"))
    parser.add_argument("--device", default="")
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args, AblationConfig)
        meta = {"title": f"Ablation ({Path(args.conf).name})", "preset": args.conf,
                "command": " ".join(["python ablation.py --conf", args.conf, *[f"--set {s}" for s in args.overrides]]),
                "device": args.device, "seeds": [ablation_recipe(cfg).seed], "wall_seconds": args.wall_seconds}
        results = collect(cfg, meta)
    except Fold0123Error as err:
        sys.exit(error_line(err))
    print(markdown(results))
    print(f"wrote {Path(cfg.out_dir) / 'RESULTS.md'} and results.json")


if __name__ == "__main__":
    main()
