"""The competition spec (`competition.yml` beside the data): the one place that knows what is predicted, how many
classes there are and how a prediction is scored, so that nothing in data/, models/, engine/ or stacking/ names
atmaCup's four classes or its RMSE.

A dataroot without the file is atmaCup #11 (ordinal target 0..3, RMSE, folds grouped by `art_series_id`), so the
bundled emoji dataroots and every earlier run keep their meaning. Adapters for other layouts
(preprocessing/adapters.py) write the file with the classes they found.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fold0123.common.competition_spec import CLASS_KINDS, SPEC_FILE, read_spec, spec_path  # noqa: F401 (re-exported)
from fold0123.common.errors import LayoutError
from fold0123.common.schema import CompetitionSpec
from fold0123.data.metrics import expected_class, macro_f1, rmse, top_k_accuracy

# metric -> (lower is better, needs class probabilities rather than one number per row)
METRICS = {"rmse": (True, False), "accuracy": (False, False), "top5_accuracy": (False, True),
           "macro_f1": (False, False)}


@dataclass(frozen=True)
class Competition:
    """A resolved spec: the file's keys plus the class count (from `classes` or, without them, from train.csv)."""
    spec: CompetitionSpec
    n_classes: int  # 0 for regression

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def metric(self) -> str:
        return self.spec.metric

    @property
    def group_column(self) -> str | None:
        return self.spec.group_column

    @property
    def has_classes(self) -> bool:
        return self.spec.kind in CLASS_KINDS

    @property
    def lower_is_better(self) -> bool:
        return METRICS[self.spec.metric][0]

    @property
    def class_names(self) -> list[str]:
        return list(self.spec.classes) if self.spec.classes else [str(c) for c in range(self.n_classes)]

    @property
    def train_columns(self) -> tuple[str, ...]:
        """The columns train.csv and every split's train part must have (atmaCup: object_id, sorting_date,
        art_series_id, target, in its order)."""
        group = (self.spec.group_column,) if self.spec.group_column else ()
        return ("object_id", *self.spec.columns, *group, "target")

    @property
    def text_columns(self) -> tuple[str, ...]:
        """Columns read as strings whatever they look like: the group ids."""
        return (self.spec.group_column,) if self.spec.group_column else ()

    @property
    def target_range(self) -> tuple[float, float] | None:
        """Where a predicted number may lie (ordinal: 0..K-1, what atmaCup's post-processing clips to)."""
        return (0.0, float(self.n_classes - 1)) if self.has_classes else None


ATMACUP = Competition(CompetitionSpec(), 4)


def read_competition(dataroot: str | Path | None) -> Competition:
    """The resolved spec of a dataroot (cached per path and file state: it is asked for per task and per part);
    atmaCup #11's for no dataroot (metrics computed without one, as tests and notebooks do)."""
    if dataroot is None:
        return ATMACUP
    path = spec_path(dataroot)
    stamp = path.stat().st_mtime_ns if path.is_file() else None
    train = Path(dataroot) / "train.csv"
    train_stamp = train.stat().st_mtime_ns if train.is_file() else None
    return _resolve(str(Path(dataroot)), stamp, train_stamp)


@functools.lru_cache(maxsize=16)
def _resolve(dataroot: str, stamp, train_stamp) -> Competition:
    spec = read_spec(dataroot)
    if spec.kind not in CLASS_KINDS:
        return Competition(spec, 0)
    if spec.classes:
        return Competition(spec, len(spec.classes))
    import pandas as pd  # only a class spec without names needs train.csv to count them
    path = Path(dataroot) / "train.csv"
    if not path.is_file():
        raise LayoutError(f"{spec_path(dataroot)}: key 'classes' is not set and {path} is missing to count them")
    try:
        header = pd.read_csv(path, nrows=0, dtype=str, keep_default_na=False).columns
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise LayoutError(f"{path}: not a readable CSV ({str(err).splitlines()[0]})") from None
    if "target" not in header:
        raise LayoutError(f"{spec_path(dataroot)}: key 'classes' is not set and {path} has no 'target' column to "
                          f"count them from (has {', '.join(map(str, header))}): set 'classes' in the spec")
    try:
        labels = pd.to_numeric(pd.read_csv(path, usecols=["target"], dtype=str, keep_default_na=False)["target"],
                               errors="coerce")
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise LayoutError(f"{path}: not a readable CSV ({str(err).splitlines()[0]})") from None
    if labels.isna().any() or len(labels) == 0:
        raise LayoutError(f"{path}: column 'target': cannot count classes (empty or non-numeric labels)")
    return Competition(spec, int(labels.max()) + 1)


# ---------------------------------------------------------------------------------------------------- scoring

def to_labels(predictions: np.ndarray) -> np.ndarray:
    """Class indices from `[n, K]` probabilities (argmax) or `[n]` numbers (rounded, as an ordinal guess)."""
    predictions = np.asarray(predictions, np.float64)
    if predictions.ndim == 2:
        return predictions.argmax(1)
    return np.rint(predictions).astype(np.int64)


def score(metric: str, y_true, predictions) -> float:
    """The competition metric of `predictions` (`[n]` numbers or labels, or `[n, K]` class probabilities)."""
    y_true = np.asarray(y_true, np.float64)
    predictions = np.asarray(predictions, np.float64)
    if metric == "rmse":
        return rmse(y_true, expected_class(predictions) if predictions.ndim == 2 else predictions)
    if metric == "accuracy":
        from sklearn.metrics import accuracy_score
        return float(accuracy_score(np.rint(y_true), to_labels(predictions))) if len(y_true) else float("nan")
    if metric == "top5_accuracy":
        if predictions.ndim != 2:
            raise ValueError("top5_accuracy needs class probabilities [n, K]")
        return top_k_accuracy(np.rint(y_true).astype(int), predictions, 5)
    if metric == "macro_f1":
        return macro_f1(np.rint(y_true).astype(int), to_labels(predictions))
    raise ValueError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
