"""Per-object feature tables from run outputs (the 8 views aggregated, concatenated across experiments), and the
extra columns a stack or a baseline may add: pixel statistics (data.pixel_stats) and the bag of tags.

Feature columns are named `{exp}_{func}_{j}` (func in mean|max|min|var|std|median, j the output dimension) and,
with raw views, `{exp}_{view}_{j}`. Every table is a DataFrame indexed by object_id:
  FeatureSet.train            train.csv rows in train.csv order; each row's features come from the fold run that
                              held it out (out-of-fold), so the stack learns from predictions like the test ones
  FeatureSet.test[source]     test.csv rows in test.csv order; source 'all' = the `all` run's outputs,
                              'fold_mean' = the mean over the fold runs of their aggregated test features
  FeatureSet.infold[k]        fold k's train rows, from fold run k itself (the original's in-fold variant: each
                              model's outputs on rows it trained on; kept only to compare against)
'fold_mean' averages the aggregated features rather than the raw views, so a `var` feature keeps the scale it
has in the out-of-fold table (averaging the views of three models first would shrink it).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from fold0123.common.config import ConfigError
from fold0123.common import rundir
from fold0123.common.rundir import VIEWS, RunError
from fold0123.data.layout import TAG_TABLES, LayoutError, read_csv, read_test, read_train, split_paths
from fold0123.data.pixel_stats import dataroot_cache, pixel_features
from fold0123.data.tags import frequent_tokens, multi_hot, read_tokens
from fold0123.stacking.runs import (eval_path, fold_splits, load_outputs, resolve_epoch, round_entry, run_dir,
                                    run_task)

AGGREGATIONS = {
    "mean": lambda x: x.mean(axis=1),
    "max": lambda x: x.max(axis=1),
    "min": lambda x: x.min(axis=1),
    "var": lambda x: x.var(axis=1),
    "std": lambda x: x.std(axis=1),
    "median": lambda x: np.median(x, axis=1),
}
TEST_SOURCES = ("all", "fold_mean")
MIN_TAG_OBJECTS = 2        # a tag becomes a column when at least this many objects carry it


def parse_aggregations(spec) -> tuple[str, ...]:
    """'mean,max,min,var' (the original's `aug(funcs=...)`) or a list -> validated tuple."""
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    unknown = [n for n in names if n not in AGGREGATIONS]
    if unknown or not names:
        raise ConfigError(f"aggregations {spec!r}: unknown {unknown} (choose from {', '.join(AGGREGATIONS)})")
    return tuple(names)


def aggregate_views(outputs: np.ndarray, funcs, raw_views: bool = False, prefix: str = "") -> pd.DataFrame:
    """[n, 8, d] -> [n, (len(funcs) + 8 * raw_views) * d] table with named columns (no index); [n, 1, d] (the
    views' mean, _aligned's mean_only) gives the same `mean` columns."""
    blocks, names = [], []
    d = outputs.shape[2]
    for func in funcs:
        blocks.append(AGGREGATIONS[func](outputs))
        names += [f"{prefix}{func}_{j}" for j in range(d)]
    if raw_views:
        for v, view in enumerate(VIEWS):
            blocks.append(outputs[:, v, :])
            names += [f"{prefix}{view}_{j}" for j in range(d)]
    return pd.DataFrame(np.concatenate(blocks, axis=1).astype(np.float64), columns=names)


def read_folds(dataroot: str | Path, k: int, split_suffix: str = "") -> pd.Series:
    """object_id -> fold index, from the dataroot's `{K}fold{k}{suffix}_test.csv` (the runs' held-out parts)."""
    parts = []
    for fold, split in enumerate(fold_splits(k, split_suffix)):
        path = split_paths(dataroot, split)[1]
        ids = read_csv(path, ("object_id",))["object_id"]
        parts.append(pd.Series(fold, index=ids.to_numpy()))
    folds = pd.concat(parts)
    if folds.index.duplicated().any():
        dup = folds.index[folds.index.duplicated()][0]
        raise LayoutError(f"{dataroot}: object_id {dup!r} is held out by more than one of the {k} folds")
    return folds


@dataclass
class RunChoice:
    exp: str
    task: str
    epoch: int | str  # an epoch number, or an eval tag such as `soup5`, `ema3` (stacking.runs.resolve_epoch)


@dataclass
class FeatureSet:
    """Everything the stack and the post-processing read; see the module docstring for the layout."""
    runs: list[RunChoice]
    train: pd.DataFrame
    y: np.ndarray                     # train.csv target, aligned with `train`
    folds: np.ndarray                 # fold of each train row (the group folds the runs used)
    test: dict[str, pd.DataFrame]     # 'all' and/or 'fold_mean'
    view_mean_oof: dict[str, np.ndarray]               # exp -> [n_train, d]: mean of the views, OOF
    view_mean_test: dict[str, dict[str, np.ndarray]]   # source -> exp -> [n_test, d]
    infold: list[pd.DataFrame] | None = None           # fold k -> its train rows' in-fold features
    infold_y: list[np.ndarray] | None = None
    notes: list[str] = field(default_factory=list)

    def exp_of_task(self, task: str) -> str | None:
        return next((r.exp for r in self.runs if r.task == task), None)


def _tables(dataroot, k: int, split_suffix: str):
    """(train.csv, its ids, test.csv's ids, object_id -> fold, each train row's fold): every train object must be
    held out by exactly one fold."""
    train_df = read_train(dataroot)
    train_ids, test_ids = pd.Index(train_df["object_id"]), pd.Index(read_test(dataroot)["object_id"])
    fold_of = read_folds(dataroot, k, split_suffix)
    not_held_out = train_ids.difference(fold_of.index)
    if len(not_held_out):
        raise LayoutError(f"{dataroot}: {len(not_held_out)} train.csv object(s) are in no {k}fold*_test.csv, "
                          f"e.g. {not_held_out[0]!r} (re-run SGKFold.py)")
    return train_df, train_ids, test_ids, fold_of, fold_of.loc[train_ids].to_numpy()


def _positions(out, order: pd.Index, what: str, like=None) -> np.ndarray:
    """The position in `out` of each id of `order`, all of which must be there; with `like` (the first OOF file)
    the width must be that file's."""
    if like is not None and out.outputs.shape[2] != like.outputs.shape[2]:
        raise RunError(f"{out.path}: outputs {out.outputs.shape[2]} wide where {like.path} has "
                       f"{like.outputs.shape[2]}: a run of another config or task")
    position = pd.Series(np.arange(len(out.ids)), index=out.ids)
    missing = order.difference(position.index)
    if len(missing):
        hint = " (evaluated before a test set was added or changed? evaluate.py --run RUN --epoch E redoes it)" \
            if "test" in what else ""
        raise RunError(f"{out.path}: {what}: {len(missing)} object_id(s) missing, e.g. {missing[0]!r}{hint}")
    return position.loc[order].to_numpy()


def _aligned(out, order: pd.Index, what: str, like=None, mean_only: bool = False) -> np.ndarray:
    """Rows of an eval file in the order of `order`, `[n, 8, d]`, or `[n, 1, d]` (the views' mean) with
    `mean_only`, which any form gives; without it the file must hold all 8 views."""
    if not mean_only:
        out.require_all_views("aggregations other than mean (max, min, var, ...) and raw views")
    rows = _positions(out, order, what, like)
    return out.view("mean", rows)[:, None] if mean_only else out.rows(rows)


def _oof_outputs(dataroot, checkpoints_dir, exp: str, splits: list[str], epoch, fold_of: pd.Series) -> list:
    """The fold runs' OOF eval files of `exp` at `epoch`; fold run i must predict exactly fold i's held-out rows."""
    outs = [load_outputs(run_dir(checkpoints_dir, exp, split), epoch, "oof") for split in splits]
    for i, (split, out) in enumerate(zip(splits, outs)):
        held = fold_of.index[fold_of.to_numpy() == i]
        if set(out.ids) != set(held):
            raise RunError(f"{out.path}: its ids differ from {split_paths(dataroot, split)[1]} "
                           f"({len(out.ids)} vs {len(held)} rows): a stale run or other folds")
    return outs


def check_finished(checkpoints_dir: str | Path, runs: dict, splits: list[str]) -> None:
    """RunError listing every existing run directory of `runs` x `splits` without DONE (a run still training, or
    one that failed: its last evaluated epoch is not what the config asked for); a missing one is left to the
    readers, which name the file they lack."""
    unfinished = [run for exp in runs for split in splits
                  if (run := run_dir(checkpoints_dir, exp, split)).is_dir() and not rundir.done_path(run).is_file()]
    if unfinished:
        raise RunError(f"{len(unfinished)} run(s) without {rundir.DONE} (still training or failed): "
                       f"{', '.join(map(str, unfinished))}; finish them, or set allow_unfinished: true to stack them")


def build_features(dataroot: str | Path, checkpoints_dir: str | Path, runs: dict, k: int = 3,
                   aggregations="mean,max,min,var", raw_views: bool = False, split_suffix: str = "",
                   test_features: str = "all", infold="auto", allow_unfinished: bool = False) -> FeatureSet:
    """Load the chosen runs (`{exp: 'last' | 'best' | epoch | 'soup<N>' | 'ema'}`) and build the feature tables.

    The `test_features` source must exist; the other one is built too when its files exist, so the report can
    compare them. `infold`: True requires every fold run's `train` part at the chosen epoch, 'auto' builds the
    in-fold tables only if all exist, False skips them. A chosen run without DONE (its `all` run too, where one
    exists) is refused, naming every such run, unless `allow_unfinished` (`check_finished`).
    """
    if test_features not in TEST_SOURCES:
        raise ConfigError(f"test_features must be one of {TEST_SOURCES}, got {test_features!r}")
    funcs = parse_aggregations(aggregations)
    mean_only = funcs == ("mean",) and not raw_views  # then every eval form will do (eval.views: mean too)
    train_df, train_ids, test_ids, fold_of, folds = _tables(dataroot, k, split_suffix)
    splits = fold_splits(k, split_suffix)
    all_split = f"all{split_suffix}"
    if not runs:
        raise ConfigError("no runs chosen: the config's `runs` must name at least one experiment")
    if not allow_unfinished:
        check_finished(checkpoints_dir, runs, splits + [all_split])

    choices, train_blocks, view_mean_oof = [], [], {}
    test_blocks = {source: [] for source in TEST_SOURCES}
    view_mean_test = {source: {} for source in TEST_SOURCES}
    infold_blocks: list[list[pd.DataFrame]] = [[] for _ in range(k)]
    notes, use_infold, all_test_ok = [], infold, True
    for exp, spec in runs.items():
        epoch = resolve_epoch(checkpoints_dir, exp, splits, spec)
        choice = RunChoice(exp=exp, task=run_task(checkpoints_dir, exp, splits[0]), epoch=epoch)
        choices.append(choice)
        prefix = f"{exp}_"
        # out-of-fold: fold run i predicts exactly fold i's held-out rows
        oof_outs = _oof_outputs(dataroot, checkpoints_dir, exp, splits, epoch, fold_of)
        oof = np.zeros((len(train_ids), 1 if mean_only else len(VIEWS), oof_outs[0].outputs.shape[2]), np.float32)
        for i, out in enumerate(oof_outs):
            oof[folds == i] = _aligned(out, train_ids[folds == i], "oof rows", oof_outs[0], mean_only)
        train_blocks.append(aggregate_views(oof, funcs, raw_views, prefix))
        view_mean_oof[exp] = oof.mean(axis=1)
        # test: the `all` run, and the mean of the fold runs' aggregated test features
        fold_tests = [_aligned(load_outputs(run_dir(checkpoints_dir, exp, s), epoch, "test"), test_ids, "test rows",
                               oof_outs[0], mean_only) for s in splits]
        test_blocks["fold_mean"].append(
            sum(aggregate_views(t, funcs, raw_views, prefix) for t in fold_tests) / len(fold_tests))
        view_mean_test["fold_mean"][exp] = np.mean([t.mean(axis=1) for t in fold_tests], axis=0)
        all_run = run_dir(checkpoints_dir, exp, all_split)
        if all_test_ok and (eval_path(all_run, epoch, "test").is_file() or test_features == "all"):
            all_test = _aligned(load_outputs(all_run, epoch, "test"), test_ids, "test rows", oof_outs[0], mean_only)
            test_blocks["all"].append(aggregate_views(all_test, funcs, raw_views, prefix))
            view_mean_test["all"][exp] = all_test.mean(axis=1)
        elif all_test_ok:
            all_test_ok = False
            notes.append(f"test features 'all': {eval_path(all_run, epoch, 'test')} missing, compared 'fold_mean' only")
        # in-fold: fold run i's outputs on its own train rows
        if use_infold:
            paths = [eval_path(run_dir(checkpoints_dir, exp, s), epoch, "train") for s in splits]
            missing = [p for p in paths if not p.is_file()]
            if missing and use_infold == "auto":
                notes.append(f"in-fold variant skipped: {missing[0]} missing (set eval.train_epochs in the run config)")
                use_infold = False
            else:
                for i, split in enumerate(splits):
                    out = load_outputs(run_dir(checkpoints_dir, exp, split), epoch, "train")
                    rows = pd.Index(out.ids).intersection(train_ids[folds != i], sort=False)  # drops pseudo rows
                    if len(rows) == 0:
                        raise RunError(f"{out.path}: no rows of {split}'s train part")
                    frame = aggregate_views(_aligned(out, rows, "train rows", oof_outs[0], mean_only), funcs,
                                            raw_views, prefix)
                    infold_blocks[i].append(frame.set_index(rows))

    train = pd.concat(train_blocks, axis=1).set_index(train_ids)
    if not all_test_ok:
        del test_blocks["all"]
    test = {source: pd.concat(blocks, axis=1).set_index(test_ids) for source, blocks in test_blocks.items()}
    view_mean_test = {source: means for source, means in view_mean_test.items() if source in test}
    y = train_df["target"].to_numpy(dtype=float)
    infold_tables = infold_y = None
    if use_infold:
        infold_tables = [pd.concat(blocks, axis=1) for blocks in infold_blocks]
        target = pd.Series(y, index=train_ids)
        infold_y = [target.loc[t.index].to_numpy() for t in infold_tables]
    return FeatureSet(runs=choices, train=train, y=y, folds=folds, test=test, view_mean_oof=view_mean_oof,
                      view_mean_test=view_mean_test, infold=infold_tables, infold_y=infold_y, notes=notes)


# ---- the views' mean of each run, read in chunks of rows (probability ensembles, issue 23)

@dataclass
class MeanRows:
    """One run's views' mean for every row of a table (train.csv or test.csv order), read a chunk of rows at a
    time from the mapped eval files, so a reader's memory follows the chunk, not the table: row i comes from the
    one file holding it (out of fold; the `all` run's test), or, `average`, is the mean over the files (the fold
    runs' test rows, `fold_mean`)."""
    files: list
    positions: list[np.ndarray]  # per file: each table row's position in it, -1 where the file lacks the row
    average: bool = False

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.positions[0]), int(self.files[0].outputs.shape[2])

    def read(self, start: int, stop: int) -> np.ndarray:
        """`[stop - start, d]` float32."""
        out = np.zeros((min(stop, self.shape[0]) - start, self.shape[1]), np.float32)
        for file, position in zip(self.files, self.positions):
            rows = position[start:stop]
            have = rows >= 0
            if have.all() and self.average:
                out += file.view("mean", rows)
            elif have.any():
                out[have] = file.view("mean", rows[have])
        return out / len(self.files) if self.average else out


@dataclass
class MeanSources:
    """What a probability ensemble reads: per chosen run its views' mean out of fold and on test, as MeanRows."""
    runs: list[RunChoice]
    train_ids: pd.Index
    test_ids: pd.Index
    y: np.ndarray
    folds: np.ndarray            # each train row's fold (the one whose run holds it out)
    oof: dict[str, MeanRows]     # exp -> train rows, out of fold
    test: dict[str, MeanRows]    # exp -> test rows, from `test_features` ('all' or 'fold_mean')


def mean_sources(dataroot: str | Path, checkpoints_dir: str | Path, runs: dict, k: int = 3, split_suffix: str = "",
                 test_features: str | None = "all", allow_unfinished: bool = False) -> MeanSources:
    """build_features' checks and choices (epochs, finished runs, fold ids, widths) for the views' means only,
    mapped, not read: any eval form will do (eval.views: mean too). `test_features` None: out of fold only (what
    label cleaning reads; the runs need no test part and no `all` run)."""
    if test_features is not None and test_features not in TEST_SOURCES:
        raise ConfigError(f"test_features must be one of {TEST_SOURCES}, got {test_features!r}")
    if not runs:
        raise ConfigError("no runs chosen: the config's `runs` must name at least one experiment")
    train_df, train_ids, test_ids, fold_of, folds = _tables(dataroot, k, split_suffix)
    choices, oof, test = [], {}, {}
    for name, spec in runs.items():  # `exp`, or `exp@_pseudo2`: another round's runs (stacking.runs.round_entry)
        exp, suffix = round_entry(name, split_suffix)
        splits, all_split = fold_splits(k, suffix), f"all{suffix}"
        if not allow_unfinished:
            check_finished(checkpoints_dir, {exp: spec}, splits + ([all_split] if test_features == "all" else []))
        epoch = resolve_epoch(checkpoints_dir, exp, splits, spec)
        choices.append(RunChoice(exp=name, task=run_task(checkpoints_dir, exp, splits[0]), epoch=epoch))
        outs = _oof_outputs(dataroot, checkpoints_dir, exp, splits, epoch, fold_of)
        positions = []
        for i, out in enumerate(outs):
            position = np.full(len(train_ids), -1, np.int64)
            position[folds == i] = _positions(out, train_ids[folds == i], "oof rows", outs[0])
            positions.append(position)
        oof[name] = MeanRows(outs, positions)
        if test_features is None:
            continue
        test_runs = ([run_dir(checkpoints_dir, exp, all_split)] if test_features == "all"
                     else [run_dir(checkpoints_dir, exp, split) for split in splits])
        files = [load_outputs(run, epoch, "test") for run in test_runs]
        test[name] = MeanRows(files, [_positions(f, test_ids, "test rows", outs[0]) for f in files],
                              average=test_features == "fold_mean")
    return MeanSources(runs=choices, train_ids=train_ids, test_ids=test_ids,
                       y=train_df["target"].to_numpy(dtype=float), folds=folds, oof=oof, test=test)


def with_pixel_statistics(features: FeatureSet, dataroot: str | Path) -> FeatureSet:
    """`features` with each object's photo statistics (data.pixel_stats, `px_*` columns) beside the runs'
    outputs, in every table: a strong tabular baseline's inputs, so the stack can use what the nets missed."""
    return with_extra_columns(features, pixel_features(dataroot, object_ids(features), dataroot_cache(dataroot)).frame)


def with_tag_features(features: FeatureSet, dataroot: str | Path) -> FeatureSet:
    """`features` with each object's bag of tags (bag_of_tags): only for a dataroot whose test objects have tags
    (e.g. the emoji build's --test-tags); atmaCup #11's had none, so this is off by default."""
    test_ids = list(next(iter(features.test.values())).index)
    reason = tags_skip_reason(dataroot, test_ids)
    if reason:
        raise LayoutError(f"{dataroot}: tag_features: {reason}")
    return with_extra_columns(features, bag_of_tags(dataroot, object_ids(features)))


def with_extra_columns(features: FeatureSet, extra: pd.DataFrame) -> FeatureSet:
    """`features` with `extra` (indexed by object_id, every train and test object) beside the runs' outputs in
    the train, test and in-fold tables."""
    def join(frame: pd.DataFrame) -> pd.DataFrame:
        return pd.concat([frame, extra.loc[frame.index].set_axis(frame.index)], axis=1)

    return replace(features, train=join(features.train),
                   test={source: join(frame) for source, frame in features.test.items()},
                   infold=None if features.infold is None else [join(frame) for frame in features.infold])


def object_ids(features: FeatureSet) -> list[str]:
    return list(features.train.index) + list(next(iter(features.test.values())).index)


def bag_of_tags(dataroot: str | Path, object_ids) -> pd.DataFrame:
    """One 0/1 column per tag token carried by at least MIN_TAG_OBJECTS objects, plus each object's number of
    materials and techniques; indexed by object_id in the order given (untagged objects: all zeros)."""
    tokens = read_tokens(dataroot)
    ids = pd.Index([str(i) for i in object_ids], name="object_id")
    tokens = tokens[tokens["object_id"].isin(ids)].drop_duplicates(["object_id", "token"])
    vocabulary = frequent_tokens(tokens, MIN_TAG_OBJECTS)
    counts = [tokens[tokens["table"] == table]["object_id"].value_counts().reindex(ids, fill_value=0)
              for table in TAG_TABLES]
    values = np.column_stack([multi_hot(tokens, vocabulary, ids), *counts]).astype(np.float32)
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
