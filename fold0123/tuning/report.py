"""The study's report, written beside it from its storage alone: trials.csv (each trial's values, fold scores,
state and runs), tune.json (the best trial, the winner's re-runs, the parameters' importances, how many trials
were compared), TUNE.md and report.html (the tables, Optuna's optimisation history, parallel coordinates and
importances as figures).

The best trial's CV is optimistic: it was chosen on the same out-of-fold rows it is scored on, among `compared`
trials. Beside it stands the winner trained again with other seeds (`reseeded_cv`), which was not used to choose
anything; the report says how many trials were compared.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import optuna
import pandas as pd
from optuna.trial import TrialState

from fold0123.common.io import write_json, write_text
from fold0123.reports import html
from fold0123.reports.markdown import markdown_table
from fold0123.tuning.study import FINISHED, Study, open_study, retried_from

TRIAL_COLUMNS = ["trial", "state", "value", "folds_run", "fold_scores", "runs", "retry_of", "seconds", "note"]


def trials_frame(optuna_study: optuna.Study) -> pd.DataFrame:
    """One row per trial: its state, its value (the mean of its fold scores), its fold scores, the values of the
    space (`param.{key}`), the experiment its runs are named by, which trial it retried, and why it failed."""
    rows = []
    for t in optuna_study.get_trials(deepcopy=False):
        scores = t.user_attrs.get("fold_scores", [])
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else None
        retry = retried_from(t)
        rows.append({"trial": t.number, "state": t.state.name.lower(), "value": t.value,
                     "folds_run": len(scores), "fold_scores": " ".join(f"{v:.4f}" for v in scores),
                     "runs": t.user_attrs.get("runs", ""), "retry_of": "" if retry is None else retry,
                     "seconds": seconds, "note": t.user_attrs.get("error", ""),
                     **{f"param.{k}": v for k, v in t.params.items()}})
    frame = pd.DataFrame(rows)
    return frame if not frame.empty else pd.DataFrame(columns=TRIAL_COLUMNS)


MIN_FOR_IMPORTANCE = 5  # fANOVA's forest on fewer complete trials ranks noise


def importances(optuna_study: optuna.Study) -> dict[str, float]:
    """Optuna's get_param_importances (fANOVA) over the complete trials; {} when there are too few to say."""
    complete = [t for t in optuna_study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if len(complete) < MIN_FOR_IMPORTANCE or not complete[0].params:
        return {}
    try:
        return {k: float(v) for k, v in optuna.importance.get_param_importances(optuna_study).items()}
    except (RuntimeError, ValueError):  # e.g. every complete trial has the same values
        return {}


def summary(study: Study, optuna_study: optuna.Study, winner: dict | None) -> dict:
    trials = optuna_study.get_trials(deepcopy=False)
    states = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = optuna_study.best_trial if complete else None
    metric = next((t.user_attrs["metric"] for t in trials if "metric" in t.user_attrs), None)
    return {
        "study": study.cfg.exp, "storage": study.cfg.storage or "study.db beside this report (SQLite)",
        "direction": study.direction, "metric": metric,
        "splits": study.splits, "trials_asked": study.cfg.trials, "states": states,
        "compared": sum(t.state in FINISHED for t in trials),
        "best": None if best is None else {"trial": best.number, "cv": best.value, "params": best.params,
                                           "fold_scores": best.user_attrs.get("fold_scores"),
                                           "runs": best.user_attrs.get("runs")},
        "winner": winner, "importances": importances(optuna_study),
    }


def markdown(facts: dict, frame: pd.DataFrame) -> str:
    lines = [f"# Study {facts['study']}", ""]
    best, winner = facts["best"], facts["winner"]
    counted = ", ".join(f"{n} {state}" for state, n in facts["states"].items() if n)
    lines.append(f"{facts['compared']} trials compared ({counted}) on {len(facts['splits'])} folds, "
                 f"{facts['metric']} ({facts['direction']}).")
    if best is not None:
        lines += ["", f"- best trial {best['trial']}: CV {best['cv']:.4f} (optimistic: chosen among "
                      f"{facts['compared']} trials on these rows), values {best['params']}"]
    if winner and winner.get("seeds"):
        per_seed = ", ".join(f"seed {s} {v['cv']:.4f}" for s, v in winner["seeds"].items())
        lines.append(f"- the winner trained again with other seeds: CV {winner['reseeded_cv']:.4f} ({per_seed}); "
                     "not used to choose it")
    if facts["importances"]:
        lines.append("- importances (fANOVA): " + ", ".join(f"{k} {v:.2f}" for k, v in facts["importances"].items()))
    else:
        lines.append(f"- importances: fewer than {MIN_FOR_IMPORTANCE} complete trials, too few to rank the values")
    lines += ["", "## Trials", "", markdown_table(frame.set_index("trial")), ""]
    return "\n".join(lines)


def figures(optuna_study: optuna.Study) -> list[str]:
    """Optuna's matplotlib figures as inline images (none when the study has too few complete trials)."""
    from optuna.visualization import matplotlib as plots

    complete = [t for t in optuna_study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    out = []
    makers = [("optimisation history", plots.plot_optimization_history)]
    if len(complete) >= 2 and complete[0].params:
        makers.append(("parallel coordinates", plots.plot_parallel_coordinate))
    if len(complete) >= MIN_FOR_IMPORTANCE and complete[0].params:
        makers.append(("parameter importances", plots.plot_param_importances))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the matplotlib plots are "experimental"
        for title, make in makers:
            try:
                ax = make(optuna_study)
            except (RuntimeError, ValueError):
                continue
            out.append(html.section(title, html.image(ax.figure, title)))
    return out


def write_report(study: Study, winner: dict | None = None) -> dict:
    """trials.csv, tune.json, TUNE.md and report.html in the study's out_dir; returns tune.json's content. Without
    `winner` the last one written (tune.json) is kept, so a report-only rewrite does not lose it."""
    optuna_study = open_study(study)
    out = study.out_dir
    if winner is None and (out / "tune.json").is_file():
        winner = json.loads((out / "tune.json").read_text()).get("winner")
    frame = trials_frame(optuna_study)
    facts = summary(study, optuna_study, winner)
    write_text(out / "trials.csv", frame.to_csv(index=False))
    write_json(out / "tune.json", facts)
    write_text(out / "TUNE.md", markdown(facts, frame))
    sections = [html.section("summary", *(html.paragraph(line[2:]) for line in markdown(facts, frame).splitlines()
                                          if line.startswith("- ") or line.endswith(").")))]
    sections += [html.section("trials", html.table(frame))] + figures(optuna_study)
    write_text(out / "report.html", html.page(f"Study {study.cfg.exp}", sections))
    return facts


def report_path(study: Study) -> Path:
    return study.out_dir / "TUNE.md"
