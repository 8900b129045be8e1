"""Score a submission against the private answers of a bundled dataset (by default RMSE on the ordinal target;
`--metric accuracy` or `macro_f1` for a classification submission's class indices).

The answers sit outside the dataroot so no training code can read them; data.answers is their one reader and
scorer (strict: every answer id predicted exactly once), shared with the stack, the ensemble and the baselines.

    python -m fold0123.preprocessing.answers SUBMISSION.csv [--answers datasets/emoji_private/answers.csv]
                                            [--metric rmse|accuracy|macro_f1]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from fold0123.common.errors import cli_main
from fold0123.data.answers import score_answers
from fold0123.data.layout import numeric_column, read_csv

DEFAULT_ANSWERS = Path("datasets/emoji_private/answers.csv")


def score_submission(submission_csv: str | Path, answers_csv: str | Path = DEFAULT_ANSWERS,
                     metric: str = "rmse") -> dict:
    """{metric: float, "n": int} of a submission CSV (object_id, target) against answers (object_id, target, ...).

    LayoutError naming the submission and its row: a non-numeric target, or ids that are not the answers' ids
    exactly once (missing, duplicate and unknown ids in one line)."""
    submission_csv = Path(submission_csv)
    submission = read_csv(submission_csv, ("object_id", "target"))
    targets = numeric_column(submission, "target", submission_csv).to_numpy(float)
    return score_answers(submission["object_id"].str.strip().tolist(), targets, answers_csv, source=submission_csv,
                         metric=metric)


@cli_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("submission", help="CSV with columns object_id, target (one row per test object)")
    parser.add_argument("--answers", default=str(DEFAULT_ANSWERS), help=f"default {DEFAULT_ANSWERS}")
    parser.add_argument("--metric", default="rmse", choices=("rmse", "accuracy", "macro_f1"),
                        help="the competition's metric (default rmse; top-5 accuracy needs probabilities)")
    args = parser.parse_args(argv)
    print(json.dumps(score_submission(args.submission, args.answers, args.metric)))


if __name__ == "__main__":
    main()
