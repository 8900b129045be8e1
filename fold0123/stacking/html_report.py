"""The report a person looks at: one self-contained HTML file per stack or ablation run.

  stack_html(out_dir, name) -> {out_dir}/{name}_report.html     from the files run_stack leaves in out_dir
  ablation_html(results_json, out_html) -> out_html              from the ablation driver's results.json

Self-contained means one file that can be mailed or opened from any folder: inline CSS, plots as inline base64
PNGs drawn with matplotlib's Agg backend, no scripts and no external URLs. Everything is read back from the files
the stacking step wrote (report json, importance, epoch metrics and OOF CSVs), never from live objects, so a
report can be re-rendered later from an old out_dir. Missing values show as "–". Written atomically (common.io).
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from fold0123.common.io import write_text  # noqa: E402
from fold0123.stacking.report import TITLES, cv_per_epoch_figure, importance_figure  # noqa: E402

MISSING = "–"
VERDICT_COLOURS = {"confirmed": "#c8e6c9", "refuted": "#ffcdd2", "not significant": "#fff3c4",
                   "not measured": "#e0e0e0"}
CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif;margin:24px auto;max-width:1220px;
     color:#222;padding:0 16px;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em} h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.6em 0;font-size:.86em}
th,td{border:1px solid #d0d0d0;padding:3px 8px;vertical-align:top}
th{background:#eef1f5;text-align:left} tr:nth-child(even) td{background:#fafafa}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap} td.name{white-space:pre}
td.long{overflow-wrap:anywhere} div.scroll{overflow-x:auto}
img{max-width:100%;display:block;margin:.6em 0} code,pre{font-size:.85em;background:#f4f4f4}
pre{padding:6px;overflow-x:auto} .note{color:#555} ul.notes li{margin:.2em 0}
""" + "".join(f"td.v-{k.replace(' ', '-')}{{background:{c} !important;font-weight:bold}}"
              for k, c in VERDICT_COLOURS.items())


# ---- small HTML pieces


def _esc(value) -> str:
    return html.escape(str(value))


def _missing(value) -> bool:
    return value is None or (isinstance(value, (float, np.floating)) and math.isnan(value))


def _fmt(value, digits: int = 4) -> str:
    """One cell's text: "–" for null/NaN, floats to `digits` decimals, everything else as str."""
    if _missing(value):
        return MISSING
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (float, np.floating)):
        return f"{value:.{digits}f}"
    return str(value)


def table(frame: pd.DataFrame, cell_class=None, digits: dict | None = None) -> str:
    """A DataFrame (its index included when named) as an HTML table. Numbers right-aligned; the first column keeps
    its leading spaces (the CV table indents the post-processing steps); a table wider than the page scrolls.
    `cell_class(column, value)` may add a CSS class to a cell (the verdicts' colours); `digits` maps a column to
    its decimals (default 4)."""
    if any(n is not None for n in frame.index.names):
        frame = frame.reset_index()
    digits = digits or {}
    head = "".join(f"<th>{_esc(c)}</th>" for c in frame.columns)
    rows = []
    for values in frame.itertuples(index=False):
        cells = []
        for i, (column, value) in enumerate(zip(frame.columns, values)):
            classes = ["name"] if i == 0 else []
            if isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_)):
                classes.append("num")
            elif isinstance(value, str) and len(value) > 40 and i > 0:  # notes with long paths wrap anywhere
                classes.append("long")
            if cell_class and cell_class(column, value):
                classes.append(cell_class(column, value))
            attr = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f"<td{attr}>{_esc(_fmt(value, digits.get(column, 4)))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def image(fig, alt: str) -> str:
    """A matplotlib figure as an inline base64 PNG <img> (the figure is closed)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{data}">'


def section(title: str, *parts: str) -> str:
    return f"<section><h2>{_esc(title)}</h2>{''.join(parts)}</section>"


def paragraph(text: str) -> str:
    return f'<p class="note">{_esc(text)}</p>'


def page(title: str, sections: list[str]) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>'
            f"<style>{CSS}</style></head><body><h1>{_esc(title)}</h1>\n" + "\n".join(sections) + "\n</body></html>\n")


# ---- the stack's sections


def _read_csv(path: Path) -> pd.DataFrame | None:
    """A CSV the stack wrote, or None when it is missing (an older out_dir); "NA" stays a string (DESIGN 6)."""
    if not path.is_file():
        return None
    return pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={"object_id": str})


def _ordered(frame: pd.DataFrame, first: list[str], last: list[str]) -> pd.DataFrame:
    """The report json's records come back with sorted keys: put the columns back in reading order (fold10 after
    fold9)."""
    middle = sorted((c for c in frame.columns if c not in first + last),
                    key=lambda c: (c.rstrip("0123456789"), int(c[len(c.rstrip("0123456789")):] or -1)))
    return frame[[c for c in first if c in frame] + middle + [c for c in last if c in frame]]


def _fold_rmse(frame: pd.DataFrame, column: str) -> dict:
    """RMSE of `column` against the target per fold, their mean ± std and over all rows (the CV table's columns)."""
    err = (frame[column] - frame["target"]) ** 2
    folds = err.groupby(frame["fold"]).mean() ** 0.5
    return {**{f"fold{int(k)}": float(v) for k, v in folds.items()}, "mean": float(folds.mean()),
            "std": float(folds.std(ddof=0)), "oof": float(err.mean() ** 0.5)}


def confusion_figure(target: np.ndarray, pred: np.ndarray):
    """Counts of rounded predictions against the target. The classes are the target's integer range (atmaCup's
    0..3, any other ordinal target too); predictions are rounded and clipped into it, as the submission is."""
    lo, hi = int(np.floor(np.min(target))), int(np.ceil(np.max(target)))
    classes = np.arange(lo, hi + 1)
    truth = np.clip(np.rint(target), lo, hi).astype(int) - lo
    rounded = np.clip(np.rint(pred), lo, hi).astype(int) - lo
    counts = np.zeros((len(classes), len(classes)), int)
    np.add.at(counts, (truth, rounded), 1)
    fig, ax = plt.subplots(figsize=(0.8 * len(classes) + 1.6, 0.8 * len(classes) + 1.2))
    ax.imshow(counts, cmap="Blues")
    for (i, j), n in np.ndenumerate(counts):
        ax.text(j, i, str(n), ha="center", va="center", color="white" if n > counts.max() / 2 else "black")
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("rounded prediction")
    ax.set_ylabel("target")
    ax.set_title(f"accuracy {np.mean(truth == rounded):.3f} ({len(truth)} rows)")
    return fig


def infold_scatter_figure(oof: pd.DataFrame):
    """The two stacks' out-of-fold predictions per row, coloured by the target: points off the diagonal are where
    stacking on in-fold features changes the prediction."""
    fig, ax = plt.subplots(figsize=(5, 4.6))
    for value in sorted(oof["target"].unique()):
        rows = oof[oof["target"] == value]
        ax.scatter(rows["stack_infold"], rows["stack"], s=10, alpha=0.7, label=f"target {_fmt(value, 0)}")
    lims = [min(oof["stack"].min(), oof["stack_infold"].min()), max(oof["stack"].max(), oof["stack_infold"].max())]
    ax.plot(lims, lims, color="grey", lw=1, ls="--")
    ax.set_xlabel("in-fold stack (original)")
    ax.set_ylabel("out-of-fold stack")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def _infold_section(oof: pd.DataFrame | None, answers: pd.DataFrame | None) -> str:
    if oof is None:
        return section("Out-of-fold vs in-fold stack", paragraph("no OOF predictions file"))
    variants = {"out-of-fold stack": "stack", "in-fold stack (original)": "stack_infold"}
    rows = []
    for variant, column in variants.items():
        if column not in oof:
            continue
        row = {"variant": variant, **_fold_rmse(oof, column)}
        if answers is not None:  # the raw stack's score on the answers per test-feature source
            for r in answers[answers["variant"] == variant].itertuples():
                row[f"answers ({r.test_features})"] = r.stack
        rows.append(row)
    parts = [paragraph("RMSE of each stack's out-of-fold predictions (before post-processing) per fold, mean ± std "
                       "over folds, over all rows, and on the held-out answers where given. The in-fold variant "
                       "(the original's) fits on the runs' outputs for their own training rows."),
             table(pd.DataFrame(rows).set_index("variant"))]
    if "stack_infold" in oof:
        parts.append(image(infold_scatter_figure(oof), "out-of-fold vs in-fold stack predictions"))
    else:
        parts.append(paragraph("the in-fold variant was not fitted for this stack (config infold)"))
    return section("Out-of-fold vs in-fold stack", *parts)


def _facts_table(facts: dict) -> str:
    """Scalars as they are; small structures as compact JSON; large ones (the fingerprint) folded away."""
    rows = []
    for key, value in facts.items():
        if isinstance(value, (dict, list)):
            text = json.dumps(value, sort_keys=True)
            cell = (f"<code>{_esc(text)}</code>" if len(text) <= 240 else
                    f"<details><summary>{len(value)} entries</summary><pre>{_esc(json.dumps(value, indent=1))}"
                    f"</pre></details>")
        else:
            cell = f"<code>{_esc(_fmt(value))}</code>"
        rows.append(f"<tr><th>{_esc(key)}</th><td>{cell}</td></tr>")
    return f"<table><tbody>{''.join(rows)}</tbody></table>"


def stack_sections(out_dir: str | Path, name: str) -> list[str]:
    """The stack report's sections (HTML strings), in reading order; the ablation report embeds them too."""
    out_dir = Path(out_dir)
    report = json.loads((out_dir / f"{name}_report.json").read_text())
    tables = {k: pd.DataFrame(v) for k, v in report["tables"].items()}
    tables["cv"] = _ordered(tables["cv"], ["name", "metric"], ["mean", "std", "oof"])
    for key, first, last in (("answers", ["variant", "test_features", "stack"], []),
                             ("postprocess_grid", [], ["rmse"])):
        if key in tables:
            tables[key] = _ordered(tables[key], first, last)
    facts, notes = report.get("facts", {}), report.get("notes", [])
    answers = tables.get("answers")
    sections = [section(TITLES["cv"], paragraph(f"submitted: OOF RMSE {_fmt(facts.get('cv'))} (post-processing "
                                                f"{'kept' if facts.get('postprocess_kept') else 'off'}, tuning "
                                                "scored nested)"),
                        table(tables["cv"].set_index("name")))]

    epochs = _read_csv(out_dir / f"{name}_epoch_metrics.csv")
    if epochs is not None and len(epochs):
        epochs["lower_is_better"] = epochs["lower_is_better"].astype(str).str.lower() == "true"
        sections.append(section("CV per epoch", image(cv_per_epoch_figure(epochs, per_row=2),
                                                                         "CV per epoch per task")))

    importance = _read_csv(out_dir / f"{name}_importance.csv")
    if importance is not None and len(importance):
        sections.append(section("Feature importance (top 30 by gain)",
                                image(importance_figure(importance, 30), "feature importance")))

    oof = _read_csv(out_dir / f"{name}_oof.csv")
    if oof is not None and len(oof):
        sections.append(section("Confusion matrix of the submitted OOF predictions",
                                paragraph("rows: target; columns: the submitted out-of-fold prediction rounded to "
                                          "the nearest class"),
                                image(confusion_figure(oof["target"].to_numpy(float),
                                                       oof["submitted"].to_numpy(float)), "confusion matrix")))
    sections.append(_infold_section(oof, answers))
    if answers is not None:
        sections.append(section(TITLES["answers"], table(answers.set_index(["variant", "test_features"]))))
    if "postprocess_grid" in tables:
        sections.append(section(TITLES["postprocess_grid"], table(tables["postprocess_grid"])))
    sections.append(section("Facts", _facts_table(facts)))
    if notes:
        sections.append(section("Notes", '<ul class="notes">' + "".join(f"<li>{_esc(n)}</li>" for n in notes)
                                + "</ul>"))
    return sections


def stack_html(out_dir: str | Path, name: str) -> Path:
    """Write `{out_dir}/{name}_report.html` from the stack's files in out_dir; returns its path."""
    path = Path(out_dir) / f"{name}_report.html"
    write_text(path, page(f"Stacking report {name}", stack_sections(out_dir, name)))
    return path


# ---- the ablation report


def ablation_figure(rows: pd.DataFrame):
    """cv_mean ± cv_std per row as horizontal bars (coloured by group), the answers score as a red diamond; rows
    without a CV keep their line, empty, so every row of the table has its place."""
    labels = [f"{r.id} {r.name}" for r in rows.itertuples()]
    groups = list(dict.fromkeys(rows["group"]))
    colours = {g: plt.cm.tab10(i % 10) for i, g in enumerate(groups)}
    y = np.arange(len(rows))[::-1]
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(rows) + 1.6))
    mean = pd.to_numeric(rows["cv_mean"], errors="coerce").to_numpy(float)
    std = pd.to_numeric(rows["cv_std"], errors="coerce").fillna(0).to_numpy(float)
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
    ax.set_xlabel(f"score (mean ± std over folds{zoomed})")
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return fig


def _ablation_rows(rows: list[dict]) -> pd.DataFrame:
    """The rows as a table: each fold's score in its own column (rows may have different fold counts)."""
    k = max((len(r.get("folds") or []) for r in rows), default=0)
    out = []
    for r in rows:
        folds = list(r.get("folds") or [])
        out.append({"id": r["id"], "name": r["name"], "group": r["group"],
                    **{f"fold{i}": folds[i] if i < len(folds) else None for i in range(k)},
                    "cv_mean": r.get("cv_mean"), "cv_std": r.get("cv_std"), "oof": r.get("oof"),
                    "answers": r.get("answers"), "seconds": r.get("seconds"), "note": r.get("note", "")})
    return pd.DataFrame(out, dtype=object)


def _claims_table(claims: list[dict], names: dict) -> str:
    label = lambda i: f"{i} ({names[i]})" if i in names else str(i)  # noqa: E731
    frame = pd.DataFrame([{"claim": c["claim"], "rows": " vs ".join(label(i) for i in c.get("rows", [])),
                           "difference": c.get("difference"), "spread": c.get("spread"), "verdict": c["verdict"],
                           "cost_seconds": c.get("cost_seconds"), "note": c.get("note", "")} for c in claims],
                         dtype=object)
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
              "wall-clock": None if _missing(wall) else f"{wall:.0f} s ({wall / 60:.1f} min)"}
    sections = [section("Run", "<table><tbody>" + "".join(
        f"<tr><th>{_esc(k)}</th><td><code>{_esc(_fmt(v))}</code></td></tr>" for k, v in header.items())
        + "</tbody></table>")]
    sections.append(section("Ablation table",
                            paragraph("CV: grouped k-fold RMSE per fold, mean ± std over folds; oof: RMSE over all "
                                      "out-of-fold rows; answers: RMSE on the held-out answers (never used for a "
                                      "choice); – not measured"),
                            table(rows, digits={"seconds": 0})))
    if len(rows):
        sections.append(section("CV per row", image(ablation_figure(rows), "ablation CV per row")))
    claims = results.get("claims") or []
    if claims:
        names = {r["id"]: r["name"] for r in results["rows"]}
        sections.append(section("Claims of the write-up",
                                paragraph("verdict: the difference between the two rows against their fold-to-fold "
                                          "spread; cost: the extra wall-clock seconds"),
                                _claims_table(claims, names)))
    stack = results.get("stack")
    if stack:
        stack_dir = _resolve_stack_dir(stack["out_dir"], results_json)
        if (stack_dir / f"{stack['name']}_report.json").is_file():
            sections.append(f"<h2>Stack {_esc(stack['name'])}</h2>")
            sections += stack_sections(stack_dir, stack["name"])
        else:
            missing = stack_dir / f"{stack['name']}_report.json"
            sections.append(section("Stack", paragraph(f"no stack report {missing}")))
    write_text(out_html, page(results.get("title") or "Ablation", sections))
    return out_html
