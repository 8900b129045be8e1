"""The steps ensemble.ipynb and stack.py run, each one call on a resolved config dict (parameters/stack.yml).

run_stack(cfg) -> StackResult     features -> OOF LightGBM stack (+ the in-fold variant) -> tuned post-processing
                                  -> submission, report (md, json, html), plots in cfg.out_dir
run_ensemble(cfg) -> EnsembleResult   weighted probability ensemble of cfg.ensemble.runs, optional label
                                  re-distribution; probabilities CSV + report in cfg.out_dir
run_pseudo(cfg, round_) -> PseudoResult   pseudo rows from the ensemble -> the round's split CSVs in the dataroot
Results are plain dataclasses; their `summary()` is what the CLI prints.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fold0123.common import rundir
from fold0123.common.fingerprint import Fingerprint, config_identity, file_digest
from fold0123.common.io import write_csv, write_json
from fold0123.common.schema import StackConfig
from fold0123.data.answers import score_answers
from fold0123.data.competition import Competition, read_competition, score
from fold0123.data.layout import read_test, read_train
from fold0123.data.metrics import rmse
from fold0123.stacking import ensemble as ens
from fold0123.stacking import postprocess as pp
from fold0123.stacking.features import FeatureSet, build_features, with_pixel_statistics, with_tag_features
from fold0123.stacking.html_report import stack_html
from fold0123.stacking.lgbm import StackFit, fit_infold_stack, fit_oof_stack, fold_rmse
from fold0123.stacking.pseudo import pseudo_rows, write_pseudo_splits
from fold0123.stacking.report import plot_cv_per_epoch, plot_importance, stem, timestamp, write_report, write_submission
from fold0123.stacking.runs import RunError, choice_label, choice_metrics, fold_splits, metrics_table


# Row names of the report's CV table and variants of its answers table: the ablation table reads them back.
OOF_ROW, INFOLD_ROW = "stack (out-of-fold)", "stack, in-fold variant (original)"
NESTED_ROW = "post-processing tuned on the other folds (nested)"
OOF_VARIANT, INFOLD_VARIANT = "out-of-fold stack", "in-fold stack (original)"


def _fold_splits(cfg: StackConfig) -> list[str]:
    return fold_splits(cfg.folds, cfg.split_suffix)


def _pick_exp(features: FeatureSet, choice, task: str) -> str | None:
    """`auto` -> the first chosen run of `task`; null/none -> no such step; else that experiment."""
    if choice in (None, "none", False):
        return None
    if choice == "auto":
        return features.exp_of_task(task)
    if choice not in features.view_mean_oof:
        raise RunError(f"{choice!r} is not one of the chosen runs {list(features.view_mean_oof)}")
    return choice


def _row(name: str, scores, oof=np.nan, metric: str = "rmse") -> dict:
    return {"name": name, "metric": metric, **{f"fold{i}": s for i, s in enumerate(scores)},
            "mean": float(np.mean(scores)), "std": float(np.std(scores)), "oof": oof}


def _expected_class(probs: np.ndarray) -> np.ndarray:
    return probs @ np.arange(probs.shape[1])


def single_task_rows(cfg: StackConfig, features: FeatureSet) -> tuple[list[dict], pd.DataFrame]:
    """Each chosen run's own primary metric per fold at its chosen epoch, plus its target RMSE where it has one
    (target: the prediction; onehot: the expected class). Also returns every epoch's metrics (for the plot)."""
    rows, tables = [], []
    for run in features.runs:
        table = metrics_table(cfg.checkpoints_dir, run.exp, _fold_splits(cfg))
        tables.append(table)
        at = choice_metrics(cfg.checkpoints_dir, run.exp, _fold_splits(cfg), run.epoch)  # an epoch or a soup
        rows.append(_row(f"{run.exp} [{run.task}] {choice_label(run.epoch)}", at["value"].tolist(),
                         metric=at["metric"].iloc[0]))
        pred = features.view_mean_oof[run.exp]
        if run.task in ("target", "onehot"):
            pred = pred[:, 0] if run.task == "target" else _expected_class(pred)
            rows.append(_row(f"{run.exp} [{run.task}] as target", fold_rmse(features.y, pred, features.folds),
                             rmse(features.y, pred)))
    return rows, pd.concat(tables, ignore_index=True)


@dataclass
class StackResult:
    name: str
    submission: Path
    submission_ids: Path
    report_md: Path
    report_json: Path
    report_html: Path                  # the self-contained HTML report (html_report.stack_html)
    plots: dict[str, Path]
    cv_table: pd.DataFrame             # index name; metric, fold0.., mean, std, oof
    answers_table: pd.DataFrame | None  # rmse on the held-out answers per variant / test source / step
    params: pp.PostParams
    cv: float                          # OOF RMSE of the submitted (fully post-processed) predictions
    features: FeatureSet = field(repr=False)
    fit: StackFit = field(repr=False)
    infold_fit: StackFit | None = field(repr=False, default=None)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        with pd.option_context("display.float_format", "{:.4f}".format, "display.width", 160):
            lines = [f"CV (OOF RMSE after post-processing): {self.cv:.4f}  params {self.params.as_dict()} "
                     f"(tuning scored nested)", self.cv_table.to_string()]
            if self.answers_table is not None:
                lines += ["score on the answers:", self.answers_table.to_string()]
        lines += [f"submission: {self.submission}", f"report: {self.report_md}",
                  f"html: {self.report_html}"] + [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _post_inputs(features: FeatureSet, blend_exp, onehot_exp, source: str | None):
    """(target prediction [n], class probabilities [n, C]) for OOF (source None) or a test source."""
    means = features.view_mean_oof if source is None else features.view_mean_test[source]
    target = means[blend_exp][:, 0] if blend_exp else None
    probs = means[onehot_exp] if onehot_exp else None
    return target, probs


def run_stack(cfg: StackConfig, stamp: str | None = None) -> StackResult:
    features = build_features(cfg.dataroot, cfg.checkpoints_dir, cfg.runs, k=cfg.folds,
                              aggregations=cfg.aggregations, raw_views=cfg.raw_views,
                              split_suffix=cfg.split_suffix, test_features=cfg.test_features,
                              infold=cfg.infold)
    if cfg.pixel_stats:
        features = with_pixel_statistics(features, cfg.dataroot, Path(cfg.checkpoints_dir) / "cache")
    if cfg.tag_features:
        features = with_tag_features(features, cfg.dataroot)
    notes = list(features.notes)
    blend_exp = _pick_exp(features, cfg.blend_exp, "target")
    onehot_exp = _pick_exp(features, cfg.onehot_exp, "onehot")
    competition = read_competition(cfg.dataroot)
    n_classes, bounds = competition.n_classes, competition.target_range
    if onehot_exp and features.view_mean_oof[onehot_exp].shape[1] != n_classes:
        raise RunError(f"onehot_exp {onehot_exp!r}: outputs have d={features.view_mean_oof[onehot_exp].shape[1]}, "
                       f"expected {n_classes} class probabilities")
    lgbm = cfg.lgbm
    params = {**lgbm.params, "seed": cfg.seed}
    fit = fit_oof_stack(features.train, features.y, features.folds, features.test, params,
                        lgbm.num_boost_round, lgbm.early_stopping_rounds, lgbm.coef, lgbm.bag)
    infold_fit = None
    if features.infold is not None:
        infold_fit = fit_infold_stack(features.infold, features.infold_y, features.train, features.y,
                                      features.folds, features.test, params, lgbm.num_boost_round,
                                      lgbm.early_stopping_rounds, lgbm.bag)

    target_oof, probs_oof = _post_inputs(features, blend_exp, onehot_exp, None)
    grids = cfg.postprocess.model_dump()
    post, grid = pp.tune(fit.oof, target_oof, probs_oof, features.y, bounds, grids)
    nested, _ = pp.nested_tune(fit.oof, target_oof, probs_oof, features.y, features.folds, bounds, grids)
    nested_cv, raw_cv = rmse(features.y, nested), rmse(features.y, pp.clip(fit.oof, bounds))
    keep = cfg.postprocess_keep == "always" or (cfg.postprocess_keep == "if_nested_helps" and nested_cv < raw_cv)
    if not keep:
        notes.append(f"post-processing off ({cfg.postprocess_keep}): tuned on the other folds it scores "
                     f"{nested_cv:.4f}, the clipped stack {raw_cv:.4f}")
        post = pp.PostParams()
    oof_steps = pp.apply_steps(fit.oof, target_oof, probs_oof, post, bounds)
    steps = pp.step_table(oof_steps, features.y, features.folds)
    for step, task, exp in (("blend", "target", blend_exp), ("onehot", "onehot", onehot_exp)):
        if exp is None:
            notes.append(f"post-processing step {step!r} off: no {task} run")

    rows, epoch_metrics = single_task_rows(cfg, features)
    if infold_fit is not None:
        rows.append(_row(INFOLD_ROW, infold_fit.fold_scores, infold_fit.cv))
    for step in pp.STEPS:
        label = OOF_ROW if step == "stack" else f"  + {step}"
        rows.append(_row(label, steps.loc[step, [c for c in steps.columns if c.startswith("fold")]].tolist(),
                         float(steps.loc[step, "oof"])))
    rows.append(_row(NESTED_ROW,
                     fold_rmse(features.y, nested, features.folds), nested_cv))
    cv_table = pd.DataFrame(rows).set_index("name")
    # the CV of what is submitted, with the tuning scored nested: the steps' own "+ clip" row is optimistic
    cv = nested_cv if keep else raw_cv

    test_ids = read_test(cfg.dataroot)["object_id"].to_numpy()
    source = cfg.test_features
    target_test, probs_test = _post_inputs(features, blend_exp, onehot_exp, source)
    final = pp.apply_steps(fit.test[source], target_test, probs_test, post, bounds)["clip"]

    name = stem(cv, stamp)
    out_dir = Path(cfg.out_dir)
    submission, submission_ids = write_submission(out_dir, name, test_ids, final)
    plots = {"cv_per_epoch": plot_cv_per_epoch(epoch_metrics, out_dir / f"{name}_cv_per_epoch.png"),
             "importance": plot_importance(fit.importance, out_dir / f"{name}_importance.png")}
    write_csv(out_dir / f"{name}_importance.csv", fit.importance)
    write_csv(out_dir / f"{name}_epoch_metrics.csv", epoch_metrics)
    # every train row's label, fold and out-of-fold predictions, for reports (confusion matrix, OOF vs in-fold)
    oof_frame = pd.DataFrame({"object_id": features.train.index, "target": features.y, "fold": features.folds,
                              "stack": fit.oof, "submitted": oof_steps["clip"] if not keep else nested})
    if infold_fit is not None:
        oof_frame["stack_infold"] = infold_fit.oof
    write_csv(out_dir / f"{name}_oof.csv", oof_frame)

    answers_table = None
    answers = cfg.answers
    if answers and Path(answers).is_file():
        answers_table = score_variants(features, fit, infold_fit, post, bounds, blend_exp, onehot_exp, test_ids,
                                       answers)
    elif answers:
        notes.append(f"answers {answers} not found: no score on held-out answers")

    tables = {"cv": cv_table, "postprocess_grid": grid.nsmallest(10, "rmse").set_index("ratio")}
    if answers_table is not None:
        tables["answers"] = answers_table
    facts = {"cv": cv, "cv_postprocess_tuned_on_all_oof": float(steps.loc["clip", "oof"]) if keep else None,
             "postprocess_kept": keep, "postprocess": post.as_dict(), "runs": [vars(r) for r in features.runs],
             "test_features": source, "best_iterations": fit.best_iterations, "final_rounds": fit.rounds,
             "n_features": features.train.shape[1], "n_train": len(features.y), "n_test": len(test_ids),
             "submission": submission, "plots": plots, "fingerprint": asdict(stack_fingerprint(cfg, features))}
    report_md, report_json = write_report(out_dir, name, tables, facts, notes)
    report_html = stack_html(out_dir, name)  # last: it reads the files above back
    return StackResult(name=name, submission=submission, submission_ids=submission_ids, report_md=report_md,
                       report_json=report_json, report_html=report_html, plots=plots, cv_table=cv_table,
                       answers_table=answers_table, params=post, cv=cv, features=features, fit=fit,
                       infold_fit=infold_fit, notes=notes)


def stack_fingerprint(cfg: StackConfig, features: FeatureSet) -> Fingerprint:
    """What made a stack: its config and, per run it read, that run's own fingerprint and the epoch used, so two
    submissions can be told apart (or matched) by their reports."""
    inputs = {}
    for choice in features.runs:
        for split in _fold_splits(cfg) + [f"all{cfg.split_suffix}"]:
            run = rundir.run_path(cfg.checkpoints_dir, choice.exp, split)
            inputs[f"{run.name} epoch {choice.epoch}"] = file_digest(rundir.fingerprint_path(run))
    return Fingerprint(config_identity(cfg, ("exp", "out_dir", "answers", "dataroot", "checkpoints_dir")), inputs)


def score_variants(features, fit, infold_fit, post, bounds, blend_exp, onehot_exp, test_ids, answers
                   ) -> pd.DataFrame:
    """RMSE on the answers for each stack variant x test-feature source, raw and post-processed, and for the
    target run alone. Only reported: every choice was made on out-of-fold predictions before this runs."""
    rows = []
    for variant, f in ((OOF_VARIANT, fit), (INFOLD_VARIANT, infold_fit)):
        if f is None:
            continue
        for source, pred in f.test.items():
            target_test, probs_test = _post_inputs(features, blend_exp, onehot_exp, source)
            steps = pp.apply_steps(pred, target_test, probs_test, post, bounds)
            rows.append({"variant": variant, "test_features": source,
                         "stack": score_answers(test_ids, steps["stack"], answers)["rmse"],
                         "post-processed": score_answers(test_ids, steps["clip"], answers)["rmse"]})
    if blend_exp:
        for source, means in features.view_mean_test.items():
            rows.append({"variant": f"{blend_exp} run alone", "test_features": source,
                         "stack": np.nan, "post-processed": score_answers(test_ids, means[blend_exp][:, 0],
                                                                          answers)["rmse"]})
    return pd.DataFrame(rows).set_index(["variant", "test_features"])


# ---- probability ensembling, re-distribution, pseudo labels


@dataclass
class EnsembleResult:
    runs: pd.DataFrame          # index exp: epoch, metric, score (mean over folds), lower_is_better, weight
    oof: np.ndarray             # [n_train, C] ensembled out-of-fold probabilities (train.csv order)
    test: np.ndarray            # [n_test, C] ensembled test probabilities (test.csv order)
    test_ids: np.ndarray
    cv_table: pd.DataFrame      # per run and the ensemble: OOF scores (accuracy, the competition's metric, ...)
    redistribution: ens.Redistribution | None
    redistribution_table: pd.DataFrame | None   # histograms before/after (test) and OOF effect
    labels: np.ndarray | None = None            # [n_test] the submitted classes (argmax or re-distributed)
    run_tests: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # each run's [n_test, C] alone
    answers_table: pd.DataFrame | None = None   # the competition's metric on the held-out answers
    probs_csv: Path | None = None
    submission: Path | None = None
    report_md: Path | None = None

    def summary(self) -> str:
        with pd.option_context("display.float_format", "{:.4f}".format, "display.width", 160):
            lines = [self.runs.to_string(), self.cv_table.to_string()]
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
    out = {"accuracy": float(np.mean(labels == y))}
    if competition.metric == "macro_f1":
        out["macro_f1"] = score("macro_f1", y, labels)
    if competition.kind == "ordinal":
        out["rmse_argmax"] = rmse(y, labels)
    return out


def _class_scores(y, probs, competition) -> dict:
    """`_label_scores` of the argmax, plus what needs the probabilities: top-5 accuracy, the expected class's RMSE."""
    out = _label_scores(y, probs.argmax(axis=1), competition)
    if competition.metric == "top5_accuracy":
        out["top5_accuracy"] = score("top5_accuracy", y, probs)
    if competition.kind == "ordinal":
        out["rmse_expected"] = rmse(y, _expected_class(probs))
    return out


def _ensemble_weights(runs: pd.DataFrame, ecfg) -> np.ndarray:
    """Hand-set `ensemble.weights` (every run named, normalised), or weights from the runs' out-of-fold scores."""
    if not ecfg.weights:
        return ens.ensemble_weights(runs["score"], ecfg.factor, bool(runs["lower_is_better"].iloc[0]))
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


PIXELS = "pixels"  # the ensemble member `ensemble.pixel_stats` adds


def pixel_member(cfg: StackConfig, features: FeatureSet,
                 competition: Competition) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """The class probabilities of a multiclass LightGBM on the photos' pixel features (the class baselines' model,
    averaged over `lgbm.bag` seeds), fit on the same split files as the runs: out of fold for the train rows (in
    `features`' order), from the `all` fit or the fold fits' mean for test (`ensemble.test_features`), and its
    per-fold scores, which weigh it like a run's."""
    from fold0123.stacking.class_baselines import lgbm_classifier, load_class_splits, predict_model
    from fold0123.stacking.pixel_stats import cache_file, pixel_features

    if competition.kind != "classification":
        raise RunError(f"ensemble.pixel_stats: for a classification competition ({cfg.dataroot} is "
                       f"{competition.kind}); a stack takes the pixel features with pixel_stats: true")
    data = load_class_splits(cfg.dataroot, cfg.folds)
    pixels = pixel_features(cfg.dataroot, data.ids + data.test_ids, cache_file(Path(cfg.checkpoints_dir) / "cache"))
    threads = int(cfg.lgbm.params.get("num_threads", 0))
    predicted = predict_model(data, lambda *a: lgbm_classifier(*a, threads=threads, bag=cfg.lgbm.bag),
                              pixels.frame, cfg.seed)
    source = cfg.ensemble.test_features
    oof = pd.DataFrame(predicted.oof, index=data.ids).loc[features.train.index].to_numpy()
    test = pd.DataFrame(predicted.test if source == "all" else predicted.test_fold_mean, index=data.test_ids)
    return oof, test.loc[features.test[source].index].to_numpy(), predicted.fold_scores


def ensemble_probabilities(cfg: StackConfig) -> EnsembleResult:
    """Weighted ensemble of the class probabilities of cfg.ensemble.runs (weights from their metrics), the
    submitted labels (argmax, or re-distributed with `ensemble.submit: redistributed`) and their scores."""
    ecfg = cfg.ensemble
    competition = read_competition(cfg.dataroot)
    features = build_features(cfg.dataroot, cfg.checkpoints_dir, ecfg.runs, k=cfg.folds,
                              aggregations="mean", split_suffix=cfg.split_suffix,
                              test_features=ecfg.test_features, infold=False)
    oof_probs, test_probs = ({run.exp: means[run.exp] for run in features.runs}
                             for means in (features.view_mean_oof, features.view_mean_test[ecfg.test_features]))
    rows = []
    for run in features.runs:
        if features.view_mean_oof[run.exp].shape[1] != competition.n_classes:
            raise RunError(f"ensemble run {run.exp!r} ({run.task}) does not output {competition.n_classes} class "
                           f"probabilities")
        at = choice_metrics(cfg.checkpoints_dir, run.exp, _fold_splits(cfg), run.epoch)  # an epoch or a soup
        rows.append({"exp": run.exp, "epoch": run.epoch, "metric": at["metric"].iloc[0],
                     "score": float(at["value"].mean()), "lower_is_better": bool(at["lower_is_better"].iloc[0])})
    if ecfg.pixel_stats:
        oof_probs[PIXELS], test_probs[PIXELS], fold_scores = pixel_member(cfg, features, competition)
        rows.append({"exp": PIXELS, "epoch": "-", "metric": competition.metric, "score": float(np.mean(fold_scores)),
                     "lower_is_better": competition.lower_is_better})
    runs = pd.DataFrame(rows).set_index("exp")
    if runs["lower_is_better"].nunique() > 1 or runs["metric"].nunique() > 1:
        raise RunError(f"ensemble runs must share one primary metric to weigh them: {runs['metric'].to_dict()}")
    runs["weight"] = _ensemble_weights(runs, ecfg)
    oof = ens.weighted_ensemble([oof_probs[e] for e in runs.index], runs["weight"])
    source = ecfg.test_features
    test = ens.weighted_ensemble([test_probs[e] for e in runs.index], runs["weight"])
    y = features.y.astype(int)
    cv_rows = {e: _class_scores(y, oof_probs[e], competition) for e in runs.index}
    cv_rows["weighted ensemble"] = _class_scores(y, oof, competition)
    cv_table = pd.DataFrame.from_dict(cv_rows, orient="index")

    redistribution = redistribution_table = None
    k = ecfg.redistribute_k
    if k > 0:
        redistribution = ens.redistribute_labels(test, k)
        k_oof = max(1, int(round(k * len(oof) / len(test))))  # the same share of the rows on OOF
        oof_red = ens.redistribute_labels(oof, k_oof)
        redistribution_table = pd.DataFrame({
            "test before": redistribution.before, "test after": redistribution.after,
            f"oof before (K={k_oof})": oof_red.before, "oof after": oof_red.after})
        redistribution_table.index.name = "class"
        label_scores = _label_scores(y, oof_red.labels, competition)
        cv_table.loc["ensemble, re-distributed", list(label_scores)] = list(label_scores.values())
    if ecfg.submit == "redistributed" and redistribution is None:
        raise RunError("ensemble.submit: redistributed needs ensemble.redistribute_k > 0")
    labels = redistribution.labels if ecfg.submit == "redistributed" else test.argmax(axis=1)
    return EnsembleResult(runs=runs, oof=oof, test=test, test_ids=np.asarray(features.test[source].index, str),
                          cv_table=cv_table, redistribution=redistribution,
                          redistribution_table=redistribution_table, labels=labels,
                          run_tests={e: test_probs[e] for e in runs.index})


def score_ensemble(result: EnsembleResult, answers: str | Path, competition) -> pd.DataFrame:
    """The competition's metric on the held-out answers for each run alone, the ensemble and what is submitted.
    Only reported: the weights and `submit` were chosen from out-of-fold scores before this runs."""
    metric = competition.metric
    # top-5 accuracy scores probabilities; the other metrics score the labels argmax (or re-distribution) gives
    rows = {**{f"{exp} alone": probs for exp, probs in result.run_tests.items()},
            "weighted ensemble (argmax)": result.test}
    if result.redistribution is not None:
        rows["weighted ensemble, re-distributed"] = result.redistribution.labels
    if metric != "top5_accuracy":
        rows = {name: (p.argmax(1) if p.ndim == 2 else p) for name, p in rows.items()}
    table = {name: score_answers(result.test_ids, pred, answers, metric=metric)[metric] for name, pred in rows.items()}
    return pd.Series(table, name=f"{metric} on the answers").to_frame()


def run_ensemble(cfg: StackConfig, stamp: str | None = None) -> EnsembleResult:
    """ensemble_probabilities + files in out_dir: `ensemble_{stamp}_probs.csv` (object_id, p0..p{K-1}, label
    [, label_redistributed]), the submission `ensemble_{stamp}_submission.csv` (object_id, target: the class
    index, label: its name) and `ensemble_{stamp}_report.md/json`."""
    result = ensemble_probabilities(cfg)
    competition = read_competition(cfg.dataroot)
    name = f"ensemble_{stamp or timestamp()}"
    out_dir = Path(cfg.out_dir)
    frame = pd.DataFrame(result.test, columns=[f"p{c}" for c in range(result.test.shape[1])])
    frame.insert(0, "object_id", result.test_ids)
    frame["label"] = result.test.argmax(axis=1)
    if result.redistribution is not None:
        frame["label_redistributed"] = result.redistribution.labels
    result.probs_csv = out_dir / f"{name}_probs.csv"
    write_csv(result.probs_csv, frame)
    names = np.asarray(competition.class_names, dtype=object)
    result.submission = out_dir / f"{name}_submission.csv"
    write_csv(result.submission, pd.DataFrame({"object_id": result.test_ids, "target": result.labels,
                                               "label": names[result.labels]}))
    notes = []
    if cfg.answers and Path(cfg.answers).is_file():
        result.answers_table = score_ensemble(result, cfg.answers, competition)
    elif cfg.answers:
        notes.append(f"answers {cfg.answers} not found: no score on held-out answers")
    tables = {"runs": result.runs, "oof_scores": result.cv_table}
    if result.redistribution_table is not None:
        tables["redistribution"] = result.redistribution_table
    if result.answers_table is not None:
        tables["answers"] = result.answers_table
    facts = {"factor": cfg.ensemble.factor, "test_features": cfg.ensemble.test_features,
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
    result = ensemble_probabilities(cfg)
    thr = cfg.ensemble.pseudo_thr
    competition = read_competition(cfg.dataroot)
    rows = pseudo_rows(result.test_ids, result.test, thr, read_train(cfg.dataroot), competition.train_columns,
                       competition.group_column)
    # cumulative: build on the splits the ensembled runs trained on (the last round's), keeping its rows
    cumulative = cfg.ensemble.pseudo_cumulative
    written = write_pseudo_splits(cfg.dataroot, cfg.folds, round_, rows,
                                  base_suffix=cfg.split_suffix if cumulative else "", cumulative=cumulative)
    per_class = rows["target"].value_counts().reindex(range(result.test.shape[1]), fill_value=0)
    write_json(Path(cfg.out_dir) / f"pseudo{round_}_report.json",
               {"round": round_, "thr": thr, "rows_added": len(rows), "per_class": per_class.tolist(),
                "n_test": len(result.test_ids), "written": [str(p) for p in written],
                "ensemble_oof": result.cv_table.to_dict(orient="index")})
    return PseudoResult(round=round_, rows=rows, per_class=per_class, written=written, thr=thr)
