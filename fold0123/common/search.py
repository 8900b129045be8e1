"""What a search space (common.schema.SearchRange per key) means to an Optuna trial: one place, so tune.py's
studies and the stack's LightGBM tuning read `low/high/log/step/choices` the same way. The trial is Optuna's
(duck-typed here: common imports no optimiser)."""
from __future__ import annotations

from typing import Any

from fold0123.common.schema import SearchRange


def suggest(trial, space: dict[str, SearchRange]) -> dict[str, Any]:
    """The trial's value of each key (Optuna's suggest_* under the key's own name)."""
    params = {}
    for key, r in space.items():
        if r.choices is not None:
            params[key] = trial.suggest_categorical(key, r.choices)
        elif r.is_int:
            params[key] = trial.suggest_int(key, r.low, r.high, step=r.step or 1, log=r.log)
        else:
            params[key] = trial.suggest_float(key, float(r.low), float(r.high), log=r.log,
                                              step=None if r.step is None else float(r.step))
    return params
