"""Probability ensembles: the step `stack.py` runs for a classification competition (the ACCV way), and the
pseudo labels taken from them.

run_ensemble(cfg) -> EnsembleResult   weighted probability ensemble of cfg.ensemble.runs, optional label
                                      re-distribution; probabilities CSV, submission and report in cfg.out_dir
run_pseudo(cfg, round_) -> PseudoResult   pseudo rows from the ensemble -> the round's split CSVs (stacking.pseudo)
run_default(cfg)                      what `stack.py` does without a command: stack or ensemble, by competition kind

Weighted probability ensembling and label re-distribution are the ACCV 2022 winners' tools, bugs fixed.

Weights: w_i = (score_i / min_j score_j) ** factor for a higher-is-better metric (their `--scale --factor 25`),
normalised by the SUM of the weights (they divided by the count, so their mixture was not a probability). For a
lower-is-better metric (RMSE, log loss) the ratio is inverted, w_i = (min_j score_j / score_i) ** factor, so the
better run still weighs more. Both are computed in log space: a factor of 25 neither overflows nor underflows.
The scores come from each run's metrics json (stacking.runs.choice_metrics), never from file names.

`weights: oof` searches them instead, as a competitor does: the simplex grid point (step `weight_step`) with the
best out-of-fold score of the mixture. The score of the weights on the rows that chose them is optimistic, so the
search is repeated per fold on the other folds' rows alone and each fold's rows are mixed with the weights they
did not choose: the row `weighted ensemble, weights chosen on the other folds` is the ensemble's honest CV.

Re-distribution (their `re-distribute-label --K`): every class predicted fewer than K times takes the (K - count)
objects with the highest probability for it, one global pass over (object, class) pairs in decreasing
probability so that two short classes never fight over an object: an object moves at most once, only while its
current class keeps at least K members, and only while the receiving class is still short. Their version let a
later class overwrite an earlier class's pick and never re-checked the loser. With n >= K * C this gives every
class at least K (the surplus of the other classes always covers the shortfall).
"""
from __future__ import annotations

import itertools
import math
from contextlib import ExitStack
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd

from fold0123 import baselines
from fold0123.common.io import atomic_path, write_csv, write_json
from fold0123.common.schema import StackConfig
from fold0123.data.answers import read_answers, score_answers
from fold0123.data.competition import Competition, read_competition, score
from fold0123.data.layout import read_test, read_train
from fold0123.data.metrics import expected_class, rmse, top_k_classes, top_k_hit_rate
from fold0123.data.npy_rows import NpyRows
from fold0123.data.pixel_stats import dataroot_cache, pixel_features
from fold0123.reports.markdown import timestamp, write_per_test_set, write_report
from fold0123.stacking.features import MeanSources, mean_sources
from fold0123.stacking.pipeline import StackResult, run_stack
from fold0123.stacking.pseudo import pseudo_rows, write_pseudo_splits
from fold0123.stacking.runs import CHUNK_VALUES, RunError, choice_metrics, fold_splits, round_entry


def ensemble_weights(scores, factor: float = 1.0, lower_is_better: bool = False) -> np.ndarray:
    scores = np.asarray(scores, float)
    if scores.ndim != 1 or len(scores) == 0:
        raise ValueError("ensemble_weights: need a 1-d, non-empty list of scores")
    if not (np.isfinite(scores).all() and (scores > 0).all()):
        raise ValueError(f"ensemble_weights: scores must be finite and > 0 for ratio weights, got {scores.tolist()}")
    log_ratio = np.log(scores) - np.log(scores.min())
    if lower_is_better:
        log_ratio = -log_ratio
    log_w = factor * log_ratio
    w = np.exp(log_w - log_w.max())
    return w / w.sum()


@dataclass
class Redistribution:
    labels: np.ndarray        # [n] class per object after re-distribution
    before: np.ndarray        # [C] class histogram of argmax
    after: np.ndarray         # [C] class histogram of `labels`


def redistribute_labels(probs, k: int) -> Redistribution:
    probs = np.asarray(probs)  # no float64 copy of a wide [n, C]: only the short classes' columns are sorted
    n, n_classes = probs.shape
    labels = probs.argmax(axis=1)
    before = np.bincount(labels, minlength=n_classes)
    counts = before.copy()
    need = np.maximum(k - counts, 0)
    moved = np.zeros(n, bool)
    short = np.flatnonzero(need)
    if len(short):
        # every (object, short class) pair, highest probability first; stable for reproducible ties
        objects, classes = np.meshgrid(np.arange(n), short, indexing="ij")
        objects, classes = objects.ravel(), classes.ravel()
        order = np.argsort(-probs[objects, classes], kind="stable")
        for i, c in zip(objects[order], classes[order]):
            donor = labels[i]
            if need[c] == 0 or moved[i] or donor == c or counts[donor] <= k:
                continue
            labels[i] = c
            moved[i] = True
            counts[donor] -= 1
            counts[c] += 1
            need[c] -= 1
            if not need.any():
                break
    return Redistribution(labels=labels, before=before, after=np.bincount(labels, minlength=n_classes))


# ---- the ensemble step

@dataclass
class ClassSummary:
    """What the scores need of `[n, C]` class probabilities, kept per row so that the probabilities need not be:
    the argmax, the top-5 classes (ties to the lower index, as data.metrics.top_k_accuracy breaks them) and the
    expected class (its RMSE for an ordinal target)."""
    labels: np.ndarray     # [n] int
    top5: np.ndarray       # [n, min(5, C)] int
    expected: np.ndarray   # [n] float
    top: np.ndarray        # [n] float: the top probability (pseudo labels keep the rows where it is high)

    @classmethod
    def of(cls, probs: np.ndarray) -> "ClassSummary":
        labels = probs.argmax(axis=1)
        return cls(labels=labels, top5=top_k_classes(probs, 5),
                   expected=expected_class(probs), top=probs[np.arange(len(probs)), labels])

    @classmethod
    def concat(cls, parts: list["ClassSummary"]) -> "ClassSummary":
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)))

    def take(self, rows: np.ndarray) -> "ClassSummary":
        return ClassSummary(*(getattr(self, f.name)[rows] for f in fields(self)))

    def put(self, rows: np.ndarray, other: "ClassSummary") -> None:
        for f in fields(self):
            getattr(self, f.name)[rows] = getattr(other, f.name)


@dataclass
class ArrayRows:
    """An in-memory member (the pixel LightGBM's probabilities) read like MeanRows."""
    array: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.array.shape

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.array[start:stop]


def chunk_rows(width: int) -> int:
    return max(1, CHUNK_VALUES // max(width, 1))


def mix(members: dict, weights, chunk: int | None = None, keep: bool = True,
        sink=None) -> tuple[np.ndarray | None, ClassSummary, dict[str, ClassSummary]]:
    """sum_i w_i * p_i over the members' rows (MeanRows or ArrayRows, `{name: rows}` in the order of `weights`),
    computed a chunk of rows at a time in float64: (the mixture [n, C] float32, or None without `keep`; its
    summary; each member's summary). `sink(chunk, n)` receives each mixed chunk (data.npy_rows: a file written as
    it goes).
    Memory: one chunk of every member and the per-row summaries, plus the mixture only when it is kept."""
    weights = np.asarray(weights, float)
    if len(weights) != len(members):
        raise ValueError(f"mix: {len(members)} members but {len(weights)} weights")
    shapes = {tuple(rows.shape) for rows in members.values()}
    if len(shapes) != 1:
        raise ValueError(f"mix: the members' probabilities differ in shape: {sorted(shapes)}")
    weights = weights / weights.sum()  # rows stay probability vectors
    n, width = shapes.pop()
    chunk = chunk or chunk_rows(width)
    mixture = np.empty((n, width), np.float32) if keep else None
    summaries, parts = [ClassSummary.of(np.zeros((0, width)))], {name: [] for name in members}
    for start in range(0, n, chunk):
        total = np.zeros((min(start + chunk, n) - start, width))
        for w, (name, rows) in zip(weights, members.items()):
            block = np.asarray(rows.read(start, start + chunk), float)
            parts[name].append(ClassSummary.of(block))
            total += w * block
        if keep:
            mixture[start:start + len(total)] = total
        if sink is not None:
            sink(total.astype(np.float32), n)
        summaries.append(ClassSummary.of(total))
    return mixture, ClassSummary.concat(summaries), {name: ClassSummary.concat(summaries[:1] + p)
                                                     for name, p in parts.items()}


@dataclass
class EnsembleResult:
    runs: pd.DataFrame          # index exp: epoch, metric, score (mean over folds), lower_is_better, weight
    oof: np.ndarray | None      # [n_train, C] float32 ensembled out-of-fold probabilities (train.csv order)
    test: np.ndarray | None     # [n_test, C] float32 ensembled test probabilities (test.csv order); both None
                                # unless kept (ensemble_probabilities' `keep`, or re-distribution needs them)
    test_ids: np.ndarray
    cv_table: pd.DataFrame      # per run and the ensemble: OOF scores (accuracy, the competition's metric, ...)
    redistribution: Redistribution | None
    redistribution_table: pd.DataFrame | None   # histograms before/after (test) and OOF effect
    labels: np.ndarray | None = None            # [n_test] the submitted classes (argmax or re-distributed)
    run_tests: dict[str, ClassSummary] = field(default_factory=dict, repr=False)  # each run's test rows alone
    test_summary: ClassSummary | None = field(default=None, repr=False)          # the ensemble's test rows
    weight_search: pd.DataFrame | None = None   # `weights: oof`: each fold's chosen weights and scores
    answers_table: pd.DataFrame | None = None   # the competition's metric on the held-out answers
    probs_csv: Path | None = None
    submission: Path | None = None
    report_md: Path | None = None

    def summary(self) -> str:
        with pd.option_context("display.float_format", "{:.4f}".format, "display.width", 160):
            lines = [self.runs.to_string(), self.cv_table.to_string()]
            if self.weight_search is not None:
                lines += ["weights searched on out-of-fold rows:", self.weight_search.to_string()]
            if self.redistribution_table is not None:
                lines.append(self.redistribution_table.to_string())
            if self.answers_table is not None:
                lines += ["score on the answers:", self.answers_table.to_string()]
        lines += [f"{what}: {path}" for what, path in (("probabilities", self.probs_csv),
                                                       ("submission", self.submission)) if path]
        return "\n".join(lines)


def _label_scores(y, labels, competition) -> dict:
    """Scores of predicted classes: accuracy, the competition's metric where labels suffice (macro-F1), and for
    an ordinal target the RMSE of the class as a number."""
    out = {"accuracy": score("accuracy", y, labels)}
    if competition.metric == "macro_f1":
        out["macro_f1"] = score("macro_f1", y, labels)
    if competition.kind == "ordinal":
        out["rmse_argmax"] = rmse(y, labels)
    return out


def _class_scores(y, summary: ClassSummary, competition) -> dict:
    """`_label_scores` of the argmax, plus what needs the probabilities: top-5 accuracy, the expected class's RMSE."""
    out = _label_scores(y, summary.labels, competition)
    if competition.metric == "top5_accuracy":
        out["top5_accuracy"] = top_k_hit_rate(y, summary.top5)
    if competition.kind == "ordinal":
        out["rmse_expected"] = rmse(y, summary.expected)
    return out


def _ensemble_weights(runs: pd.DataFrame, ecfg) -> np.ndarray:
    """Hand-set `ensemble.weights` (every run named, normalised), or weights from the runs' out-of-fold scores."""
    if not ecfg.weights:
        return ensemble_weights(runs["score"], ecfg.factor, bool(runs["lower_is_better"].iloc[0]))
    unknown = sorted(set(ecfg.weights) - set(runs.index))
    missing = sorted(set(runs.index) - set(ecfg.weights))
    if unknown or missing:
        raise RunError(f"ensemble.weights must name each of ensemble.runs ({', '.join(runs.index)}): "
                       + "; ".join(p for p in (unknown and f"not a run: {', '.join(unknown)}",
                                               missing and f"no weight: {', '.join(missing)}") if p))
    weights = np.array([ecfg.weights[e] for e in runs.index], float)
    if weights.sum() <= 0:
        raise RunError("ensemble.weights: at least one weight must be > 0")
    return weights / weights.sum()


MAX_GRID = 2000  # weight vectors `weights: oof` may score: 4 members at step 0.05 are 1771, 5 at 0.1 are 1001


def simplex_grid(members: int, step: float) -> np.ndarray:
    """`[G, members]` every weight vector whose entries are multiples of `step` (1/step rounded) summing to one."""
    n = round(1 / step)
    count = math.comb(n + members - 1, members - 1)
    if count > MAX_GRID:
        raise RunError(f"ensemble.weights: oof over {members} members at ensemble.weight_step {step} scores {count} "
                       f"weight vectors (at most {MAX_GRID}): take a coarser step or fewer runs")
    # stars and bars: the bars' places among n + members - 1 slots cut n units into `members` counts
    rows = [np.diff([-1, *bars, n + members - 1]) - 1
            for bars in itertools.combinations(range(n + members - 1), members - 1)]
    return np.asarray(rows, float).reshape(-1, members) / n


@dataclass
class WeightSearch:
    weights: np.ndarray          # [M] chosen on every out-of-fold row: the submission's
    nested: ClassSummary         # each fold's rows mixed with the weights chosen on the other folds' rows
    table: pd.DataFrame          # per fold (and `all`): the chosen weights, their score on the rows that chose
                                 # them and (per fold) on the fold's own rows


def search_weights(members: dict, y: np.ndarray, folds: np.ndarray, competition, step: float,
                   chunk: int | None = None) -> WeightSearch:
    """The ensemble's weights as a competitor picks them: the point of a simplex grid with the best out-of-fold
    score (the competition's metric on the mixture), ties to the grid point nearest equal weights. Searched once on
    all the out-of-fold rows (the submission's weights), and once per fold on the other folds' rows alone, which
    scores that fold's rows with weights its own rows never chose: the ensemble's honest (nested) CV.
    Memory: one mixture's per-row summary and a score per grid point and fold; the members are read in chunks."""
    grid = simplex_grid(len(members), step)
    key = "rmse_expected" if competition.metric == "rmse" else competition.metric  # score()'s rmse of probabilities
    fold_of = np.asarray(folds).astype(str)
    chooses = {k: np.flatnonzero(fold_of != k) for k in np.unique(fold_of)} | {"all": np.arange(len(y))}

    def scored(summary: ClassSummary, rows: np.ndarray) -> float:
        return _class_scores(y[rows], summary.take(rows), competition)[key]

    scores = np.empty((len(grid), len(chooses)))
    for g, w in enumerate(grid):
        summary = mix(members, w, chunk, keep=False)[1]
        scores[g] = [scored(summary, rows) for rows in chooses.values()]
    sign = 1.0 if competition.lower_is_better else -1.0
    spread = np.abs(grid - 1 / grid.shape[1]).sum(1)  # the tie-break: distance from equal weights
    chosen = {name: int(np.lexsort((spread, sign * scores[:, i]))[0]) for i, name in enumerate(chooses)}

    fold_summaries = {g: mix(members, grid[g], chunk, keep=False)[1]  # each fold's weights mixed once
                      for name, g in chosen.items() if name != "all"}
    nested = next(iter(fold_summaries.values())).take(np.arange(len(y)))  # a copy: every row is overwritten below
    table = {}
    for i, (name, g) in enumerate(chosen.items()):
        row = {**dict(zip(members, grid[g])), "score (chosen on)": scores[g, i], "score (held out)": np.nan}
        if name != "all":
            held_out = np.flatnonzero(fold_of == name)
            nested.put(held_out, fold_summaries[g].take(held_out))
            row["score (held out)"] = scored(fold_summaries[g], held_out)
        table[name] = row
    return WeightSearch(weights=grid[chosen["all"]], nested=nested,
                        table=pd.DataFrame.from_dict(table, orient="index").rename_axis("fold"))


PIXELS = "pixels"  # the ensemble member `ensemble.pixel_stats` adds
NESTED = "weighted ensemble, weights chosen on the other folds"  # `weights: oof`'s honest CV row


def pixel_member(cfg: StackConfig, sources: MeanSources,
                 competition: Competition) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """The class probabilities of a multiclass LightGBM on the photos' pixel features (the class baselines' model,
    averaged over `lgbm.bag` seeds), fit on the same split files as the runs: out of fold for the train rows (in
    train.csv order), from the `all` fit or the fold fits' mean for test (`ensemble.test_features`), and its
    per-fold scores, which weigh it like a run's."""
    if competition.kind != "classification":
        raise RunError(f"ensemble.pixel_stats: for a classification competition ({cfg.dataroot} is "
                       f"{competition.kind}); a stack takes the pixel features with pixel_stats: true")
    data = baselines.load_splits(cfg.dataroot, cfg.folds)
    pixels = pixel_features(cfg.dataroot, data.ids + data.test_ids, dataroot_cache(cfg.dataroot))
    lgbm = baselines.lgbm_options(data.classes, int(cfg.lgbm.params.get("num_threads", 0)), cfg.lgbm.bag)
    result, test, fold_mean = baselines.predict(data, pixels.frame, lgbm, cfg.seed,
                                                baselines.predictions_cache(cfg.dataroot))
    oof = pd.DataFrame(result.oof, index=data.ids).loc[sources.train_ids].to_numpy()
    test = pd.DataFrame(test if cfg.ensemble.test_features == "all" else fold_mean, index=data.test_ids)
    return oof, test.loc[sources.test_ids].to_numpy(), result.scores


def ensemble_probabilities(cfg: StackConfig, chunk: int | None = None, keep: bool = True,
                           sink=None) -> EnsembleResult:
    """Weighted ensemble of the class probabilities of cfg.ensemble.runs (weights from their metrics), the
    submitted labels (argmax, or re-distributed with `ensemble.submit: redistributed`) and their scores. The runs'
    eval files are read `chunk` rows at a time (default: about 1M values per run), never whole, and the test
    mixture goes to `sink(rows, n)` as it is made: memory holds per-row summaries, and the two mixtures
    ([n, C] float32) only with `keep` or re-distribution (which sorts whole columns), whatever the runs or views."""
    ecfg = cfg.ensemble
    competition = read_competition(cfg.dataroot)
    sources = mean_sources(cfg.dataroot, cfg.checkpoints_dir, ecfg.runs, k=cfg.folds, split_suffix=cfg.split_suffix,
                           test_features=ecfg.test_features, allow_unfinished=cfg.allow_unfinished)
    oof_rows: dict = dict(sources.oof)
    test_rows: dict = dict(sources.test)
    rows = []
    for run in sources.runs:
        if oof_rows[run.exp].shape[1] != competition.n_classes:
            raise RunError(f"ensemble run {run.exp!r} ({run.task}) does not output {competition.n_classes} class "
                           f"probabilities")
        exp, suffix = round_entry(run.exp, cfg.split_suffix)  # `exp@_pseudo2`: another round's runs
        at = choice_metrics(cfg.checkpoints_dir, exp, fold_splits(cfg.folds, suffix), run.epoch)  # epoch or soup
        rows.append({"exp": run.exp, "epoch": run.epoch, "metric": at["metric"].iloc[0],
                     "score": float(at["value"].mean()), "lower_is_better": bool(at["lower_is_better"].iloc[0])})
    if ecfg.pixel_stats:
        oof_pixels, test_pixels, fold_scores = pixel_member(cfg, sources, competition)
        oof_rows[PIXELS], test_rows[PIXELS] = ArrayRows(oof_pixels), ArrayRows(test_pixels)
        rows.append({"exp": PIXELS, "epoch": "-", "metric": competition.metric, "score": float(np.mean(fold_scores)),
                     "lower_is_better": competition.lower_is_better})
    runs = pd.DataFrame(rows).set_index("exp")
    if runs["lower_is_better"].nunique() > 1 or runs["metric"].nunique() > 1:
        raise RunError(f"ensemble runs must share one primary metric to weigh them: {runs['metric'].to_dict()}")
    y = sources.y.astype(int)
    search = None
    if ecfg.weights == "oof":
        search = search_weights({e: oof_rows[e] for e in runs.index}, y, sources.folds, competition,
                                ecfg.weight_step, chunk)
        runs["weight"] = search.weights
    else:
        runs["weight"] = _ensemble_weights(runs, ecfg)
    keep = keep or ecfg.redistribute_k > 0
    oof, oof_summary, oof_runs = mix({e: oof_rows[e] for e in runs.index}, runs["weight"], chunk, keep)
    test, test_summary, test_runs = mix({e: test_rows[e] for e in runs.index}, runs["weight"], chunk, keep, sink)
    cv_rows = {e: _class_scores(y, oof_runs[e], competition) for e in runs.index}
    cv_rows["weighted ensemble"] = _class_scores(y, oof_summary, competition)
    if search is not None:  # the row above scores the weights on the rows that chose them: optimistic
        cv_rows[NESTED] = _class_scores(y, search.nested, competition)
    cv_table = pd.DataFrame.from_dict(cv_rows, orient="index")

    redistribution = redistribution_table = None
    k = ecfg.redistribute_k
    if k > 0:
        redistribution = redistribute_labels(test, k)
        k_oof = max(1, int(round(k * len(oof) / len(test))))  # the same share of the rows on OOF
        oof_red = redistribute_labels(oof, k_oof)
        redistribution_table = pd.DataFrame({
            "test before": redistribution.before, "test after": redistribution.after,
            f"oof before (K={k_oof})": oof_red.before, "oof after": oof_red.after})
        redistribution_table.index.name = "class"
        label_scores = _label_scores(y, oof_red.labels, competition)
        cv_table.loc["ensemble, re-distributed", list(label_scores)] = list(label_scores.values())
    if ecfg.submit == "redistributed" and redistribution is None:
        raise RunError("ensemble.submit: redistributed needs ensemble.redistribute_k > 0")
    labels = redistribution.labels if ecfg.submit == "redistributed" else test_summary.labels
    return EnsembleResult(runs=runs, oof=oof, test=test, test_ids=np.asarray(sources.test_ids, str),
                          cv_table=cv_table, redistribution=redistribution,
                          redistribution_table=redistribution_table, labels=labels, run_tests=test_runs,
                          test_summary=test_summary, weight_search=None if search is None else search.table)


def score_ensemble(result: EnsembleResult, answers: str | Path, competition) -> pd.DataFrame:
    """The competition's metric on the held-out answers for each run alone, the ensemble and what is submitted.
    Only reported: the weights and `submit` were chosen from out-of-fold scores before this runs."""
    metric = competition.metric
    rows = {**{f"{exp} alone": summary for exp, summary in result.run_tests.items()},
            "weighted ensemble (argmax)": result.test_summary}
    if result.redistribution is not None:
        rows["weighted ensemble, re-distributed"] = result.redistribution.labels
    # checks the ids against the answers (one line naming what is wrong) before any score
    score_answers(result.test_ids, result.test_summary.labels, answers, metric="accuracy")
    y = read_answers(answers).loc[[str(i) for i in result.test_ids]].to_numpy()
    table = {}
    for name, pred in rows.items():
        if metric == "top5_accuracy":  # the top-5 classes of the probabilities; re-distributed labels count alone
            table[name] = top_k_hit_rate(y, pred.top5) if isinstance(pred, ClassSummary) else score("accuracy", y, pred)
        else:
            table[name] = score(metric, y, pred.labels if isinstance(pred, ClassSummary) else pred)
    return pd.Series(table, name=f"{metric} on the answers").to_frame()


def write_probabilities(path: Path, ids, probs: np.ndarray, labels: dict[str, np.ndarray]) -> None:
    """object_id, p0..p{C-1} and the label columns, written a chunk of rows at a time (never one float64 frame of
    a wide [n, C]), atomically."""
    columns, chunk = [f"p{c}" for c in range(probs.shape[1])], chunk_rows(probs.shape[1])
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        for start in range(0, max(len(ids), 1), chunk):
            frame = pd.DataFrame(probs[start:start + chunk], columns=columns)
            frame.insert(0, "object_id", ids[start:start + chunk])
            for name, values in labels.items():
                frame[name] = values[start:start + chunk]
            frame.to_csv(f, index=False, header=start == 0)


def run_ensemble(cfg: StackConfig, stamp: str | None = None) -> EnsembleResult:
    """ensemble_probabilities + files in out_dir: the test probabilities (`ensemble.probabilities`: csv
    `ensemble_{stamp}_probs.csv` with object_id, p0..p{K-1}, label [, label_redistributed]; npy
    `ensemble_{stamp}_probs.npy`, written as the mixture is made, so memory stays flat in n; or none), the
    submission `ensemble_{stamp}_submission.csv` (object_id, target: the class index, label: its name) and
    `ensemble_{stamp}_report.md/json`. The answers are checked (and scored) before anything is renamed into place:
    a bad answers file leaves nothing."""
    competition = read_competition(cfg.dataroot)
    name, out_dir, kind = f"ensemble_{stamp or timestamp()}", Path(cfg.out_dir), cfg.ensemble.probabilities
    probs_path = out_dir / f"{name}_probs.{kind}"
    with ExitStack() as stack:
        sink = None
        if kind == "npy":  # a temporary name until everything below has worked
            sink = NpyRows(stack.enter_context(open(stack.enter_context(atomic_path(probs_path)), "wb")), "<f4")
        result = ensemble_probabilities(cfg, keep=kind == "csv", sink=sink)
        if sink is not None and sink.written == 0:  # no test rows: still a valid, empty array
            sink(np.zeros((0, competition.n_classes), np.float32), 0)
        notes = []
        if cfg.answers and Path(cfg.answers).is_file():
            result.answers_table = score_ensemble(result, cfg.answers, competition)
        elif cfg.answers:
            notes.append(f"answers {cfg.answers} not found: no score on held-out answers")
    if kind == "csv":
        label_columns = {"label": result.test_summary.labels}
        if result.redistribution is not None:
            label_columns["label_redistributed"] = result.redistribution.labels
        write_probabilities(probs_path, result.test_ids, result.test, label_columns)
    result.probs_csv = probs_path if kind != "none" else None
    names = np.asarray(competition.class_names, dtype=object)
    result.submission = out_dir / f"{name}_submission.csv"
    submission = pd.DataFrame({"object_id": result.test_ids, "target": result.labels, "label": names[result.labels]})
    write_csv(result.submission, submission)
    # several test sets (test.csv, test_b.csv): each set's rows alone too, as its stage takes them
    test_sets = read_test(cfg.dataroot).set_index("object_id")["test_set"].loc[result.test_ids].to_numpy()
    write_per_test_set(submission, test_sets, out_dir / f"{name}_submission_for_{{}}.csv")
    tables = {"runs": result.runs, "oof_scores": result.cv_table}
    if result.weight_search is not None:
        tables["weight_search"] = result.weight_search
    if result.redistribution_table is not None:
        tables["redistribution"] = result.redistribution_table
    if result.answers_table is not None:
        tables["answers"] = result.answers_table
    facts = {"factor": cfg.ensemble.factor, "weights": cfg.ensemble.weights or "by score",
             "weight_step": cfg.ensemble.weight_step, "test_features": cfg.ensemble.test_features,
             "redistribute_k": cfg.ensemble.redistribute_k, "submit": cfg.ensemble.submit,
             "probs_csv": result.probs_csv, "submission": result.submission, "metric": competition.metric}
    result.report_md, _ = write_report(out_dir, name, tables, facts, notes)
    return result


def run_default(cfg: StackConfig, stamp: str | None = None) -> StackResult | EnsembleResult:
    """What `stack.py` does without a command: atmaCup-style competitions (ordinal, regression) stack with
    LightGBM; a classification competition ensembles its runs' probabilities (the ACCV way)."""
    if read_competition(cfg.dataroot).kind == "classification":
        return run_ensemble(cfg, stamp)
    return run_stack(cfg, stamp)


@dataclass
class PseudoResult:
    round: int
    rows: pd.DataFrame          # the pseudo rows added to every split's train part
    per_class: pd.Series        # rows added per class
    written: list[Path]
    thr: float

    def summary(self) -> str:
        counts = ", ".join(f"{c}: {n}" for c, n in self.per_class.items())
        return (f"pseudo round {self.round}: {len(self.rows)} test rows with top probability >= {self.thr} added "
                f"to every train part (per class {counts}); wrote {len(self.written)} split CSVs, e.g. "
                f"{self.written[0] if self.written else '-'}")


def run_pseudo(cfg: StackConfig, round_: int) -> PseudoResult:
    """Ensemble the runs' test probabilities, keep the confident ones, write round `round_`'s split CSVs, and
    a `pseudo{round}_report.json` in out_dir."""
    # the ACCV winners built pseudo labels from the ensemble without the score factor: pseudo_factor (0) here
    plain = cfg.ensemble.model_copy(update={"factor": cfg.ensemble.pseudo_factor})
    pseudo_cfg = cfg.model_copy(update={"ensemble": plain})
    result = ensemble_probabilities(pseudo_cfg, keep=False)
    thr = cfg.ensemble.pseudo_thr
    competition = read_competition(cfg.dataroot)
    summary = result.test_summary
    rows = pseudo_rows(result.test_ids, summary.labels, summary.top, thr, read_train(cfg.dataroot),
                       competition.train_columns, competition.group_column)
    # cumulative: build on the splits the ensembled runs trained on (the last round's), keeping its rows
    cumulative = cfg.ensemble.pseudo_cumulative
    written = write_pseudo_splits(cfg.dataroot, cfg.folds, round_, rows,
                                  base_suffix=cfg.split_suffix if cumulative else "", cumulative=cumulative)
    per_class = rows["target"].value_counts().reindex(range(competition.n_classes), fill_value=0)
    write_json(Path(cfg.out_dir) / f"pseudo{round_}_report.json",
               {"round": round_, "thr": thr, "factor": cfg.ensemble.pseudo_factor,
                "weights": result.runs["weight"].to_dict(), "rows_added": len(rows),
                "per_class": per_class.tolist(),
                "n_test": len(result.test_ids), "written": [str(p) for p in written],
                "ensemble_oof": result.cv_table.to_dict(orient="index")})
    return PseudoResult(round=round_, rows=rows, per_class=per_class, written=written, thr=thr)
