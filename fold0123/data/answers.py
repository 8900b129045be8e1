"""Scoring predictions against held-out answers: the one reader of answers.csv and the one scorer.

The answers (object_id, target, ...) sit outside the dataroot so that no training code reads them. The submission
scorer (`python -m fold0123.preprocessing.answers`) and the stacking report both score through `score_answers`,
which is strict because a partial or padded prediction set would otherwise score on an easier subset: every
answer id predicted exactly once, no unknown id, every prediction a finite number. All id problems are named in
one line, so a user fixes them in one go.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fold0123.common.errors import LayoutError
from fold0123.data.layout import numeric_column, read_csv
from fold0123.data.competition import score


def read_answers(answers_csv: str | Path) -> pd.Series:
    """answers.csv's `target` as floats, indexed by object_id; LayoutError naming a duplicate or bad row."""
    path = Path(answers_csv)
    frame = read_csv(path, ("object_id", "target"))
    ids = frame["object_id"].str.strip()
    duplicated = np.flatnonzero(ids.duplicated().to_numpy())
    if len(duplicated):
        row = int(duplicated[0])
        raise LayoutError(f"{path}: row {row + 2}: duplicate object_id {ids.iloc[row]!r}")
    return pd.Series(numeric_column(frame, "target", path).to_numpy(float), index=pd.Index(ids, name="object_id"))


def id_problems(ids: list[str], answer_ids: list[str], answers_csv: str | Path, first_row: int = 2) -> list[str]:
    """What keeps `ids` from being the answers' ids exactly once: missing, duplicated and unknown ids.

    `first_row` is the row number of ids[0] in messages (2: a CSV file's first data row)."""
    predicted, known = set(ids), set(answer_ids)
    problems = []
    missing = [i for i in answer_ids if i not in predicted]
    if missing:
        problems.append(f"missing {len(missing)} of {len(answer_ids)} object_ids of {answers_csv} "
                        f"(first {missing[0]!r})")
    duplicated = np.flatnonzero(pd.Index(ids).duplicated())
    if len(duplicated):
        row = int(duplicated[0])
        more = f" ({len(duplicated)} duplicate rows in all)" if len(duplicated) > 1 else ""
        problems.append(f"row {row + first_row}: duplicate object_id {ids[row]!r}{more}")
    extra = [i for i in dict.fromkeys(ids) if i not in known]
    if extra:
        problems.append(f"{len(extra)} object_ids not in {answers_csv} (first {extra[0]!r})")
    return problems


def bootstrap_se(metric: str, y_true, predictions, draws: int = 1000, seed: int = 0) -> float:
    """The standard error of the metric over the answered objects: its spread over `draws` resamples of the rows
    with replacement. A few hundred test objects measure a submission only to about this much (0.024 RMSE on the
    emoji demo's 758), so a difference of that size between two submissions on the answers says little."""
    y_true, predictions = np.asarray(y_true), np.asarray(predictions)
    rng = np.random.default_rng(seed)
    resampled = (rng.integers(0, len(y_true), len(y_true)) for _ in range(draws))  # one draw's rows at a time
    return float(np.std([score(metric, y_true[rows], predictions[rows]) for rows in resampled], ddof=1))


def score_answers(ids, predictions, answers_csv: str | Path, source: str | Path = "test predictions",
                  first_row: int = 2, metric: str = "rmse", se_draws: int = 0) -> dict:
    """{metric: float, "n": int} of `predictions` (one number or label per id, or `[n, K]` class probabilities,
    in the order of `ids`) against answers.csv, by the competition's metric (data.competition.score); with
    `se_draws` > 0 also "se", its bootstrap standard error over the objects (`bootstrap_se`).

    LayoutError starting with `source` when the ids are not the answers' ids exactly once (every problem in one
    line) or a prediction is not a finite number."""
    ids = [str(i) for i in ids]
    predictions = np.asarray(predictions, dtype=np.float64)
    predictions = predictions.reshape(len(predictions), -1) if predictions.ndim > 1 else predictions.reshape(-1)
    if predictions.ndim == 2 and predictions.shape[1] == 1:
        predictions = predictions[:, 0]
    if len(predictions) != len(ids):
        raise ValueError(f"{source}: {len(predictions)} predictions for {len(ids)} object_ids")
    truth = read_answers(answers_csv)
    problems = id_problems(ids, list(truth.index), answers_csv, first_row)
    if problems:
        raise LayoutError(f"{source}: " + "; ".join(problems))
    bad = np.flatnonzero(~np.isfinite(predictions).reshape(len(predictions), -1).all(1))
    if len(bad):
        raise LayoutError(f"{source}: row {int(bad[0]) + first_row}: prediction {predictions[bad[0]]} for object_id "
                          f"{ids[bad[0]]!r} is not a finite number")
    if not ids:
        return {metric: float("nan"), "n": 0}
    y_true = truth.loc[ids].to_numpy()
    scored = {metric: score(metric, y_true, predictions), "n": len(ids)}
    return scored | ({"se": bootstrap_se(metric, y_true, predictions, se_draws)} if se_draws > 0 else {})
