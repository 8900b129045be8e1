"""LightGBM stacking, the step `stack.py` runs for a regression or ordinal competition (parameters/stack.yml):

run_stack(cfg) -> StackResult     features -> OOF LightGBM stack (+ the in-fold variant) -> tuned post-processing
                                  -> submission, report (md, json, html), plots in cfg.out_dir
Its `summary()` is what the CLI prints. The level-2 models are stacking.cv's `cross_validate`:

`oof_stack` is the honest one: every training row's features are out-of-fold, and the level-2 model is
cross-validated on the same group folds, its rounds chosen by early stopping with each other training fold held
out in turn (the mean best iteration), then refit on all training folds; a final model on all rows runs
round(mean chosen rounds x `lgbm.coef`) rounds to predict test. Early stopping on the scored fold, as the
original did, makes the CV optimistic. `infold_stack` is the original's variant, kept to compare against: fold
k's model learns from fold run k's outputs on its own training rows and early-stops on fold k's held-out rows.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from fold0123.common import rundir
from fold0123.common.fingerprint import Fingerprint, config_identity, file_digest
from fold0123.common.io import write_csv
from fold0123.common.errors import UsageError
from fold0123.common.schema import LgbmOptions, StackConfig
from fold0123.data.answers import score_answers
from fold0123.data.competition import read_competition
from fold0123.data.layout import read_test
from fold0123.data.metrics import cv_row, fold_rmse, rmse
from fold0123.reports.html import stack_html
from fold0123.reports.markdown import (cv_per_epoch_figure, importance_figure, save_figure, stem, write_report,
                                       write_submission)
from fold0123.stacking import postprocess as pp
from fold0123.stacking.cv import CVResult, cross_validate, each_fold, fold_cv, scored_fold
from fold0123.stacking.features import FeatureSet, build_features, with_pixel_statistics, with_tag_features
from fold0123.stacking.runs import RunError, as_target, choice_label, choice_metrics, fold_splits, metrics_table


# Row names of the report's CV table and variants of its answers table: the ablation table reads them back.
OOF_ROW, INFOLD_ROW = "stack (out-of-fold)", "stack, in-fold variant (original)"
NESTED_ROW = "post-processing tuned on the other folds (nested)"
OOF_VARIANT, INFOLD_VARIANT = "out-of-fold stack", "in-fold stack (original)"


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
    return {"name": name, "metric": metric, **cv_row(scores, oof)}


def single_task_rows(cfg: StackConfig, features: FeatureSet) -> tuple[list[dict], pd.DataFrame]:
    """Each chosen run's own primary metric per fold at its chosen epoch, plus its target RMSE where it has one
    (target: the prediction; onehot: the expected class). Also returns every epoch's metrics (for the plot)."""
    rows, tables, splits = [], [], fold_splits(cfg.folds, cfg.split_suffix)
    for run in features.runs:
        tables.append(metrics_table(cfg.checkpoints_dir, run.exp, splits))
        at = choice_metrics(cfg.checkpoints_dir, run.exp, splits, run.epoch)  # an epoch or a soup
        rows.append(_row(f"{run.exp} [{run.task}] {choice_label(run.epoch)}", at["value"].tolist(),
                         metric=at["metric"].iloc[0]))
        if run.task in ("target", "onehot"):
            pred = as_target(run.task, features.view_mean_oof[run.exp])
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
    report_html: Path                  # the self-contained HTML report (reports.html.stack_html)
    plots: dict[str, Path]
    cv_table: pd.DataFrame             # index name; metric, fold0.., mean, std, oof
    answers_table: pd.DataFrame | None  # rmse on the held-out answers per variant / test source / step
    params: pp.PostParams
    cv: float                          # OOF RMSE of the submitted (fully post-processed) predictions
    features: FeatureSet = field(repr=False)
    fit: CVResult = field(repr=False)
    infold_fit: CVResult | None = field(repr=False, default=None)
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


def oof_stack(X: pd.DataFrame, y, folds, tests: dict[str, pd.DataFrame], lgbm: LgbmOptions = LgbmOptions(),
              seed: int = 0) -> CVResult:
    """The OOF stack (module docstring): `best_iterations` holds each outer fold's chosen rounds, `rounds` the
    final model's, `importance` the final model's."""
    if len(np.unique(folds)) < 3:
        raise UsageError("the OOF stack needs at least 3 folds: each fold's rounds are chosen on an inner split "
                         "of the other folds")
    return cross_validate(X, np.asarray(y, float), fold_cv(folds), tests, lgbm=lgbm, seed=seed,
                          inner=each_fold(folds), final_coef=lgbm.coef)


def infold_stack(infold_X: list[pd.DataFrame], infold_y: list[np.ndarray], X: pd.DataFrame, y, folds,
                 tests: dict[str, pd.DataFrame], lgbm: LgbmOptions = LgbmOptions(), seed: int = 0) -> CVResult:
    """The original's in-fold stack (module docstring); test = the mean of the fold models' predictions. Fold k
    trains on the rows of `infold_X[k]`, appended below X's."""
    blocks = np.cumsum([len(X)] + [len(t) for t in infold_X])
    cv = [(np.arange(start, stop), held) for start, stop, (_, held) in zip(blocks[:-1], blocks[1:], fold_cv(folds))]
    result = cross_validate(pd.concat([X, *(t[X.columns] for t in infold_X)], ignore_index=True),
                            np.concatenate([np.asarray(y, float), *infold_y]), cv, tests, lgbm=lgbm, seed=seed,
                            inner=scored_fold)
    return replace(result, oof=result.oof[:len(X)])


def run_stack(cfg: StackConfig, stamp: str | None = None) -> StackResult:
    features = build_features(cfg.dataroot, cfg.checkpoints_dir, cfg.runs, k=cfg.folds,
                              aggregations=cfg.aggregations, raw_views=cfg.raw_views,
                              split_suffix=cfg.split_suffix, test_features=cfg.test_features,
                              infold=cfg.infold, allow_unfinished=cfg.allow_unfinished)
    if cfg.pixel_stats:
        features = with_pixel_statistics(features, cfg.dataroot)
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
    fit = oof_stack(features.train, features.y, features.folds, features.test, cfg.lgbm, cfg.seed)
    infold_fit = None
    if features.infold is not None:
        infold_fit = infold_stack(features.infold, features.infold_y, features.train, features.y, features.folds,
                                  features.test, cfg.lgbm, cfg.seed)

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
        rows.append(_row(INFOLD_ROW, infold_fit.scores, rmse(features.y, infold_fit.oof)))
    for step in pp.STEPS:
        label = OOF_ROW if step == "stack" else f"  + {step}"
        rows.append(_row(label, steps.loc[step, [c for c in steps.columns if c.startswith("fold")]].tolist(),
                         float(steps.loc[step, "oof"])))
    rows.append(_row(NESTED_ROW, fold_rmse(features.y, nested, features.folds), nested_cv))
    cv_table = pd.DataFrame(rows).set_index("name")
    # the CV of what is submitted, with the tuning scored nested: the steps' own "+ clip" row is optimistic
    cv = nested_cv if keep else raw_cv

    source = cfg.test_features
    test_ids = features.test[source].index.to_numpy()  # test.csv's ids, in its order
    target_test, probs_test = _post_inputs(features, blend_exp, onehot_exp, source)
    final = pp.apply_steps(fit.test[source], target_test, probs_test, post, bounds)["clip"]

    # everything that can refuse (the answers file, the runs' fingerprints) runs before the first write
    answers_table = None
    answers = cfg.answers
    if answers and Path(answers).is_file():
        answers_table = score_variants(features, fit, infold_fit, post, bounds, blend_exp, onehot_exp, test_ids,
                                       answers)
    elif answers:
        notes.append(f"answers {answers} not found: no score on held-out answers")
    fingerprint = asdict(stack_fingerprint(cfg, features))

    name = stem(cv, stamp)
    out_dir = Path(cfg.out_dir)
    test_sets = read_test(cfg.dataroot).set_index("object_id")["test_set"].loc[test_ids].to_numpy()
    submission, submission_ids = write_submission(out_dir, name, test_ids, final, test_sets)
    plots = {"cv_per_epoch": save_figure(cv_per_epoch_figure(epoch_metrics), out_dir / f"{name}_cv_per_epoch.png"),
             "importance": save_figure(importance_figure(fit.importance), out_dir / f"{name}_importance.png")}
    write_csv(out_dir / f"{name}_importance.csv", fit.importance)
    write_csv(out_dir / f"{name}_epoch_metrics.csv", epoch_metrics)
    # every train row's label, fold and out-of-fold predictions, for reports (confusion matrix, OOF vs in-fold)
    oof_frame = pd.DataFrame({"object_id": features.train.index, "target": features.y, "fold": features.folds,
                              "stack": fit.oof, "submitted": oof_steps["clip"] if not keep else nested})
    if infold_fit is not None:
        oof_frame["stack_infold"] = infold_fit.oof
    write_csv(out_dir / f"{name}_oof.csv", oof_frame)

    tables = {"cv": cv_table, "postprocess_grid": grid.nsmallest(10, "rmse").set_index("ratio")}
    if answers_table is not None:
        tables["answers"] = answers_table
    facts = {"cv": cv, "cv_postprocess_tuned_on_all_oof": float(steps.loc["clip", "oof"]) if keep else None,
             "postprocess_kept": keep, "postprocess": post.as_dict(), "runs": [vars(r) for r in features.runs],
             "test_features": source, "best_iterations": fit.best_iterations, "final_rounds": fit.rounds,
             "lgbm_tuned": fit.tuned or None,  # lgbm.tune: each fold's (then the final model's) chosen parameters
             "n_features": features.train.shape[1], "n_train": len(features.y), "n_test": len(test_ids),
             "submission": submission, "plots": plots, "fingerprint": fingerprint}
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
        for split in fold_splits(cfg.folds, cfg.split_suffix) + [f"all{cfg.split_suffix}"]:
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
