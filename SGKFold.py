"""Write the cross-validation folds of a dataroot: `python SGKFold.py --dataroot D --k 3 --batch-size 64 --seed 0`.

Stratified on `target`, grouped by `art_series_id` (scikit-learn's StratifiedGroupKFold), checked fold by fold, and
batch-aligned by moving whole series: every fold's train size a multiple of the batch size when the total allows it,
otherwise every fold but one (the summary marks each fold and the note says which fold is not aligned and why). See
fold0123/data/folds.py and fold0123/data/fold_alignment.py.
"""
from __future__ import annotations

import argparse

from fold0123.common.errors import cli_main
from fold0123.data.folds import write_folds


@cli_main
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataroot", required=True, help="folder in the atmaCup #11 layout")
    parser.add_argument("--k", type=int, default=3, help="number of folds")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="move whole series so each fold's train size is a multiple of this (all k folds, or "
                             "k-1 when (k-1)*n is not a multiple; 0: do not move)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(write_folds(args.dataroot, args.k, args.batch_size or None, args.seed).summary())


if __name__ == "__main__":
    main()
