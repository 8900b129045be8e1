"""Score a submission against the private answers of a bundled dataset (by default RMSE on the ordinal target;
`--metric accuracy` or `macro_f1` for a classification submission's class indices).

The answers sit outside the dataroot so no training code can read them; data.answers is their one reader and
scorer (strict: every answer id predicted exactly once), shared with the stack, the ensemble and the baselines.

    python -m fold0123.preprocessing.answers SUBMISSION.csv [--answers datasets/emoji_private/answers.csv]
                                            [--metric rmse|accuracy|macro_f1]
    python -m fold0123.preprocessing.answers --latest-in OUT_DIR --dataroot DATAROOT [--answers ANSWERS.csv]

The second form is the recipe's last stage: the newest submission in the stack's `out_dir` (the stack's for an
ordinal or regression competition, the ensemble's for a classification one), scored by the dataroot's metric
when the answers exist, and where it and its report lie.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from fold0123.common.errors import cli_main
from fold0123.data.answers import score_answers
from fold0123.data.competition import read_competition
from fold0123.data.layout import numeric_column, read_csv

DEFAULT_ANSWERS = Path("datasets/emoji_private/answers.csv")


def score_submission(submission_csv: str | Path, answers_csv: str | Path = DEFAULT_ANSWERS,
                     metric: str = "rmse") -> dict:
    """{metric: float, "n": int, "se": float} of a submission CSV (object_id, target) against answers (object_id,
    target, ...); "se" is the score's bootstrap standard error over the answered objects (1000 resamples).

    LayoutError naming the submission and its row: a non-numeric target, or ids that are not the answers' ids
    exactly once (missing, duplicate and unknown ids in one line)."""
    submission_csv = Path(submission_csv)
    submission = read_csv(submission_csv, ("object_id", "target"))
    targets = numeric_column(submission, "target", submission_csv).to_numpy(float)
    return score_answers(submission["object_id"].str.strip().tolist(), targets, answers_csv, source=submission_csv,
                         metric=metric, se_draws=1000)


def newest_submission(out_dir: str | Path, classification: bool = False) -> tuple[Path, Path] | None:
    """(the latest submission, the file to score it by): the stack's `{cv}_{time}.csv` and its `_ids.csv` copy,
    or a classification competition's `ensemble_{time}_submission.csv` (object_id, target, label) twice."""
    if classification:
        found = sorted(Path(out_dir).glob("ensemble_*_submission.csv"), key=lambda p: p.stat().st_mtime)
        return (found[-1], found[-1]) if found else None
    copies = sorted(Path(out_dir).glob("*_ids.csv"), key=lambda p: p.stat().st_mtime)
    return (copies[-1].with_name(copies[-1].name.replace("_ids.csv", ".csv")), copies[-1]) if copies else None


def report_latest(out_dir: str | Path, dataroot: str | Path, answers_csv: str | Path | None) -> list[str]:
    """The recipe's closing lines: the newest submission's score on the answers (by the competition's metric;
    top-5 accuracy scores the submitted labels as accuracy) when they exist, the submission and its report."""
    competition = read_competition(dataroot)
    found = newest_submission(out_dir, competition.kind == "classification")
    if found is None:
        return ["no submission found"]
    submission, scored = found
    lines = []
    if answers_csv and Path(answers_csv).is_file():
        metric = competition.metric if competition.metric != "top5_accuracy" else "accuracy"
        score = score_submission(scored, answers_csv, metric)
        name = "RMSE" if metric == "rmse" else metric
        lines.append(f"submission {name} on the held-out answers: {score[metric]:.4f} ± {score['se']:.4f} "
                     f"(s.e. over its {score['n']} test objects, bootstrap)")
    stem = submission.stem.removesuffix("_submission")  # "0.9006_20261124-072435": with_suffix would cut at ".9"
    html, markdown = (submission.with_name(f"{stem}_report.{ext}") for ext in ("html", "md"))
    return lines + [f"submission   {submission}",
                    f"report       {html if html.is_file() else markdown} (the markdown, json and plots beside it)"]


@cli_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("submission", nargs="?",
                        help="CSV with columns object_id, target (one row per test object)")
    parser.add_argument("--latest-in", help="score the newest submission in this folder (the stack's out_dir)")
    parser.add_argument("--dataroot", help="with --latest-in: the dataroot whose competition spec says the metric")
    parser.add_argument("--answers", help=f"the answers CSV (a SUBMISSION is scored against {DEFAULT_ANSWERS} "
                        "by default; --latest-in scores only when given)")
    parser.add_argument("--metric", default="rmse", choices=("rmse", "accuracy", "macro_f1"),
                        help="the competition's metric (default rmse; top-5 accuracy needs probabilities)")
    args = parser.parse_args(argv)
    if args.latest_in:
        if args.submission or not args.dataroot:
            parser.error("--latest-in takes --dataroot and no SUBMISSION")
        print("\n".join(report_latest(args.latest_in, args.dataroot, args.answers)))
    elif args.submission:
        print(json.dumps(score_submission(args.submission, args.answers or DEFAULT_ANSWERS, args.metric)))
    else:
        parser.error("give a SUBMISSION.csv or --latest-in OUT_DIR")


if __name__ == "__main__":
    main()
