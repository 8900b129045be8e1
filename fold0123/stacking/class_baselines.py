"""Classification baselines on the pipeline's own split: what a K-class model has to beat, on the user's data.

    python -m fold0123.stacking.class_baselines --dataroot D [--answers A] [--folds 3] [--out DIR] [--seed 0]

Rows, each scored by the competition's metric (competition.yml, data.competition.score: accuracy, top-5 accuracy,
macro-F1, or RMSE of the expected class for an ordinal target):
  majority class       the training rows' class frequencies as probabilities: its top class is the majority class
                       (accuracy = the majority's share of the scored rows), its top 5 the five most frequent
  pixel statistics     a multiclass LightGBM on ~320 pixel features per photo (stacking.pixel_stats, cached by photo
                       fingerprint), its class probabilities scored

The regression baselines (stacking.baselines) answer the same question for a number; this module is their K-class
counterpart and follows their rules. Same split: fold k trains on exactly the ids of `{K}fold{k}_train.csv` and is
scored on `{K}fold{k}_test.csv` (SGKFold.py's files); only the ids are read from the split files, the labels come
from train.csv, so any split file that names its rows works. Honest numbers: each LightGBM fit (a fold, or `all`)
chooses its number of rounds by early stopping on an inner ~20 % of its OWN training rows (one fold of a 5-fold
split stratified by class, grouped by the spec's group column when it has one), never on the fold it predicts,
then refits on all its training rows for that many rounds. Test predictions come from the `all` fit (the
"answers" column) and as the mean of the k fold models' probabilities ("fold mean"), both scored on --answers
(object_id, target = class index; every answer id predicted exactly once), which nothing else reads.

Outputs, written atomically into --out (default `{dataroot}_baselines`, beside the regression baselines'):
`class_baselines.json` (plain data) and `class_baselines.md` (the table). No torch here.
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import lightgbm as lgb
import numpy as np
import pandas as pd

from fold0123.common.dataroot import split_names, split_paths
from fold0123.common.errors import LayoutError, UsageError
from fold0123.common.io import write_json, write_text
from fold0123.data.answers import id_problems, read_answers
from fold0123.data.competition import Competition, read_competition, score
from fold0123.data.layout import check_unique_ids, read_csv
from fold0123.stacking import pixel_stats
from fold0123.stacking.baselines import baselines_main, default_out, timed

INNER_FOLDS = 5            # the inner early-stopping split holds out one of 5 folds: ~20 % of a fit's rows
NUM_BOOST_ROUND = 2000
EARLY_STOPPING_ROUNDS = 50
# small leaves and L2: some classes have a handful of training rows; one pass over the classes per round
CLASS_PARAMS = {"objective": "multiclass", "metric": "multi_logloss", "learning_rate": 0.1, "num_leaves": 15,
                "min_data_in_leaf": 5, "lambda_l2": 1.0, "feature_fraction": 0.8, "bagging_fraction": 0.8,
                "bagging_freq": 1, "verbose": -1}


# ---------------------------------------------------------------------------------------------------- the data

@dataclass
class ClassSplit:
    name: str
    train: np.ndarray      # positions in ClassData.y of the training rows
    held_out: list[str]    # ids: train rows for a fold split, test.csv's rows for `all`


@dataclass
class ClassData:
    """train.csv's ids, class indices and groups; test.csv's ids; the k fold splits and `all` as row positions."""
    dataroot: Path
    competition: Competition
    ids: list[str]
    y: np.ndarray
    groups: np.ndarray | None
    test_ids: list[str]
    folds: list[ClassSplit]
    all: ClassSplit
    fold_of: np.ndarray


def _ids(path: Path, columns: tuple[str, ...] = ("object_id",)) -> pd.DataFrame:
    """A dataroot CSV with every column as text (group ids such as `007` stay themselves), its ids checked."""
    frame = read_csv(path, columns, text=True)
    check_unique_ids(frame, path)
    return frame


def class_labels(values: pd.Series, n_classes: int, path: Path, column: str = "target") -> np.ndarray:
    """`values` as class indices 0..K-1; LayoutError naming the row of the first that is not one."""
    numbers = pd.to_numeric(values.astype(str).str.strip(), errors="coerce").to_numpy(float)
    bad = ~np.isfinite(numbers) | (numbers % 1 != 0) | (numbers < 0) | (numbers >= n_classes)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise LayoutError(f"{path}: row {row + 2}: column {column!r}: {values.iloc[row]!r} is not a class index "
                          f"0..{n_classes - 1}")
    return numbers.astype(np.int64)


def load_class_splits(dataroot: str | Path, k: int = 3) -> ClassData:
    """train.csv, test.csv and the split files, checked: every train row held out by exactly one fold, no fold
    training on its own held-out rows, `all` training on train rows and holding out test.csv."""
    if k < 2:
        raise UsageError(f"--folds {k}: need at least 2 folds")
    dataroot = Path(dataroot)
    competition = read_competition(dataroot)
    if not competition.has_classes:
        raise UsageError(f"{dataroot}: kind {competition.kind} has no classes; its baselines are "
                         f"python -m fold0123.stacking.baselines")
    group = competition.group_column
    train_path, test_path = dataroot / "train.csv", dataroot / "test.csv"
    train = _ids(train_path, ("object_id", "target") + ((group,) if group else ()))
    y = class_labels(train["target"], competition.n_classes, train_path)
    groups = train[group].to_numpy() if group else None
    test_ids = _ids(test_path)["object_id"].tolist()
    if not test_ids:
        raise LayoutError(f"{test_path}: no rows (only a header): there is nothing to predict")
    position = pd.Series(np.arange(len(train)), index=pd.Index(train["object_id"]))
    both = position.index.intersection(test_ids)
    if len(both):
        raise LayoutError(f"{test_path}: object_id {both[0]!r} is also in train.csv")
    fold_of = np.full(len(train), -1)
    splits = []
    for i, name in enumerate(split_names(k)):
        part_path, held_path = split_paths(dataroot, name)
        for path in (part_path, held_path):
            if not path.is_file():
                raise LayoutError(f"{path}: split file not found (run SGKFold.py --dataroot {dataroot} --k {k})")
        part = _ids(part_path)["object_id"]
        held = _ids(held_path)["object_id"].tolist()
        unknown = part[~part.isin(position.index)]
        if len(unknown):
            raise LayoutError(f"{part_path}: object_id {unknown.iloc[0]!r} is not in train.csv")
        if name == "all":
            if set(held) != set(test_ids):
                raise LayoutError(f"{held_path}: holds other rows than test.csv (re-run SGKFold.py)")
        else:
            unknown = [h for h in held if h not in position.index]
            if unknown:
                raise LayoutError(f"{held_path}: object_id {unknown[0]!r} is not in train.csv")
            if part.isin(held).any():
                raise LayoutError(f"{part_path}: holds rows of its own held-out part {held_path.name}")
            rows = position.loc[held].to_numpy()
            if (fold_of[rows] >= 0).any():
                raise LayoutError(f"{held_path}: object_id {held[int(np.flatnonzero(fold_of[rows] >= 0)[0])]!r} is "
                                  f"held out by another fold too")
            fold_of[rows] = i
        splits.append(ClassSplit(name, position.loc[part].to_numpy(), held))
    if (fold_of < 0).any():
        raise LayoutError(f"{train_path}: object {train['object_id'].iloc[int(np.flatnonzero(fold_of < 0)[0])]!r} is "
                          f"in no {k}fold*_test.csv (re-run SGKFold.py --dataroot {dataroot} --k {k})")
    return ClassData(dataroot, competition, train["object_id"].tolist(), y, groups, test_ids, splits[:-1],
                     splits[-1], fold_of)


def inner_split(y: np.ndarray, groups: np.ndarray | None, seed: int = 0) -> np.ndarray:
    """Boolean mask of a fit's inner early-stopping rows: one fold of a 5-fold split of its own training rows,
    stratified by class and keeping groups whole (each row its own group without a group column)."""
    from sklearn.model_selection import StratifiedGroupKFold

    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    if len(np.unique(groups)) < INNER_FOLDS:
        raise UsageError(f"early stopping needs at least {INNER_FOLDS} groups in a fit's training rows, got "
                         f"{len(np.unique(groups))}")
    splitter = StratifiedGroupKFold(n_splits=INNER_FOLDS, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class has fewer members than n_splits"
        _, held = next(splitter.split(np.zeros(len(y)), y, groups))
    mask = np.zeros(len(y), bool)
    mask[held] = True
    return mask


# ---------------------------------------------------------------------------------------------------- the models

@dataclass
class ClassFit:
    """Class probabilities `[n, K]` for the rows asked about, and how the model was fit."""
    probabilities: np.ndarray
    best_iteration: int | None = None
    inner_rows: np.ndarray | None = None  # positions (in ClassData.y) of the inner early-stopping rows


# model(data, training row positions, features of the training rows, features of the rows to predict, n, seed)
ClassModel = Callable[[ClassData, np.ndarray, "np.ndarray | None", "np.ndarray | None", int, int], ClassFit]


def class_prior(data: ClassData, rows: np.ndarray, X_train, X_predict, n_predict: int, seed: int = 0) -> ClassFit:
    """The training rows' class frequencies for every row: the majority class (ties: the lower index) on top."""
    prior = np.bincount(data.y[rows], minlength=data.competition.n_classes) / len(rows)
    return ClassFit(np.tile(prior, (n_predict, 1)))


def lgbm_classifier(data: ClassData, rows: np.ndarray, X_train: np.ndarray, X_predict: np.ndarray, n_predict: int,
                    seed: int = 0, threads: int = 1, bag: int = 1) -> ClassFit:
    """Early-stop a multiclass LightGBM on an inner split of `rows`, refit on all of them for the best round count,
    predict `X_predict`'s class probabilities (`bag` > 1: the mean of that many, seeded seed, seed + 1, ...).
    Sees the training rows' labels only."""
    y = data.y[rows]
    inner = inner_split(y, None if data.groups is None else data.groups[rows], seed)
    probabilities, rounds = [], []
    for member in range(bag):
        params = {**CLASS_PARAMS, "num_class": data.competition.n_classes, "seed": seed + member,
                  "num_threads": threads}
        dtrain = lgb.Dataset(X_train[~inner], label=y[~inner], free_raw_data=False)
        dvalid = lgb.Dataset(X_train[inner], label=y[inner], reference=dtrain)
        stopped = lgb.train(params, dtrain, num_boost_round=NUM_BOOST_ROUND, valid_sets=[dvalid],
                            valid_names=["inner"], callbacks=[lgb.early_stopping(EARLY_STOPPING_ROUNDS,
                                                                                 verbose=False)])
        rounds.append(int(stopped.best_iteration or NUM_BOOST_ROUND))
        final = lgb.train(params, lgb.Dataset(X_train, label=y), num_boost_round=rounds[-1])
        probabilities.append(final.predict(X_predict))
    return ClassFit(np.mean(probabilities, axis=0), int(round(np.mean(rounds))), rows[inner])


# ---------------------------------------------------------------------------------------------------- scoring

@dataclass
class ClassBaselineRow:
    """One row of the table, in the competition's metric."""
    name: str
    metric: str
    n_features: int = 0
    fold_scores: list[float] = field(default_factory=list)
    cv_mean: float = float("nan")
    cv_std: float = float("nan")
    oof: float = float("nan")                  # over every train row, each predicted by the fold holding it out
    answers: float | None = None               # the `all` fit's test predictions
    answers_fold_mean: float | None = None     # the mean of the k fold models' test probabilities
    answers_n: int = 0
    best_iterations: dict[str, int] = field(default_factory=dict)
    inner_rows: dict[str, list[str]] = field(default_factory=dict, repr=False)  # ids early stopping looked at
    seconds: float = 0.0

    def to_json(self) -> dict:
        out = asdict(self)
        del out["inner_rows"]
        return {k: None if isinstance(v, float) and not np.isfinite(v) else v for k, v in out.items()}


def answer_labels(answers: str | Path, ids: list[str], n_classes: int) -> np.ndarray:
    """The answers' class indices in the order of `ids`; LayoutError when the ids are not the answers' ids exactly
    once or an answer is not a class index."""
    truth = read_answers(answers)
    problems = id_problems(ids, list(truth.index), answers)
    if problems:
        raise LayoutError("test predictions: " + "; ".join(problems))
    return class_labels(truth.loc[ids].reset_index(drop=True), n_classes, Path(answers))


@dataclass
class ClassPredictions:
    """A model's class probabilities on the pipeline's folds: `oof` [n_train, K] (each row from the fold model
    that did not train on it, in ClassData.ids order), `test` [n_test, K] from the `all` model, `test_fold_mean`
    the fold models' mean, the per-fold scores, and every fit by split name."""
    oof: np.ndarray
    test: np.ndarray
    test_fold_mean: np.ndarray
    fold_scores: list[float]
    fits: dict[str, ClassFit]


def predict_model(data: ClassData, model: ClassModel, features: pd.DataFrame | None = None,
                  seed: int = 0) -> ClassPredictions:
    """Fit `model` on each fold's training rows, predict that fold's held-out rows and test.csv, then fit it on
    `all` to predict test.csv. The ensemble takes these as a member (`ensemble.pixel_stats`)."""
    comp = data.competition
    X = None if features is None else features.loc[data.ids].to_numpy(np.float32)
    X_test = None if features is None else features.loc[data.test_ids].to_numpy(np.float32)
    position = pd.Series(np.arange(len(data.ids)), index=pd.Index(data.ids))
    oof = np.full((len(data.ids), comp.n_classes), np.nan)
    fold_tests, fold_scores, fits = [], [], {}
    for split in data.folds:
        held = position.loc[split.held_out].to_numpy()
        predict = None if X is None else np.concatenate([X[held], X_test])
        fit = fits[split.name] = model(data, split.train, None if X is None else X[split.train], predict,
                                       len(held) + len(data.test_ids), seed)
        oof[held] = fit.probabilities[:len(held)]
        fold_tests.append(fit.probabilities[len(held):])
        fold_scores.append(score(comp.metric, data.y[held], fit.probabilities[:len(held)]))
    fit = fits[data.all.name] = model(data, data.all.train, None if X is None else X[data.all.train], X_test,
                                      len(data.test_ids), seed)
    return ClassPredictions(oof, fit.probabilities, np.mean(fold_tests, axis=0), fold_scores, fits)


def score_model(name: str, data: ClassData, model: ClassModel, features: pd.DataFrame | None = None,
                answers: str | Path | None = None, seed: int = 0) -> ClassBaselineRow:
    """predict_model's predictions scored: per fold and out of fold, and both test predictions on `answers` when
    given."""
    comp = data.competition
    row = ClassBaselineRow(name, comp.metric, n_features=0 if features is None else features.shape[1])
    predicted = predict_model(data, model, features, seed)
    for split_name, fit in predicted.fits.items():
        _record(row, split_name, fit, data)
    row.fold_scores = predicted.fold_scores
    row.cv_mean, row.cv_std = float(np.mean(row.fold_scores)), float(np.std(row.fold_scores))
    row.oof = score(comp.metric, data.y, predicted.oof)
    if answers is not None:
        truth = answer_labels(answers, data.test_ids, comp.n_classes)
        row.answers = score(comp.metric, truth, predicted.test)
        row.answers_fold_mean = score(comp.metric, truth, predicted.test_fold_mean)
        row.answers_n = len(truth)
    return row


def _record(row: ClassBaselineRow, split: str, fit: ClassFit, data: ClassData) -> None:
    if fit.best_iteration is not None:
        row.best_iterations[split] = fit.best_iteration
        row.inner_rows[split] = [data.ids[i] for i in fit.inner_rows]


# ---------------------------------------------------------------------------------------------------- the report

@dataclass
class ClassBaselineReport:
    dataroot: str
    folds: int
    seed: int
    answers: str | None
    out: str
    rows: list[ClassBaselineRow]
    facts: dict

    def to_json(self) -> dict:
        return {**{k: v for k, v in asdict(self).items() if k != "rows"}, "rows": [r.to_json() for r in self.rows]}

    def table(self) -> str:
        folds = [f"fold{i}" for i in range(self.folds)]
        metric = self.rows[0].metric if self.rows else ""
        lines = [f"| baseline | features | {metric} CV mean ± std | " + " | ".join(folds)
                 + " | OOF | answers | fold mean | seconds |",
                 "| --- | ---: | ---: | " + " | ".join("---:" for _ in folds) + " | ---: | ---: | ---: | ---: |"]
        for r in self.rows:
            answers = ("| " if r.answers is None else f"{r.answers:.4f} | {r.answers_fold_mean:.4f}")
            lines.append(f"| {r.name} | {r.n_features} | {r.cv_mean:.4f} ± {r.cv_std:.4f} | "
                         + " | ".join(f"{s:.4f}" for s in r.fold_scores)
                         + f" | {r.oof:.4f} | {answers} | {r.seconds:.1f} |")
        return "\n".join(lines)

    def markdown(self) -> str:
        f = self.facts
        answers = (f"the {f['test_rows']} held-out answers of `{self.answers}`: \"answers\" of the model fit on the "
                   f"`all` split, \"fold mean\" of the mean of the {self.folds} fold models' probabilities"
                   if self.answers else "not scored (no --answers)")
        return "\n".join([
            f"# Classification baselines on `{self.dataroot}`", "",
            f"{f['classes']} classes, metric {f['metric']}. CV: each of the {self.folds} folds trains on "
            f"`{self.folds}fold{{k}}_train.csv` and is scored on `{self.folds}fold{{k}}_test.csv`; mean ± std over "
            f"the folds, and the OOF score over all {f['train_rows']} train rows. Answers: {answers}. The majority "
            f"class holds {100 * f['majority_share']:.1f} % of the train rows.", "", self.table(), "",
            f"LightGBM: multiclass, {CLASS_PARAMS} (seed {self.seed}); each fit early-stops on an inner fold of "
            f"its own training rows (1 of {INNER_FOLDS}, stratified by class, whole groups), never the fold it is "
            f"scored on, then refits on all its training rows for the best number of rounds. Pixel statistics: "
            f"{f.get('pixel_stats', 'n/a')}.", ""])

    def summary(self) -> str:
        return "\n".join([self.table(), f"wrote {self.out}/class_baselines.json and class_baselines.md"])


def run_class_baselines(dataroot: str | Path, folds: int = 3, answers: str | Path | None = None,
                        out: str | Path | None = None, seed: int = 0, pixel_cache: str | Path | None = None,
                        workers: int | None = None, threads: int = 1, bag: int = 1) -> ClassBaselineReport:
    """Score the majority class and the pixel-statistics LightGBM on the dataroot's split files, and write
    class_baselines.json and class_baselines.md into `out`."""
    dataroot = Path(dataroot)
    out = Path(out) if out is not None else default_out(dataroot)
    if answers is not None:
        read_answers(answers)  # a missing or malformed answers file stops here, before any fitting
    data = load_class_splits(dataroot, folds)
    comp = data.competition
    counts = np.bincount(data.y, minlength=comp.n_classes)
    facts = {"train_rows": len(data.ids), "test_rows": len(data.test_ids), "classes": comp.n_classes,
             "metric": comp.metric, "group_column": comp.group_column,
             "majority_class": comp.class_names[int(counts.argmax())],
             "majority_share": float(counts.max() / len(data.y)),
             "fold_sizes": {s.name: [len(s.train), len(s.held_out)] for s in [*data.folds, data.all]}}
    rows = [timed(lambda: score_model("majority class", data, class_prior, None, answers, seed))]

    def pixel_row() -> ClassBaselineRow:
        px = pixel_stats.pixel_features(dataroot, data.ids + data.test_ids,
                                        pixel_cache or pixel_stats.cache_file(out), workers)
        facts["pixel_stats"] = f"{px.computed} computed, {px.cached} from the cache {px.cache}"
        model = lambda *a: lgbm_classifier(*a, threads=threads, bag=bag)  # noqa: E731
        return score_model("pixel statistics LightGBM", data, model, px.frame, answers, seed)

    rows.append(timed(pixel_row))
    report = ClassBaselineReport(str(dataroot), folds, seed, None if answers is None else str(answers), str(out),
                                 rows, facts)
    write_json(out / "class_baselines.json", report.to_json())
    write_text(out / "class_baselines.md", report.markdown())
    return report


def main(argv: list[str] | None = None) -> None:
    baselines_main(argv, __doc__.splitlines()[0], run_class_baselines,
                   "dataroot with a competition.yml of a class kind")


if __name__ == "__main__":
    main()
