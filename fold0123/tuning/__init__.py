"""Tuning across folds (tune.py): Optuna studies whose trials are fold0123 runs, pruned fold by fold, resumable,
reported with an estimate of the winner that was not used to choose it."""
