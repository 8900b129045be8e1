"""Write the cross-validation folds of a dataroot: `python SGKFold.py --dataroot D --k 3 --batch-size 64 --seed 0`.

Stratified on `target`, grouped by `art_series_id` (scikit-learn's StratifiedGroupKFold), checked fold by fold, and
batch-aligned by moving whole series where that is possible. See data/folds.py.
"""
from __future__ import annotations

import argparse
import sys

from data.folds import write_folds
from data.layout import LayoutError


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataroot", required=True, help="folder in the atmaCup #11 layout")
    parser.add_argument("--k", type=int, default=3, help="number of folds")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="move whole series so each fold's train size is a multiple of this (0: do not move)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        report = write_folds(args.dataroot, args.k, args.batch_size or None, args.seed)
    except (LayoutError, ValueError) as err:
        sys.exit("error: " + " ".join(str(err).split()))
    print(report.summary())


if __name__ == "__main__":
    main()
