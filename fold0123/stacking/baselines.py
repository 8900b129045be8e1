"""Baselines on the pipeline's own split: what the deep pipeline has to beat, recomputed on the user's data.

    python -m fold0123.stacking.baselines --dataroot D [--folds 3] [--answers A] [--out DIR] [--seed 0]

Rows (each scored with the same metric, RMSE on the target, as the pipeline's stack):
  constant mean        the training fold's mean target
  pixel statistics     LightGBM on ~320 pixel features per photo (stacking.pixel_stats; cached by photo fingerprint)
  tags                 LightGBM on the bag of tags (materials + techniques, spelled as word2vec.py spells them);
                       only when the test objects have tags in the dataroot: atmaCup #11 gave tags for the train
                       objects only, so a tag model could not predict its test set (the row says so, skipped)

Same split, same answers, same scorer as the pipeline: fold k trains on exactly `{K}fold{k}_train.csv` and is
scored on `{K}fold{k}_test.csv` (SGKFold.py's files, read by data.layout.read_split). Test predictions come two
ways, both scored by data.answers.score_answers (strict: every answer id exactly once) when --answers is given:
from a model fit on the `all` split (train.csv -> test.csv), like the pipeline's `all` runs and its stack's
default `test_features: all` (the table's "answers" column), and as the mean of the k fold models (the "fold
mean" column; on the emoji data the two differ by about the seed-to-seed spread). Nothing else reads the answers.

Honest numbers: a LightGBM never early-stops on the rows it is scored on. Each fit (a fold, or `all`) holds out an
inner 20 % of its own training rows, whole art_series_id groups, to find the number of rounds, then refits on all
its training rows for that many rounds. Predictions are clipped to the training rows' target range. Per row the
report gives the fold RMSEs, their mean ± std (population std, as the stack's table), the OOF RMSE over every train
row, the RMSE on the answers and the wall-clock seconds (features included; cached pixel statistics are cheap).

Outputs, both written atomically into --out (default: `{dataroot}_baselines` beside the dataroot, the way the
emoji answers live in `{dataroot}_private`: the dataroot stays the layout plus the split files, and stacking
writes nothing into it but pseudo-label splits): `baselines.json` (everything, plain data) and `baselines.md`
(the table). The pixel-statistics cache defaults to the same folder (`pixel_stats_v2.csv`).
"""
from __future__ import annotations

import argparse
import functools
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import lightgbm as lgb
import numpy as np
import pandas as pd

from fold0123.common.errors import Fold0123Error, LayoutError, UsageError, error_line
from fold0123.common.io import write_json, write_text
from fold0123.common.schema import LGBM_PARAMS, LgbmOptions
from fold0123.data.answers import read_answers, score_answers
from fold0123.data.layout import read_split, read_test, read_train, split_names
from fold0123.data.metrics import rmse
from fold0123.data.tags import read_tokens
from fold0123.stacking import pixel_stats

INNER_SHARE = 0.2          # share of a fit's training rows (whole series) that early stopping looks at
MIN_TAG_OBJECTS = 2        # a tag becomes a column when at least this many objects carry it


# ---------------------------------------------------------------------------------------------------- the split

@dataclass
class Split:
    """One of the pipeline's splits: its training rows (object_id, art_series_id, target) and held-out rows."""
    name: str
    train: pd.DataFrame
    held_out: pd.DataFrame


@dataclass
class BaselineData:
    """The k fold splits and `all`, with train.csv's ids and targets and which fold holds each train row out."""
    dataroot: Path
    folds: list[Split]
    all: Split
    train_ids: pd.Index
    y: np.ndarray
    fold_of: np.ndarray


def load_splits(dataroot: str | Path, k: int = 3) -> BaselineData:
    """The split files SGKFold.py wrote; LayoutError when they are missing or their held-out parts do not cover
    train.csv exactly once (out-of-fold scores need every train row held out by one fold)."""
    if k < 2:
        raise UsageError(f"--folds {k}: need at least 2 folds")
    dataroot = Path(dataroot)
    train = read_train(dataroot)
    read_test(dataroot, train)
    names = split_names(k)
    splits = [Split(name, *read_split(dataroot, name)) for name in names]
    train_ids = pd.Index(train["object_id"])
    fold_of = pd.Series(-1, index=train_ids)
    for i, split in enumerate(splits[:-1]):
        held = pd.Index(split.held_out["object_id"])
        if "target" not in split.held_out.columns:
            raise LayoutError(f"{dataroot}/{split.name}_test.csv: no 'target' column (a fold's held-out rows are "
                              f"labelled train rows; re-run SGKFold.py)")
        unknown = held.difference(train_ids)
        if len(unknown):
            raise LayoutError(f"{dataroot}/{split.name}_test.csv: object_id {unknown[0]!r} is not in train.csv")
        if (fold_of.loc[held] >= 0).any():
            raise LayoutError(f"{dataroot}/{split.name}_test.csv: object_id {held[fold_of.loc[held] >= 0][0]!r} is "
                              f"held out by another fold too")
        if held.isin(split.train["object_id"]).any():
            raise LayoutError(f"{dataroot}/{split.name}_train.csv: holds rows of its own held-out part")
        fold_of.loc[held] = i
    if (fold_of < 0).any():
        raise LayoutError(f"{dataroot}: train.csv object {fold_of.index[fold_of < 0][0]!r} is in no "
                          f"{k}fold*_test.csv (re-run SGKFold.py --dataroot {dataroot} --k {k})")
    return BaselineData(dataroot, splits[:-1], splits[-1], train_ids, train["target"].to_numpy(float),
                        fold_of.to_numpy())


def inner_split(groups, share: float = INNER_SHARE, seed: int = 0) -> np.ndarray:
    """Boolean mask of the inner validation rows: whole groups, drawn in a seeded random order until they hold at
    least `share` of the rows, never all of them. It is computed from a fit's own training rows only."""
    groups = np.asarray(groups)
    unique = pd.unique(groups)
    if len(unique) < 2:
        raise UsageError(f"early stopping needs at least 2 art_series_id groups in the training rows, got "
                         f"{len(unique)}")
    order = np.random.default_rng(seed).permutation(len(unique))
    sizes = pd.Series(groups).value_counts()
    chosen, rows = [], 0
    for g in unique[order][:-1]:
        if rows >= share * len(groups):
            break
        chosen.append(g)
        rows += sizes[g]
    return np.isin(groups, chosen)


# ---------------------------------------------------------------------------------------------------- the models

@dataclass
class Fit:
    """One model's predictions for the rows it was asked about, and how it was fit."""
    predictions: np.ndarray
    best_iteration: int | None = None
    inner_valid_ids: list[str] = field(default_factory=list)


# model(training rows, their features, the features of the rows to predict, how many rows to predict, seed)
Model = Callable[[pd.DataFrame, "pd.DataFrame | None", "pd.DataFrame | None", int, int], Fit]


def constant_mean(train: pd.DataFrame, X_train, X_predict, n_predict: int, seed: int = 0) -> Fit:
    return Fit(np.full(n_predict, train["target"].mean()))


def lgbm_params(seed: int, threads: int = 1) -> dict:
    """The stack's LightGBM parameters (common.schema.LGBM_PARAMS), seeded, on `threads` threads (0: LightGBM's
    default, every core). One thread is the default here: on a few thousand rows it is as fast as several on an
    idle machine and many times faster on a busy one (OpenMP threads spin-wait: 1.9 s against 46 s for the emoji
    pixel row on 2 loaded cores), and the predictions do not depend on it."""
    return {**LGBM_PARAMS, "seed": seed, "num_threads": threads}


def lgbm(train: pd.DataFrame, X_train: pd.DataFrame, X_predict: pd.DataFrame, n_predict: int, seed: int = 0,
         threads: int = 1, options: LgbmOptions = LgbmOptions()) -> Fit:
    """Early-stop on an inner group split of `train`'s rows, refit on all of them for the best round count, and
    predict `X_predict`, clipped to the training target range; `options.bag` > 1 averages that many models
    seeded seed, seed + 1, ... (on the same inner split), as the stack's `lgbm.bag` does. Sees only the training
    rows and the rows to predict, never their labels."""
    y = train["target"].to_numpy(float)
    inner = inner_split(train["art_series_id"].to_numpy(), seed=seed)
    X, names = X_train.to_numpy(np.float32), list(X_train.columns)
    predictions, rounds = [], []
    for member in range(options.bag):
        params = lgbm_params(seed + member, threads)
        dtrain = lgb.Dataset(X[~inner], label=y[~inner], feature_name=names, free_raw_data=False)
        dvalid = lgb.Dataset(X[inner], label=y[inner], reference=dtrain)
        stopped = lgb.train(params, dtrain, num_boost_round=options.num_boost_round, valid_sets=[dvalid],
                            valid_names=["inner"], callbacks=[lgb.early_stopping(options.early_stopping_rounds,
                                                                                 verbose=False)])
        rounds.append(int(stopped.best_iteration or options.num_boost_round))
        final = lgb.train(params, lgb.Dataset(X, label=y, feature_name=names), num_boost_round=rounds[-1])
        predictions.append(final.predict(X_predict.to_numpy(np.float32)))
    return Fit(np.clip(np.mean(predictions, axis=0), y.min(), y.max()), int(round(np.mean(rounds))),
               train["object_id"][inner].tolist())


# ---------------------------------------------------------------------------------------------------- features

def bag_of_tags(dataroot: str | Path, object_ids) -> pd.DataFrame:
    """One 0/1 column per tag token carried by at least MIN_TAG_OBJECTS objects, plus each object's number of
    materials and techniques; indexed by object_id in the order given (untagged objects: all zeros)."""
    tokens = read_tokens(dataroot)
    ids = pd.Index([str(i) for i in object_ids], name="object_id")
    tokens = tokens[tokens["object_id"].isin(ids)].drop_duplicates(["object_id", "token"])
    counts = tokens["token"].value_counts()
    vocabulary = sorted(counts.index[counts >= MIN_TAG_OBJECTS])
    column = {token: j for j, token in enumerate(vocabulary)}
    values = np.zeros((len(ids), len(vocabulary) + 2), np.float32)
    row = pd.Series(np.arange(len(ids)), index=ids)
    kept = tokens[tokens["token"].isin(column)]
    values[row.loc[kept["object_id"]].to_numpy(), kept["token"].map(column).to_numpy(np.int64)] = 1.0
    for j, table in enumerate(("materials", "techniques")):
        per_object = tokens[tokens["table"] == table]["object_id"].value_counts()
        values[row.loc[per_object.index].to_numpy(), len(vocabulary) + j] = per_object.to_numpy()
    names = [f"tag_{j}" for j in range(len(vocabulary))] + ["n_materials", "n_techniques"]
    return pd.DataFrame(values, columns=names, index=ids)


def tags_skip_reason(dataroot: str | Path, test_ids) -> str | None:
    """Why the tag baseline cannot run here (None: it can): it needs the test objects' tags in the dataroot."""
    try:
        tokens = read_tokens(dataroot)
    except LayoutError as err:
        return f"no tag tables ({err})"
    if not tokens["object_id"].isin(set(test_ids)).any():
        return ("the test objects have no tags in the dataroot (train-only tags, as atmaCup #11 shipped them; "
                "the emoji build's --test-tags keeps them)")
    return None


# ---------------------------------------------------------------------------------------------------- scoring

@dataclass
class BaselineRow:
    """One row of the table. `status` is 'ok' or 'skipped' (then `reason` says why and the numbers are NaN)."""
    name: str
    status: str = "ok"
    reason: str = ""
    n_features: int = 0
    fold_scores: list[float] = field(default_factory=list)
    cv_mean: float = float("nan")
    cv_std: float = float("nan")
    oof_rmse: float = float("nan")
    answers_rmse: float | None = None            # test predictions of the model fit on the `all` split
    answers_rmse_fold_mean: float | None = None  # the mean of the k fold models' test predictions
    answers_n: int = 0
    best_iterations: dict[str, int] = field(default_factory=dict)
    inner_valid_rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    # the ids each fit early-stopped on (tests check them against the scored fold); not written to the JSON
    inner_valid_ids: dict[str, list[str]] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict:
        """Plain data for baselines.json; NaN (a skipped row's numbers) becomes null."""
        out = asdict(self)
        del out["inner_valid_ids"]
        return {k: None if isinstance(v, float) and not np.isfinite(v) else v for k, v in out.items()}


def _rows(features: pd.DataFrame | None, ids) -> pd.DataFrame | None:
    return None if features is None else features.loc[list(ids)]


def score(name: str, data: BaselineData, model: Model, features: pd.DataFrame | None = None,
          answers: str | Path | None = None, seed: int = 0) -> BaselineRow:
    """Fit `model` on each fold split's training rows, score it on that fold's held-out rows (and let it predict
    test.csv), then fit it on the `all` split to predict test.csv; both test predictions are scored on `answers`
    when given."""
    row = BaselineRow(name, n_features=0 if features is None else features.shape[1])
    oof = np.full(len(data.y), np.nan)
    position = pd.Series(np.arange(len(data.train_ids)), index=data.train_ids)
    test = data.all.held_out
    fold_tests = []
    for split in data.folds:
        held = split.held_out
        predict = pd.concat([held["object_id"], test["object_id"]])
        fit = model(split.train, _rows(features, split.train["object_id"]), _rows(features, predict), len(predict),
                    seed)
        oof[position.loc[held["object_id"]].to_numpy()] = fit.predictions[:len(held)]
        fold_tests.append(fit.predictions[len(held):])
        row.fold_scores.append(rmse(held["target"].to_numpy(float), fit.predictions[:len(held)]))
        _record(row, split.name, fit)
    fit = model(data.all.train, _rows(features, data.all.train["object_id"]), _rows(features, test["object_id"]),
                len(test), seed)
    _record(row, data.all.name, fit)
    row.cv_mean, row.cv_std = float(np.mean(row.fold_scores)), float(np.std(row.fold_scores))
    row.oof_rmse = rmse(data.y, oof)
    if answers is not None:
        ids = test["object_id"].tolist()
        scored = score_answers(ids, fit.predictions, answers, source=f"{name} test predictions")
        row.answers_rmse, row.answers_n = scored["rmse"], scored["n"]
        row.answers_rmse_fold_mean = score_answers(ids, np.mean(fold_tests, axis=0), answers,
                                                   source=f"{name} fold-mean test predictions")["rmse"]
    return row


def _record(row: BaselineRow, split: str, fit: Fit) -> None:
    if fit.best_iteration is not None:
        row.best_iterations[split] = fit.best_iteration
        row.inner_valid_rows[split] = len(fit.inner_valid_ids)
        row.inner_valid_ids[split] = fit.inner_valid_ids


def timed(build: Callable[[], BaselineRow]) -> BaselineRow:
    """`build()`, its wall-clock in the row's `seconds` (features included: what a competitor would pay)."""
    start = time.perf_counter()
    row = build()
    row.seconds = time.perf_counter() - start
    return row


# ---------------------------------------------------------------------------------------------------- the report

@dataclass
class BaselineReport:
    dataroot: str
    folds: int
    seed: int
    answers: str | None
    out: str
    rows: list[BaselineRow]
    facts: dict

    def to_json(self) -> dict:
        return {**{k: v for k, v in asdict(self).items() if k != "rows"}, "rows": [r.to_json() for r in self.rows]}

    def table(self) -> str:
        """The markdown table (also what the CLI prints)."""
        folds = [f"fold{i}" for i in range(self.folds)]
        lines = ["| baseline | features | CV mean ± std | " + " | ".join(folds) +
                 " | OOF RMSE | answers | fold mean | seconds |",
                 "| --- | ---: | ---: | " + " | ".join("---:" for _ in folds) + " | ---: | ---: | ---: | ---: |"]
        for r in self.rows:
            if r.status != "ok":
                lines.append(f"| {r.name} | | skipped: {r.reason} |" + " |" * (len(folds) + 4))
                continue
            answers = "" if r.answers_rmse is None else f"{r.answers_rmse:.4f} | {r.answers_rmse_fold_mean:.4f}"
            lines.append(f"| {r.name} | {r.n_features} | {r.cv_mean:.4f} ± {r.cv_std:.4f} | "
                         + " | ".join(f"{s:.4f}" for s in r.fold_scores)
                         + f" | {r.oof_rmse:.4f} | {answers or ' | '} | {r.seconds:.1f} |")
        return "\n".join(lines)

    def markdown(self) -> str:
        answers = (f"RMSE on the {self.facts['test_rows']} held-out answers of `{self.answers}`: \"answers\" of "
                   f"a model fit on the `all` split (train.csv -> test.csv, as the pipeline's `all` runs), \"fold "
                   f"mean\" of the mean of the {self.folds} fold models' test predictions" if self.answers
                   else "not scored (no --answers)")
        return "\n".join([
            f"# Baselines on `{self.dataroot}`", "",
            f"RMSE of the target. CV: each of the {self.folds} folds trains on `{self.folds}fold{{k}}_train.csv` and "
            f"is scored on `{self.folds}fold{{k}}_test.csv` (SGKFold.py's files, the pipeline's split); mean ± std "
            f"over the folds, and the OOF RMSE over all {self.facts['train_rows']} train rows. Answers: {answers}.",
            "", self.table(), "",
            f"LightGBM: the stack's parameters (seed {self.seed}); each fit early-stops on an inner "
            f"{int(INNER_SHARE * 100)} % of its own training rows (whole art_series_id groups, never the fold it is "
            "scored on), then refits on all its training rows for the best number of rounds; predictions are "
            "clipped to the training target range. Seconds: wall-clock of the row, its features included "
            f"(pixel statistics: {self.facts.get('pixel_stats', 'n/a')}).", ""])

    def summary(self) -> str:
        return "\n".join([self.table(), f"wrote {self.out}/baselines.json and baselines.md"])


def default_out(dataroot: str | Path) -> Path:
    """`datasets/emoji` -> `datasets/emoji_baselines`: beside the dataroot, never inside it."""
    root, resolved = Path(dataroot), Path(dataroot).resolve()
    parent = root.parent if root.name not in ("", ".", "..") else resolved.parent  # `--dataroot .` too
    return parent / f"{resolved.name}_baselines"


def run_baselines(dataroot: str | Path, folds: int = 3, answers: str | Path | None = None,
                  out: str | Path | None = None, seed: int = 0, pixel_cache: str | Path | None = None,
                  workers: int | None = None, threads: int = 1, bag: int = 1) -> BaselineReport:
    """Score every baseline on the dataroot's split files and write baselines.json and baselines.md into `out`
    (`bag`: LightGBM models averaged per fit, as the stack compared with them averages)."""
    dataroot = Path(dataroot)
    out = Path(out) if out is not None else default_out(dataroot)
    if answers is not None:
        read_answers(answers)  # a missing or malformed answers file stops here, before any fitting
    data = load_splits(dataroot, folds)
    test_ids = data.all.held_out["object_id"].tolist()
    every_id = list(data.train_ids) + test_ids
    facts = {"train_rows": len(data.train_ids), "test_rows": len(test_ids),
             "fold_sizes": {s.name: [len(s.train), len(s.held_out)] for s in [*data.folds, data.all]},
             "lgbm_params": lgbm_params(seed, threads), "lgbm_bag": bag, "inner_share": INNER_SHARE,
             "tag_min_objects": MIN_TAG_OBJECTS}
    rows = [timed(lambda: score("constant mean", data, constant_mean, None, answers, seed))]
    model = functools.partial(lgbm, threads=threads, options=LgbmOptions(bag=bag))

    def pixel_row() -> BaselineRow:
        px = pixel_stats.pixel_features(dataroot, every_id, pixel_cache or pixel_stats.cache_file(out), workers)
        facts["pixel_stats"] = f"{px.computed} computed, {px.cached} from the cache {px.cache}"
        return score("pixel statistics LightGBM", data, model, px.frame, answers, seed)

    rows.append(timed(pixel_row))
    reason = tags_skip_reason(dataroot, test_ids)
    if reason is None:
        rows.append(timed(lambda: score("tags LightGBM", data, model, bag_of_tags(dataroot, every_id), answers,
                                         seed)))
    else:
        rows.append(BaselineRow("tags LightGBM", status="skipped", reason=reason))
    report = BaselineReport(str(dataroot), folds, seed, None if answers is None else str(answers), str(out), rows,
                            facts)
    write_json(out / "baselines.json", report.to_json())
    write_text(out / "baselines.md", report.markdown())
    return report


def baselines_main(argv: list[str] | None, description: str, run: Callable, what: str) -> None:
    """The command line both baseline modules share: parse, run `run(dataroot, folds, answers, out, seed,
    pixel_cache, threads=..., bag=...)`, print its report or one error line. `what` names the dataroot it
    expects."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--dataroot", required=True, help=f"{what}, with SGKFold.py's splits")
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
                        help=f"pixel statistics cache CSV (default: OUT/{pixel_stats.cache_file('.').name})")
    args = parser.parse_args(argv)
    try:
        if args.threads < 0:
            raise UsageError(f"--threads {args.threads}: expected 0 (every core) or more")
        if args.bag < 1:
            raise UsageError(f"--bag {args.bag}: expected 1 or more")
        report = run(args.dataroot, args.folds, args.answers, args.out, args.seed, args.pixel_cache,
                     threads=args.threads, bag=args.bag)
    except Fold0123Error as err:
        sys.exit(error_line(err))
    print(report.summary())


def main(argv: list[str] | None = None) -> None:
    baselines_main(argv, __doc__.splitlines()[0], run_baselines, "folder in the atmaCup #11 layout")


if __name__ == "__main__":
    main()
