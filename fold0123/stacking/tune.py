"""The level-2 LightGBM's parameters, chosen per fit by an Optuna study on that fit's training rows alone
(`lgbm.tune` in the stack config; stacking.cv.cross_validate calls it).

A trial's parameters are scored by LightGBM's own validation metric at its early-stopped round on each of the
fit's inner splits (for the stack: each of the other folds held out in turn), averaged; the best trial's
parameters, and its mean early-stopped round, are the fit's. The rows the fit is scored on are never among the
inner splits, so the CV of a tuned stack stays out of fold (nested): changing the held-out fold's labels cannot
move its predictions (tests/test_stacking.py). The final model, trained on every row for the test tables, is
tuned the same way on every row's folds.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import optuna

from fold0123.common.config import ConfigError
from fold0123.common.schema import LgbmOptions
from fold0123.common.search import suggest
from fold0123.stacking.booster import train_booster

# LightGBM metrics where lower is better (the early-stopped score is minimised)
LOWER_IS_BETTER = {"rmse", "l2", "mse", "mean_squared_error", "regression", "l1", "mae", "mean_absolute_error",
                   "huber", "fair", "poisson", "quantile", "mape", "gamma", "gamma_deviance", "tweedie",
                   "binary_logloss", "binary", "binary_error", "multi_logloss", "multiclass", "softmax",
                   "multi_error", "cross_entropy", "xentropy", "cross_entropy_lambda", "xentlambda", "kullback_leibler"}


@dataclass(frozen=True)
class Tuned:
    params: dict    # the LightGBM parameters the fit trains with (the config's, the best trial's on top)
    rounds: int     # the best trial's early-stopped round, averaged over the inner splits
    score: float    # its mean inner score
    trials: int


def metric_name(params: dict) -> str:
    name = params.get("metric", "l2")
    name = name[0] if isinstance(name, (list, tuple)) else name
    if name not in LOWER_IS_BETTER:
        raise ConfigError(f"lgbm.params.metric {name!r}: lgbm.tune minimises LightGBM's validation metric, so it "
                          f"needs one where lower is better (rmse, l2, l1, multi_logloss, ...)")
    return name


def _inner_score(params: dict, X, y, stops, lgbm: LgbmOptions, take) -> tuple[float, int]:
    """Mean early-stopped validation score and round over the inner (fit, stop) splits."""
    scores, rounds = [], []
    for fit, stop in stops:
        booster = train_booster(params, take(X, fit), y[fit], lgbm.num_boost_round, (take(X, stop), y[stop]),
                                lgbm.early_stopping_rounds)
        scores.append(next(iter(booster.best_score["inner"].values())))
        rounds.append(booster.best_iteration or lgbm.num_boost_round)
    return float(np.mean(scores)), max(1, int(round(np.mean(rounds))))


def tune_lgbm(X, y, stops, lgbm: LgbmOptions, seed: int, take) -> Tuned:
    """The best of `lgbm.tune.trials` TPE trials (sampler seeded `seed`) on the fit's inner splits `stops`."""
    metric_name(lgbm.params)
    found: dict[int, tuple[dict, int]] = {}

    def objective(trial) -> float:
        params = {**lgbm.params, **suggest(trial, lgbm.tune.space), "seed": seed}
        score, rounds = _inner_score(params, X, y, stops, lgbm, take)  # a refused value: ConfigError naming it
        found[trial.number] = (params, rounds)
        return score

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a refused value stops the stack with its own one line
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        study.optimize(objective, n_trials=lgbm.tune.trials)
    params, rounds = found[study.best_trial.number]
    return Tuned({k: v for k, v in params.items() if k != "seed"}, rounds, float(study.best_value),
                 lgbm.tune.trials)
