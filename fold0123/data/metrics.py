"""The competition metric, once: numpy only, so the task table (torch side) and the stacking room (no torch)
score with the same function."""
from __future__ import annotations

import numpy as np


def rmse(y_true, y_pred) -> float:
    """Root mean squared error in float64 (atmaCup #11 scores the ordinal target as a number)."""
    error = np.asarray(y_true, np.float64) - np.asarray(y_pred, np.float64)
    return float(np.sqrt(np.mean(error ** 2)))
