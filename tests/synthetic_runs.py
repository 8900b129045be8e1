"""Contract-exact fake run directories with a known signal, for the tests of the stacking step.

`make_dataroot` writes a label-only dataroot (train.csv, test.csv, the {K}fold{k} and `all` split CSVs, the tag
vectors of dimension W2V_DIM; no photos) and `answers.csv` beside it. `make_runs` writes, for each task and each
split in split_names(K), what train.py and evaluate.py would: config.yml, eval/epoch{E}_{oof,test,train}.npz
(ids + outputs [n, 8, d] float32), eval/epoch{E}_metrics.json and DONE. The metrics, their primary and its
direction come from the task table (models.tasks), as evaluate.py's do. Every model's error on an object is its own
random draw, shrinking with the epoch, so averaging tasks (stacking) beats any single one; the `train` part
(in-fold) has a quarter of that error, like a model that saw those labels.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from fold0123.common import rundir
from fold0123.common.schema import RunConfig
from fold0123.common.io import atomic_path, write_csv, write_json, write_text
from fold0123.data.layout import read_csv, read_test, read_train, split_names, split_paths, tag_vectors_path
from fold0123.data.tags import vector_columns
from fold0123.models.tasks import get_task
from fold0123.stacking.runs import eval_path, run_dir

TASKS = ("target", "onehot", "sortingdate", "materialstechniques")
YEARS = {0: 1600.0, 1: 1700.0, 2: 1800.0, 3: 1880.0}
CENTERS = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]], float)  # each class's tag vector
W2V_DIM = CENTERS.shape[1]


def make_dataroot(root: str | Path, n_train: int = 240, n_test: int = 80, k: int = 3, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    root = Path(root)
    rows, series = [], 0
    while len(rows) < n_train + n_test:
        target = int(rng.integers(0, 4))
        for _ in range(int(rng.integers(1, 4))):
            rows.append(dict(object_id=f"{rng.integers(16 ** 12):012x}", sorting_date=YEARS[target] +
                             int(rng.integers(0, 50)), art_series_id=f"s{series:04d}", target=target))
        series += 1
    frame = pd.DataFrame(rows[: n_train + n_test])
    is_test = frame["art_series_id"].isin(frame["art_series_id"].iloc[n_train:])
    train, test = frame[~is_test].reset_index(drop=True), frame[is_test].reset_index(drop=True)
    write_csv(root / "train.csv", train)
    write_csv(root / "test.csv", test[["object_id"]])
    write_csv(root.parent / "answers.csv", test[["object_id", "target", "sorting_date"]])
    objects = pd.concat([train, test])
    vectors = pd.DataFrame(CENTERS[objects["target"].to_numpy(int)], columns=list(vector_columns(W2V_DIM)))
    vectors.insert(0, "object_id", objects["object_id"].to_numpy())
    write_csv(tag_vectors_path(root, W2V_DIM), vectors)  # what the materialstechniques metrics compare with
    groups = train["art_series_id"].unique()
    fold_of_series = dict(zip(rng.permutation(groups), np.arange(len(groups)) % k))
    fold = train["art_series_id"].map(fold_of_series).to_numpy()
    for i in range(k):
        train_path, test_path = split_paths(root, f"{k}fold{i}")
        write_csv(train_path, train[fold != i])
        write_csv(test_path, train[fold == i])
    train_path, test_path = split_paths(root, "all")
    write_csv(train_path, train)
    write_csv(test_path, test[["object_id"]])
    return root


def _predict(task: str, target: np.ndarray, year: np.ndarray, scale: float, rng) -> np.ndarray:
    """[n, 8, d] predictions: the truth plus this model's per-object error plus a little per-view noise."""
    n = len(target)
    if task == "target":
        base = (target + 0.7 * scale * rng.standard_normal(n))[:, None]
    elif task == "onehot":
        base = 3.0 * np.eye(4)[target] + 2.5 * scale * rng.standard_normal((n, 4))  # logits, softmaxed below
    elif task == "sortingdate":
        base = (year + 90.0 * scale * rng.standard_normal(n))[:, None]
    elif task == "materialstechniques":
        base = CENTERS[target] + 0.8 * scale * rng.standard_normal((n, 3))
    else:
        raise ValueError(f"synthetic: unknown task {task!r}")
    views = base[:, None, :] + 0.05 * max(scale, 0.2) * rng.standard_normal((n, 8, base.shape[1]))
    if task == "onehot":
        views = np.exp(views - views.max(axis=2, keepdims=True))
        views /= views.sum(axis=2, keepdims=True)
    return views.astype(np.float32)


def save_npz(path: Path, ids, outputs) -> None:
    """An eval npz as evaluate.py writes it (atomically)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, ids=np.asarray(ids, dtype=str), outputs=outputs)


def make_runs(checkpoints_dir: str | Path, dataroot: str | Path, tasks=TASKS, k: int = 3, epochs: int = 3,
              seed: int = 0, train_epochs=None, split_suffix: str = "") -> list[Path]:
    """Write one run per (task, split); experiment name = task. `train_epochs`: epochs with a `train` part
    (default: all). Returns the run directories."""
    dataroot = Path(dataroot)
    columns = ["object_id", "target", "sorting_date"]
    answers = read_csv(dataroot.parent / "answers.csv", tuple(columns))
    truth = pd.concat([read_train(dataroot)[columns], answers[columns]]).set_index("object_id")
    test_ids = read_test(dataroot)["object_id"].to_numpy()
    train_epochs = range(1, epochs + 1) if train_epochs is None else train_epochs
    rng = np.random.default_rng(seed)
    runs = []
    for task in tasks:
        table = get_task(task)
        for split in split_names(k):
            split_name = f"{split}{split_suffix}"
            run = run_dir(checkpoints_dir, task, split_name)
            train_path, test_path = split_paths(dataroot, split_name)
            part_ids = {"train": read_csv(train_path, ("object_id",))["object_id"].to_numpy(), "test": test_ids}
            if split != "all":
                part_ids["oof"] = read_csv(test_path, ("object_id",))["object_id"].to_numpy()
            cfg = {"task": task, "exp": task, "split": split_name, "folds": k, "seed": seed,
                   "dataroot": str(dataroot), "epochs": epochs, "w2v_dim": W2V_DIM}
            write_text(rundir.config_path(run), yaml.safe_dump(cfg))
            cfg = RunConfig(**cfg)
            for epoch in range(1, epochs + 1):
                scale = 1.0 + 1.0 / epoch  # every epoch a little better
                views = {}
                for part, ids in part_ids.items():
                    if part == "train" and epoch not in train_epochs:
                        continue
                    rows = truth.loc[ids]
                    views[part] = _predict(task, rows["target"].to_numpy(int), rows["sorting_date"].to_numpy(float),
                                           scale * (0.25 if part == "train" else 1.0), rng)
                    save_npz(eval_path(run, epoch, part), ids, views[part])
                metrics = {"epoch": epoch, "task": task, "split": split_name, "n": 0, "primary": table.primary,
                           "lower_is_better": table.lower_is_better, "views": {"mean": {}, "identity": {}}}
                if "oof" in views:
                    rows = truth.loc[part_ids["oof"]].reset_index()
                    metrics["n"] = len(rows)
                    metrics["views"] = {"mean": table.metrics(views["oof"].mean(axis=1), rows, dataroot, cfg),
                                        "identity": table.metrics(views["oof"][:, 0], rows, dataroot, cfg)}
                write_json(rundir.metrics_path(run, rundir.epoch_tag(epoch)), metrics)
            write_text(rundir.done_path(run), "")
            runs.append(run)
    return runs
