"""The one place a LightGBM trains (the stack, its tuning, the baselines, the ensemble's pixel member): a
parameter LightGBM refuses is one ConfigError line naming the parameters, and nothing else on the terminal."""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile

import lightgbm as lgb

from fold0123.common.config import ConfigError


@contextlib.contextmanager
def native_stderr_held():
    """What LightGBM's C++ side writes to file descriptor 2 while the block runs (its `[LightGBM] [Fatal]` line
    comes before the Python exception, whatever the verbosity), passed on only when the block succeeds: a refused
    parameter is then the one line of its ConfigError, not two."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            raise
        else:
            os.dup2(saved, 2)
            held.seek(0)
            text = held.read()
            if text:
                os.write(2, text)
        finally:
            os.close(saved)


def train_booster(params: dict, X, y, rounds: int, stop=None, early_stopping_rounds: int = 0) -> lgb.Booster:
    """The one place LightGBM trains: its refusal of a parameter (num_leaves=-5) becomes one ConfigError line
    naming the parameters."""
    try:
        with native_stderr_held():
            return _train(params, X, y, rounds, stop, early_stopping_rounds)
    except lgb.basic.LightGBMError as err:
        shown = {k: v for k, v in params.items() if k not in ("verbosity", "seed", "deterministic")}
        raise ConfigError(f"lgbm.params: LightGBM refused them ({' '.join(str(err).split())}); params "
                          f"{shown}") from None


def _train(params: dict, X, y, rounds: int, stop, early_stopping_rounds: int) -> lgb.Booster:
    dtrain = lgb.Dataset(X, label=y, free_raw_data=False)
    if stop is None:
        return lgb.train(params, dtrain, num_boost_round=rounds)
    dstop = lgb.Dataset(stop[0], label=stop[1], reference=dtrain)
    return lgb.train(params, dtrain, num_boost_round=rounds, valid_sets=[dstop], valid_names=["inner"],
                     callbacks=[lgb.early_stopping(early_stopping_rounds, verbose=False)])
