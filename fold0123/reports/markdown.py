"""What the stacking step leaves in `out_dir` (every file written atomically through common.io):

  {cv:.4f}_{stamp}.csv            the submission: one column `target`, rows in test.csv order (atmaCup #11's
                                  format; the name carries the OOF CV after post-processing, like the original's)
  {cv:.4f}_{stamp}_ids.csv        the same with object_id first, for scoring against answers
  {cv:.4f}_{stamp}_for_{set}.csv  with several test sets (test.csv, test_b.csv, ...): each set's rows alone, the
                                  file a stage of the competition takes
  {cv:.4f}_{stamp}_report.md/json CV per fold and mean ± std for each single task, the stack variants and each
                                  post-processing step; chosen parameters; scores on the answers if given
  {cv:.4f}_{stamp}_cv_per_epoch.png       each task's primary metric per epoch, mean ± std over folds
  {cv:.4f}_{stamp}_importance.png/.csv    the final LightGBM model's feature importance (gain, split)
"""
from __future__ import annotations

import io
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from fold0123.common.io import atomic_path, write_csv, write_json, write_text  # noqa: E402


def timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def stem(cv: float, stamp: str | None = None) -> str:
    """The original's file naming: CV first, so `ls` sorts submissions by score."""
    return f"{cv:.4f}_{stamp or timestamp()}"


def write_submission(out_dir: str | Path, name: str, test_ids, pred, test_sets=None) -> tuple[Path, Path]:
    """`{name}.csv` (target only, test.csv order) and `{name}_ids.csv` (object_id, target); with `test_sets` (each
    row's set, data.layout.read_test) naming more than one set, `{name}_for_{set}.csv` per set too."""
    out_dir = Path(out_dir)
    frame = pd.DataFrame({"object_id": np.asarray(test_ids, str), "target": np.asarray(pred, float)})
    plain, with_ids = out_dir / f"{name}.csv", out_dir / f"{name}_ids.csv"
    write_csv(plain, frame[["target"]])
    write_csv(with_ids, frame)
    write_per_test_set(frame[["target"]], test_sets, out_dir / f"{name}_for_{{}}.csv")
    return plain, with_ids


def write_per_test_set(frame: pd.DataFrame, test_sets, pattern: Path) -> list[Path]:
    """Each test set's rows of `frame` (in order) to `pattern` with `{}` the set's name; nothing for one set."""
    if test_sets is None or len(set(test_sets)) < 2:
        return []
    test_sets = np.asarray(test_sets, str)
    written = []
    for name in dict.fromkeys(test_sets):
        path = pattern.with_name(pattern.name.format(name))
        write_csv(path, frame[test_sets == name])
        written.append(path)
    return written


def save_figure(fig, path: str | Path) -> Path:
    """A matplotlib figure as a PNG at `path` (atomically); the figure is closed."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def cv_per_epoch_figure(metrics: pd.DataFrame, per_row: int | None = None):
    """One panel per experiment: its primary metric per epoch, mean over folds with ± std whiskers (the figure,
    so that the PNG and the HTML report draw the same plot). `per_row` panels per row (default: all in one row;
    the HTML report wraps them so that the labels stay readable at page width)."""
    exps = list(dict.fromkeys(metrics["exp"]))
    cols = max(1, min(per_row or len(exps), len(exps)))
    nrows = max(1, -(-len(exps) // cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(4.5 * cols, 3.4 * nrows), squeeze=False)
    for ax in axes.flat[len(exps):]:
        ax.set_visible(False)
    for ax, exp in zip(axes.flat, exps):
        rows = metrics[metrics["exp"] == exp]
        stats = rows.groupby("epoch")["value"].agg(["mean", "std"]).fillna(0.0)
        ax.errorbar(stats.index, stats["mean"], yerr=stats["std"], marker="o", capsize=4)
        arrow = "↓" if rows["lower_is_better"].iloc[0] else "↑"
        ax.set_title(f"{exp} ({rows['task'].iloc[0]})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{rows['metric'].iloc[0]} {arrow}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(stats.index.min() - 0.5, stats.index.max() + 0.5)  # whole epochs, even for a single one
        ax.grid(alpha=0.3)
    fig.suptitle("CV per epoch: mean ± std over folds", y=1.02)
    fig.tight_layout()
    return fig


def importance_figure(importance: pd.DataFrame, top: int = 30):
    """The `top` features by total gain, largest at the top."""
    rows = importance.nlargest(top, "gain").iloc[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.25 * len(rows) + 1))
    ax.barh(rows["feature"], rows["gain"])
    ax.set_xlabel("total gain")
    ax.set_title("LightGBM feature importance")
    return fig


def markdown_table(frame: pd.DataFrame) -> str:
    """A DataFrame as a markdown table (no tabulate dependency)."""
    frame = frame.reset_index()
    fmt = lambda v: f"{v:.4f}" if isinstance(v, (float, np.floating)) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def plain(value):
    """numpy scalars/arrays and Paths -> JSON-ready Python values (json's `default`)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


TITLES = {
    "cv": "CV (out-of-fold; RMSE unless the metric column says otherwise)",
    "postprocess_grid": "Best post-processing grid points (OOF RMSE)",
    "answers": "Score on the held-out answers (RMSE unless a column names another metric; never used for any choice)",
    "runs": "Runs and weights",
    "oof_scores": "Out-of-fold scores",
    "redistribution": "Label re-distribution: class histograms",
}


def write_report(out_dir: str | Path, name: str, tables: dict[str, pd.DataFrame], facts: dict,
                 notes: list[str]) -> tuple[Path, Path]:
    """`{name}_report.md` (tables as markdown) and `{name}_report.json` (the same data, tables under their keys:
    cv, postprocess_grid, answers, runs, oof_scores, redistribution; see TITLES)."""
    out_dir = Path(out_dir)
    md = io.StringIO()
    md.write(f"# Stacking report {name}\n\n")
    for key, table in tables.items():
        md.write(f"## {TITLES.get(key, key)}\n\n{markdown_table(table)}\n\n")
    facts = json.loads(json.dumps(facts, default=plain))
    md.write("## Facts\n\n```json\n" + json.dumps(facts, indent=2) + "\n```\n")
    if notes:
        md.write("\n## Notes\n\n" + "".join(f"- {n}\n" for n in notes))
    md_path, json_path = out_dir / f"{name}_report.md", out_dir / f"{name}_report.json"
    write_text(md_path, md.getvalue())
    write_json(json_path, {"tables": {t: json.loads(tab.reset_index().to_json(orient="records"))
                                      for t, tab in tables.items()}, "facts": facts, "notes": notes})
    return md_path, json_path
