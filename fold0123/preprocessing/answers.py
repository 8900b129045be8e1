"""Score a submission against the private answers of the bundled dataset (RMSE on the ordinal target).

The answers sit outside the dataroot so no training code can read them; this scorer is the only reader.

    python -m fold0123.preprocessing.answers SUBMISSION.csv [--answers datasets/emoji_private/answers.csv]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from fold0123.data.layout import LayoutError, read_csv

DEFAULT_ANSWERS = Path("datasets/emoji_private/answers.csv")


def _ids(frame, path: Path) -> list[str]:
    ids = frame["object_id"].str.strip()
    dup = ids.duplicated().to_numpy()
    if dup.any():
        row = int(np.flatnonzero(dup)[0])
        raise LayoutError(f"{path}: row {row + 2}: duplicate object_id {ids.iloc[row]!r}")
    return ids.tolist()


def _targets(frame, path: Path) -> np.ndarray:
    import pandas as pd

    values = pd.to_numeric(frame["target"].astype(str).str.strip(), errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise LayoutError(f"{path}: row {row + 2}: column 'target': non-numeric or missing value "
                          f"{frame['target'].iloc[row]!r}")
    return values


def score_submission(submission_csv: str | Path, answers_csv: str | Path = DEFAULT_ANSWERS) -> dict:
    """{"rmse": float, "n": int} of a submission (object_id, target) against answers (object_id, target, ...).

    Every answer id must be predicted exactly once and no unknown id may appear: a partial submission would
    otherwise score on an easier subset."""
    submission_csv, answers_csv = Path(submission_csv), Path(answers_csv)
    answers = read_csv(answers_csv, ("object_id", "target"))
    submission = read_csv(submission_csv, ("object_id", "target"))
    truth = dict(zip(_ids(answers, answers_csv), _targets(answers, answers_csv)))
    predicted = dict(zip(_ids(submission, submission_csv), _targets(submission, submission_csv)))
    missing = [i for i in truth if i not in predicted]
    if missing:
        raise LayoutError(f"{submission_csv}: missing {len(missing)} of {len(truth)} object_ids of {answers_csv} "
                          f"(first {missing[0]!r})")
    extra = [i for i in predicted if i not in truth]
    if extra:
        raise LayoutError(f"{submission_csv}: {len(extra)} object_ids not in {answers_csv} (first {extra[0]!r})")
    ids = list(truth)
    error = np.array([predicted[i] for i in ids]) - np.array([truth[i] for i in ids])
    return {"rmse": float(np.sqrt(np.mean(error ** 2))) if ids else float("nan"), "n": len(ids)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("submission", help="CSV with columns object_id, target (one row per test object)")
    parser.add_argument("--answers", default=str(DEFAULT_ANSWERS), help=f"default {DEFAULT_ANSWERS}")
    args = parser.parse_args(argv)
    try:
        print(json.dumps(score_submission(args.submission, args.answers)))
    except (LayoutError, ValueError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
