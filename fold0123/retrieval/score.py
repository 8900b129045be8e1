"""Score MUGE-format predictions against answers: text->image Recall@1/5/10 and their mean (MR), as the MUGE
scorer (Chinese-CLIP's eval/evaluation.py) does, reading exactly the format retrieval.predict writes.

    python -m fold0123.retrieval.score PRED.jsonl --answers datasets/emoji_muge_private/test_texts.jsonl

The answers are a `{split}_texts.jsonl` with image_ids. Every answered text must have a prediction (as in the
original); predictions for texts the answers do not hold are an error too, since they mean the wrong split.
Printed as percentages, like the MUGE leaderboard; `score()` returns fractions.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from fold0123.common.errors import LayoutError, cli_main
from fold0123.data.muge import read_texts
from fold0123.data.recall import KS, recall_at
from fold0123.retrieval.predictions import read_predictions


def score(predictions: str | Path, answers: str | Path) -> dict[str, float]:
    truth = {t.text_id: set(t.image_ids) for t in read_texts(answers, need_images=True)}
    predicted = read_predictions(predictions)
    missing = [t for t in truth if t not in predicted]
    if missing:
        raise LayoutError(f"{predictions}: no prediction for {len(missing)} answered text(s), "
                          f"e.g. text_id {missing[0]}")
    extra = [t for t in predicted if t not in truth]
    if extra:
        raise LayoutError(f"{predictions}: text_id {extra[0]} is not in {answers} (predictions of another split?)")
    ranks = []
    for text_id, positives in truth.items():
        hits = [rank for rank, image_id in enumerate(predicted[text_id], 1) if image_id in positives]
        ranks.append(hits[0] if hits else np.inf)
    out = recall_at(np.asarray(ranks, dtype=float), KS)
    out["n"] = len(truth)
    return out


@cli_main
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("predictions", help="a {split}_predictions.jsonl")
    parser.add_argument("--answers", required=True, help="the split's texts JSONL with image_ids")
    args = parser.parse_args(argv)
    result = score(args.predictions, args.answers)
    print(f"{args.predictions}: {result['n']} texts  R@1 {100 * result['r1']:.2f}  R@5 {100 * result['r5']:.2f}  "
          f"R@10 {100 * result['r10']:.2f}  MR {100 * result['mr']:.2f}")


if __name__ == "__main__":
    main()
