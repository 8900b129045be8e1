"""The report a person looks at: one self-contained HTML file per stack (and the page pieces the ablation
report, fold0123.ablation.table, builds its own from).

  stack_html(out_dir, name) -> {out_dir}/{name}_report.html     from the files run_stack leaves in out_dir

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
from fold0123.data.metrics import cv_row, fold_rmse, rmse  # noqa: E402
from fold0123.reports.markdown import TITLES, cv_per_epoch_figure, importance_figure  # noqa: E402

MISSING = "–"
VERDICT_COLOURS = {"confirmed": "#c8e6c9", "refuted": "#ffcdd2", "not significant": "#fff3c4",
                   "not measured": "#e0e0e0", "unstable": "#ffe0b2"}
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


def esc(value) -> str:
    return html.escape(str(value))


def is_missing(value) -> bool:
    return value is None or (isinstance(value, (float, np.floating)) and math.isnan(value))


def fmt(value, digits: int = 4) -> str:
    """One cell's text: "–" for null/NaN, floats to `digits` decimals, everything else as str."""
    if is_missing(value):
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
    head = "".join(f"<th>{esc(c)}</th>" for c in frame.columns)
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
            cells.append(f"<td{attr}>{esc(fmt(value, digits.get(column, 4)))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def image(fig, alt: str) -> str:
    """A matplotlib figure as an inline base64 PNG <img> (the figure is closed)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def section(title: str, *parts: str) -> str:
    return f"<section><h2>{esc(title)}</h2>{''.join(parts)}</section>"


def paragraph(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def page(title: str, sections: list[str]) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1>\n" + "\n".join(sections) + "\n</body></html>\n")


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
        ax.scatter(rows["stack_infold"], rows["stack"], s=10, alpha=0.7, label=f"target {fmt(value, 0)}")
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
        row = {"variant": variant, **cv_row(fold_rmse(oof["target"], oof[column], oof["fold"]),
                                            rmse(oof["target"], oof[column]))}
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


def facts_table(facts: dict) -> str:
    """Scalars as they are; small structures as compact JSON; large ones (the fingerprint) folded away."""
    rows = []
    for key, value in facts.items():
        if isinstance(value, (dict, list)):
            text = json.dumps(value, sort_keys=True)
            cell = (f"<code>{esc(text)}</code>" if len(text) <= 240 else
                    f"<details><summary>{len(value)} entries</summary><pre>{esc(json.dumps(value, indent=1))}"
                    f"</pre></details>")
        else:
            cell = f"<code>{esc(fmt(value))}</code>"
        rows.append(f"<tr><th>{esc(key)}</th><td>{cell}</td></tr>")
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
    sections = [section(TITLES["cv"], paragraph(f"submitted: OOF RMSE {fmt(facts.get('cv'))} (post-processing "
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
    sections.append(section("Facts", facts_table(facts)))
    if notes:
        sections.append(section("Notes", '<ul class="notes">' + "".join(f"<li>{esc(n)}</li>" for n in notes)
                                + "</ul>"))
    return sections


def stack_html(out_dir: str | Path, name: str) -> Path:
    """Write `{out_dir}/{name}_report.html` from the stack's files in out_dir; returns its path."""
    path = Path(out_dir) / f"{name}_report.html"
    write_text(path, page(f"Stacking report {name}", stack_sections(out_dir, name)))
    return path
