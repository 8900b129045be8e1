"""Baselines on the pipeline's own split: what the deep pipeline has to beat, recomputed on the user's data.

    python -m fold0123.baselines --dataroot D [--folds 3] [--answers A] [--out DIR] [--seed 0] [--bag 1]

The rows depend on the competition (competition.yml; none: atmaCup #11). A number (regression, ordinal) is scored
by RMSE of the target, as the stack is:
  constant mean        the training rows' mean target
  pixel statistics     LightGBM on ~320 pixel features per photo (data.pixel_stats; cached by photo fingerprint)
  tags                 LightGBM on the bag of tags (stacking.features.bag_of_tags); only when the test objects have
                       tags in the dataroot: atmaCup #11 gave tags for the train objects only (the row says so)
A classification competition is scored by its metric (accuracy, top-5 accuracy, macro-F1):
  majority class       the training rows' class frequencies as probabilities (accuracy = the majority's share)
  pixel statistics     a multiclass LightGBM on the same pixel features, its class probabilities scored

Same split as the pipeline: fold k trains on exactly the rows of `{K}fold{k}_train.csv` (in that order) and is
scored on `{K}fold{k}_test.csv` (SGKFold.py's files; only their ids are read, the labels come from train.csv).
Test predictions come two ways, both scored by data.answers.score_answers (every answer id exactly once) when
--answers is given: from a model fit on the `all` split ("answers", like the pipeline's `all` runs) and as the
mean of the k fold models ("fold mean"). Nothing else reads the answers.

Honest numbers: every fit is stacking.cv's `cross_validate`, which never early-stops on the rows it is scored on:
each fit (a fold, or `all`) chooses its rounds on an inner part of its OWN training rows (a number: whole groups
until they hold 20 %; classes: one fold of 5, stratified by class, groups whole), then refits on all of them.
Predicted numbers are clipped to the training rows' target range. Per row the report gives the fold scores, their
mean ± std (population std, as the stack's table), the score over every out-of-fold row, the answers' scores and
the wall-clock seconds (features included; cached pixel statistics are cheap). A LightGBM row's predictions are
kept in `{dataroot}_baselines/predictions/` by the digest of what they depend on (predict): the ensemble's pixel
member is the same model, so whichever runs second reads them (its row marked cached, with the fits' seconds).

Outputs, written atomically into --out (default `{dataroot}_baselines` beside the dataroot: the dataroot stays the
layout plus the split files): `baselines.json` (plain data) and `baselines.md` (the table), `class_baselines.*`
for a classification competition. The pixel-statistics cache defaults to the same folder.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from fold0123.common.dataroot import TEST, baselines_dir, split_names, split_paths
from fold0123.common.errors import LayoutError, UsageError, cli_main
from fold0123.common.io import atomic_path, write_json, write_text
from fold0123.common.schema import LgbmOptions
from fold0123.data.answers import read_answers, score_answers
from fold0123.data.competition import Competition, read_competition, score
from fold0123.data.layout import check_unique_ids, read_csv, read_test, read_train
from fold0123.data.pixel_stats import cache_file, dataroot_cache, pixel_features
from fold0123.stacking.cv import CVResult, cross_validate, group_holdout, stratified_holdout
from fold0123.stacking.features import MIN_TAG_OBJECTS, bag_of_tags, tags_skip_reason

INNER_SHARE = 0.2  # a number's fits early-stop on whole groups holding at least this share of their rows
# K classes: small leaves and L2 (some classes have a handful of training rows); one pass over the classes a round.
# 63 bins and half the features per tree: on the 88-class demo, out-of-fold 0.6512 in 265 s against 0.6461 in
# 423 s with 255 bins and 0.8 (python -m bench.class_lgbm; BENCHMARKS.md)
CLASS_PARAMS = {"objective": "multiclass", "metric": "multi_logloss", "learning_rate": 0.1, "num_leaves": 15,
                "min_data_in_leaf": 5, "lambda_l2": 1.0, "feature_fraction": 0.5, "max_bin": 63,
                "bagging_fraction": 0.8, "bagging_freq": 1, "verbose": -1}


def lgbm_options(classes: int = 0, threads: int = 1, bag: int = 1) -> LgbmOptions:
    """The baselines' LightGBM: the stack's settings (common.schema.LgbmOptions) for a number, CLASS_PARAMS with at
    most 2000 rounds (stopping after 50 without gain) for `classes` > 0; `bag` models a fit, on `threads` threads
    (0: every core). One thread is the default: on a few thousand rows it is as fast as several on an idle machine
    and many times faster on a busy one (OpenMP threads spin-wait), and the predictions do not depend on it."""
    if not classes:
        return LgbmOptions(params={"num_threads": threads}, bag=bag)
    return LgbmOptions(params={**CLASS_PARAMS, "num_class": classes, "num_threads": threads}, num_boost_round=2000,
                       early_stopping_rounds=50, bag=bag)


# ---------------------------------------------------------------------------------------------------- the split

@dataclass
class Splits:
    """train.csv's ids, targets (class indices for a classification competition) and groups, test.csv's ids, and
    SGKFold.py's split files as positions in train.csv: the k folds (name, training rows, held-out rows) and
    `all` (name, training rows; it holds out test.csv)."""
    dataroot: Path
    competition: Competition
    ids: list[str]
    y: np.ndarray
    groups: np.ndarray | None
    test_ids: list[str]
    folds: list[tuple[str, np.ndarray, np.ndarray]]
    all: tuple[str, np.ndarray]

    @property
    def classes(self) -> int:
        """K for a classification competition (class rows), 0 for a number (regression and ordinal rows)."""
        return self.competition.n_classes if self.competition.kind == "classification" else 0

    @property
    def metric(self) -> str:
        return self.competition.metric if self.classes else "rmse"


def _ids(path: Path) -> pd.Series:
    """A split file's object_ids (as text), checked unique."""
    frame = read_csv(path, ("object_id",), text=True)
    check_unique_ids(frame, path)
    return frame["object_id"]


def load_splits(dataroot: str | Path, k: int = 3) -> Splits:
    """train.csv, test.csv and the split files, checked: every train row held out by exactly one fold, no fold
    training on its own held-out rows, `all` training on train rows and holding out test.csv."""
    if k < 2:
        raise UsageError(f"--folds {k}: need at least 2 folds")
    dataroot = Path(dataroot)
    competition = read_competition(dataroot)
    group = competition.group_column
    train = read_train(dataroot)  # a class target is checked whole and in 0..K-1 there
    y = train["target"].to_numpy(np.int64 if competition.kind == "classification" else float)
    test = read_test(dataroot, train)
    test_ids = test["object_id"].tolist()
    first_set = set(test.loc[test["test_set"] == TEST, "object_id"])  # what `all` holds out (data.folds)
    position = pd.Series(np.arange(len(train)), index=pd.Index(train["object_id"]))
    fold_of = np.full(len(train), -1)
    splits = []
    for i, name in enumerate(split_names(k)):
        part_path, held_path = split_paths(dataroot, name)
        for path in (part_path, held_path):
            if not path.is_file():
                raise LayoutError(f"{path}: split file not found (run SGKFold.py --dataroot {dataroot} --k {k})")
        part = _ids(part_path)
        held = _ids(held_path).tolist()
        unknown = part[~part.isin(position.index)]
        if len(unknown):
            raise LayoutError(f"{part_path}: object_id {unknown.iloc[0]!r} is not in train.csv")
        if name == "all":
            if set(held) != first_set:
                raise LayoutError(f"{held_path}: holds other rows than test.csv (re-run SGKFold.py)")
            splits.append((name, position.loc[part].to_numpy()))
            continue
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
        splits.append((name, position.loc[part].to_numpy(), rows))
    if (fold_of < 0).any():
        missing = train["object_id"].iloc[int(np.flatnonzero(fold_of < 0)[0])]
        raise LayoutError(f"{dataroot / 'train.csv'}: object {missing!r} is in no {k}fold*_test.csv (re-run SGKFold.py "
                          f"--dataroot {dataroot} --k {k})")
    return Splits(dataroot, competition, train["object_id"].tolist(), y,
                  train[group].to_numpy() if group else None, test_ids, splits[:-1], splits[-1])


# ---------------------------------------------------------------------------------------------------- scoring

def predict(data: Splits, features: pd.DataFrame | None = None, lgbm: LgbmOptions | None = None,
            seed: int = 0, cache: Path | None = None) -> tuple[CVResult, np.ndarray, np.ndarray]:
    """`lgbm` (None: the constant model) on `features` (indexed by object_id), cross-validated on the split files:
    the CVResult of the k folds and `all` (its last fit; oof in train.csv order), the `all` fit's test predictions
    and the mean of the fold models'. The ensemble takes these as its `pixels` member. With `cache` (a folder) a
    LightGBM's predictions are kept there by the digest of everything they depend on, and read back instead of
    fit again: the baselines' pixel row and the ensemble's pixel member are the same model on the same split."""
    def table(ids):
        return np.zeros((len(ids), 0)) if features is None else features.loc[ids].to_numpy(np.float32)

    path = None if cache is None or lgbm is None else Path(cache) / f"{_predict_key(data, features, lgbm, seed)}.npz"
    result = _read_predictions(path) if path is not None else None
    if result is None:
        start = time.perf_counter()
        inner = (stratified_holdout(data.y, data.groups, seed) if data.classes
                 else group_holdout(data.groups, INNER_SHARE, seed))
        cv = [(train, held) for _, train, held in data.folds] + [(data.all[1], [])]
        result = cross_validate(table(data.ids), data.y, cv, {"test": table(data.test_ids)}, lgbm=lgbm, seed=seed,
                                inner=inner, clip=not data.classes, n_classes=data.classes,
                                metric=functools.partial(score, data.metric))
        result.seconds = time.perf_counter() - start
        if path is not None:
            _write_predictions(path, result)
    tests = [t["test"] for t in result.fold_tests]
    return result, tests[-1], np.mean(tests[:-1], axis=0)


PREDICTIONS_VERSION = 1  # in every cache key: raise it when predict's fits change, and older entries are not read


def predictions_cache(dataroot: str | Path) -> Path:
    """predict's cache of a dataroot: beside it, in the baselines' default folder, whoever asks (the baselines
    may write their reports elsewhere, the ensemble's runs live elsewhere)."""
    return default_out(dataroot) / "predictions"


def _predict_key(data: Splits, features: pd.DataFrame | None, lgbm: LgbmOptions, seed: int) -> str:
    """The digest of what predict's fits depend on: the rows, targets, groups and split positions, the features'
    names and values, the LightGBM options (not its threads: the predictions do not depend on them) and the seed."""
    digest = hashlib.sha256()
    options = {**lgbm.model_dump(), "params": {k: v for k, v in lgbm.params.items() if k != "num_threads"}}
    digest.update(json.dumps({"version": PREDICTIONS_VERSION, "seed": seed, "lgbm": options, "metric": data.metric,
                              "classes": data.classes}, sort_keys=True, default=str).encode())
    for text in (data.ids, data.test_ids, [] if data.groups is None else map(str, data.groups),
                 [] if features is None else map(str, features.columns)):
        digest.update("\x1f".join(text).encode() + b"\x1e")
    arrays = [data.y, *(rows for _, *parts in [*data.folds, data.all] for rows in parts)]
    if features is not None:
        arrays.append(features.loc[data.ids + data.test_ids].to_numpy(np.float32))
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes() + b"\x1e")
    return digest.hexdigest()[:32]


def _write_predictions(path: Path, result: CVResult) -> None:
    inner = [np.asarray(rows, np.int64) for rows in result.inner_rows]
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, oof=result.oof, test=result.test["test"],
                 fold_tests=np.stack([t["test"] for t in result.fold_tests]), scores=np.asarray(result.scores, float),
                 best_iterations=np.asarray(result.best_iterations, np.int64), inner_rows=np.concatenate(inner),
                 inner_sizes=np.asarray([len(r) for r in inner], np.int64), seconds=np.float64(result.seconds))


def _read_predictions(path: Path) -> CVResult | None:
    """A cache entry as predict's CVResult (no feature importance, `rounds` None), or None when there is none or it
    cannot be read (then the fits run and write it again)."""
    try:
        with np.load(path, allow_pickle=False) as entry:
            sizes = np.cumsum(entry["inner_sizes"])[:-1]
            return CVResult(oof=entry["oof"], test={"test": entry["test"]},
                            fold_tests=[{"test": t} for t in entry["fold_tests"]], scores=entry["scores"].tolist(),
                            best_iterations=entry["best_iterations"].tolist(), rounds=None, importance=None,
                            inner_rows=np.split(entry["inner_rows"], sizes),
                            seconds=float(entry["seconds"]), cached=True)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


@dataclass
class Row:
    """One row of the table, in `metric`. `status` is 'ok' or 'skipped' (then `reason` says why, numbers NaN)."""
    name: str
    metric: str
    status: str = "ok"
    reason: str = ""
    n_features: int = 0
    fold_scores: list[float] = field(default_factory=list)
    cv_mean: float = float("nan")
    cv_std: float = float("nan")
    oof: float = float("nan")                  # over every train row, each predicted by the fold holding it out
    answers: float | None = None               # the `all` fit's test predictions
    answers_fold_mean: float | None = None     # the mean of the k fold models' test predictions
    answers_n: int = 0
    best_iterations: dict[str, int] = field(default_factory=dict)
    inner_rows: dict[str, list[str]] = field(default_factory=dict, repr=False)  # ids early stopping looked at
    seconds: float = 0.0
    cached: bool = False                       # its predictions were read from predict's cache, not fit now;
    cached_seconds: float = 0.0                # then the seconds their fits took when made (counted in `seconds`)

    def to_json(self) -> dict:
        """Plain data for the json (without inner_rows); NaN (a skipped row's numbers) becomes null."""
        out = asdict(self)
        del out["inner_rows"]
        return {k: None if isinstance(v, float) and not np.isfinite(v) else v for k, v in out.items()}


def score_model(name: str, data: Splits, features: pd.DataFrame | None = None, lgbm: LgbmOptions | None = None,
                answers: str | Path | None = None, seed: int = 0, cache: Path | None = None) -> Row:
    """predict's predictions scored: per fold, out of fold, and both test predictions on `answers` when given."""
    result, test, fold_mean = predict(data, features, lgbm, seed, cache)
    metric = data.metric
    row = Row(name, metric, n_features=0 if features is None else features.shape[1], fold_scores=result.scores,
              cv_mean=float(np.mean(result.scores)), cv_std=float(np.std(result.scores)),
              oof=score(metric, data.y, result.oof), cached=result.cached,
              cached_seconds=result.seconds if result.cached else 0.0)
    if lgbm is not None:
        names = [name for name, _, _ in data.folds] + [data.all[0]]
        row.best_iterations = dict(zip(names, result.best_iterations))
        row.inner_rows = {split: [data.ids[i] for i in rows] for split, rows in zip(names, result.inner_rows)}
    if answers is not None:
        scored = score_answers(data.test_ids, test, answers, source=f"{name} test predictions", metric=metric)
        row.answers, row.answers_n = scored[metric], scored["n"]
        row.answers_fold_mean = score_answers(data.test_ids, fold_mean, answers, metric=metric,
                                              source=f"{name} fold-mean test predictions")[metric]
    return row


def timed(build: Callable[[], Row]) -> Row:
    """`build()`, its wall-clock in the row's `seconds` (features included: what a competitor would pay), with
    its fits' seconds when they were made where predict's cache saved them."""
    start = time.perf_counter()
    row = build()
    row.seconds = time.perf_counter() - start + row.cached_seconds
    return row


# ---------------------------------------------------------------------------------------------------- the report

@dataclass
class Report:
    dataroot: str
    folds: int
    seed: int
    answers: str | None
    out: str
    rows: list[Row]
    facts: dict

    @property
    def stem(self) -> str:
        return "class_baselines" if self.facts.get("classes") else "baselines"

    def to_json(self) -> dict:
        return {**{k: v for k, v in asdict(self).items() if k != "rows"}, "rows": [r.to_json() for r in self.rows]}

    def table(self) -> str:
        """The markdown table (also what the CLI prints)."""
        folds = [f"fold{i}" for i in range(self.folds)]
        lines = [f"| baseline | features | {self.facts['metric']} CV mean ± std | " + " | ".join(folds)
                 + " | OOF | answers | fold mean | seconds |",
                 "| --- | ---: | ---: | " + " | ".join("---:" for _ in folds) + " | ---: | ---: | ---: | ---: |"]
        for r in self.rows:
            if r.status != "ok":
                lines.append(f"| {r.name} | | skipped: {r.reason} |" + " |" * (len(folds) + 4))
                continue
            answers = "| " if r.answers is None else f"{r.answers:.4f} | {r.answers_fold_mean:.4f}"
            lines.append(f"| {r.name} | {r.n_features} | {r.cv_mean:.4f} ± {r.cv_std:.4f} | "
                         + " | ".join(f"{s:.4f}" for s in r.fold_scores)
                         + f" | {r.oof:.4f} | {answers} | {r.seconds:.1f}{' (cached)' * r.cached} |")
        return "\n".join(lines)

    def markdown(self) -> str:
        f = self.facts
        answers = (f"the {f['test_rows']} held-out answers of `{self.answers}`: \"answers\" of the model fit on the "
                   f"`all` split (train.csv -> test.csv, as the pipeline's `all` runs), \"fold mean\" of the mean of "
                   f"the {self.folds} fold models' predictions" if self.answers else "not scored (no --answers)")
        classes = (f"{f['classes']} classes; the majority class holds {100 * f['majority_share']:.1f} % of the train "
                   "rows. " if f.get("classes") else "")
        return "\n".join([
            f"# Baselines on `{self.dataroot}`", "",
            f"{classes}Metric {f['metric']}. CV: each of the {self.folds} folds trains on "
            f"`{self.folds}fold{{k}}_train.csv` and is scored on `{self.folds}fold{{k}}_test.csv` (SGKFold.py's "
            f"files, the pipeline's split); mean ± std over the folds, and the OOF score over all {f['train_rows']} "
            f"train rows. Answers: {answers}.", "", self.table(), "",
            f"LightGBM: {f['lgbm_params']} (bag {f['lgbm_bag']}); each fit early-stops on {f['inner']} of its own "
            "training rows, never the fold it is scored on, then refits on all its training rows for the best "
            "number of rounds. Seconds: wall-clock of the row, its features included (pixel statistics: "
            f"{f.get('pixel_stats', 'n/a')}).", ""])

    def summary(self) -> str:
        return "\n".join([self.table(), f"wrote {self.out}/{self.stem}.json and {self.stem}.md"])


def default_out(dataroot: str | Path) -> Path:
    """Where the reports go without --out: common.dataroot.baselines_dir, beside the dataroot."""
    return baselines_dir(dataroot)


def run_baselines(dataroot: str | Path, folds: int = 3, answers: str | Path | None = None,
                  out: str | Path | None = None, seed: int = 0, pixel_cache_file: str | Path | None = None,
                  workers: int | None = None, threads: int = 1, bag: int = 1) -> Report:
    """Score every baseline of the competition on the dataroot's split files and write the json and md reports
    into `out` (`bag`: LightGBM models averaged per fit, as the stack compared with them averages)."""
    dataroot = Path(dataroot)
    out = Path(out) if out is not None else default_out(dataroot)
    if answers is not None:
        read_answers(answers)  # a missing or malformed answers file stops here, before any fitting
    data = load_splits(dataroot, folds)
    lgbm = lgbm_options(data.classes, threads, bag)
    every_id = data.ids + data.test_ids
    facts = {"train_rows": len(data.ids), "test_rows": len(data.test_ids), "metric": data.metric,
             "fold_sizes": {name: [len(train), len(held)] for name, train, held in data.folds}
             | {data.all[0]: [len(data.all[1]), len(data.test_ids)]},
             "lgbm_params": {**lgbm.params, "seed": seed}, "lgbm_bag": bag,
             "inner": (f"1 of 5 folds (stratified by class, whole {data.competition.group_column or 'row'} groups)"
                       if data.classes else f"whole groups holding >= {INNER_SHARE:.0%}")}
    if data.classes:
        counts = np.bincount(data.y, minlength=data.classes)
        facts |= {"classes": data.classes, "group_column": data.competition.group_column,
                  "majority_class": data.competition.class_names[int(counts.argmax())],
                  "majority_share": float(counts.max() / len(data.y))}
    else:
        facts["tag_min_objects"] = MIN_TAG_OBJECTS
    cache = predictions_cache(dataroot)
    rows = [timed(lambda: score_model("majority class" if data.classes else "constant mean", data, None, None,
                                      answers, seed))]

    def pixel_row() -> Row:
        px = pixel_features(dataroot, every_id, pixel_cache_file or dataroot_cache(dataroot), workers)
        facts["pixel_stats"] = f"{px.computed} computed, {px.cached} from the cache {px.cache}"
        return score_model("pixel statistics LightGBM", data, px.frame, lgbm, answers, seed, cache)

    rows.append(timed(pixel_row))
    reason = None if data.classes else tags_skip_reason(dataroot, data.test_ids)
    if reason:
        rows.append(Row("tags LightGBM", data.metric, status="skipped", reason=reason))
    elif not data.classes:
        rows.append(timed(lambda: score_model("tags LightGBM", data, bag_of_tags(dataroot, every_id), lgbm, answers,
                                              seed, cache)))
    report = Report(str(dataroot), folds, seed, None if answers is None else str(answers), str(out), rows, facts)
    write_json(out / f"{report.stem}.json", report.to_json())
    write_text(out / f"{report.stem}.md", report.markdown())
    return report


@cli_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataroot", required=True, help="dataroot (any layout's, competition.yml says what it "
                                                          "predicts), with SGKFold.py's splits")
    parser.add_argument("--folds", type=int, default=3, help="K of the {K}fold{k} split files (default 3)")
    parser.add_argument("--answers", default=None, help="held-out answers CSV (object_id, target) to score the "
                                                        "test predictions on (default: not scored)")
    parser.add_argument("--out", default=None, help="where the json and md reports go (default: "
                                                    "{dataroot}_baselines beside the dataroot)")
    parser.add_argument("--seed", type=int, default=0, help="LightGBM and inner-split seed")
    parser.add_argument("--threads", type=int, default=1,
                        help="LightGBM threads (default 1: fastest on small data, and on a busy machine; 0: every "
                             "core); the predictions do not depend on it")
    parser.add_argument("--bag", type=int, default=1,
                        help="LightGBM models averaged per fit, seeded --seed, --seed + 1, ... (default 1; the "
                             "recipe passes its stack's lgbm.bag, so that both are averaged alike)")
    parser.add_argument("--pixel-cache", default=None,
                        help=f"pixel statistics cache CSV (default: DATAROOT_baselines/{cache_file('.').name}, "
                             "whatever --out)")
    args = parser.parse_args(argv)
    if args.threads < 0:
        raise UsageError(f"--threads {args.threads}: expected 0 (every core) or more")
    if args.bag < 1:
        raise UsageError(f"--bag {args.bag}: expected 1 or more")
    print(run_baselines(args.dataroot, args.folds, args.answers, args.out, args.seed, args.pixel_cache,
                        threads=args.threads, bag=args.bag).summary())


if __name__ == "__main__":
    main()
