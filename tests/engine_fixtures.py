"""Shared set-up of the engine tests (train, evaluate, watch): a tiny dataroot with folds and tag vectors, and
one pretext + transfer run made once per session (they cost seconds, and three test files read them)."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fold0123.common import rundir
from fold0123.common.config import dump_config, load_config
from fold0123.common.schema import RunConfig, StackConfig
from fold0123.data.layout import tag_vectors_path
from fold0123.data.tags import vector_columns
from fold0123.engine import saver, trainer
from tests.fixtures import make_dataroot

ROOT = Path(__file__).resolve().parents[1]


def write_tag_vectors(dataroot: Path, dim: int = 20) -> Path:
    """materialstechniques_w2v{dim}.csv with vectors that depend on the target (word2vec.py's output layout)."""
    train = pd.read_csv(dataroot / "train.csv", dtype={"object_id": str})
    test = pd.read_csv(dataroot / "test.csv", dtype={"object_id": str})
    answers = pd.read_csv(dataroot.parent / "answers.csv", dtype={"object_id": str})
    frame = pd.concat([train[["object_id", "target"]], answers[["object_id", "target"]]])
    frame = frame.set_index("object_id").loc[list(train["object_id"]) + list(test["object_id"])]
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, dim))
    vectors = centres[frame["target"].to_numpy(int)] + 0.1 * rng.normal(size=(len(frame), dim))
    out = pd.DataFrame(vectors, columns=list(vector_columns(dim)))
    out.insert(0, "object_id", frame.index)
    path = tag_vectors_path(dataroot, dim)
    out.to_csv(path, index=False)
    return path


def make_recipe_root(root: Path, tags: bool = True) -> Path:
    """A 32 px fixture dataroot with 3 folds (SGKFold's writer) and, optionally, the tag vectors."""
    from fold0123.data.folds import write_folds

    dataroot = make_dataroot(root)
    write_folds(dataroot, k=3, batch_size=None, seed=0)
    if tags:
        write_tag_vectors(dataroot)
    return dataroot


def tiny_config(task: str, dataroot: Path, runs: Path, *overrides: str) -> RunConfig:
    return load_config(ROOT / "parameters" / "tiny" / f"{task}.yml",
                       [f"dataroot={dataroot}", f"checkpoints_dir={runs}", *overrides], schema=RunConfig)


@functools.lru_cache(maxsize=1)
def _session_runs(base: str) -> dict:
    from fold0123.engine.trainer import train

    torch.set_num_threads(1)
    base = Path(base)
    dataroot = make_recipe_root(base / "data")
    runs = base / "runs"
    jigsaw = train(tiny_config("jigsaw", dataroot, runs), "all", device="cpu", progress=False)
    target = train(tiny_config("target", dataroot, runs), "3fold0", device="cpu", progress=False)
    return {"dataroot": dataroot, "runs": runs, "jigsaw": jigsaw, "target": target}


def session_runs(tmp_path_factory) -> dict:
    """{dataroot, runs, jigsaw: runs/jigsaw_all, target: runs/target_3fold0 (transferred from jigsaw_all)}."""
    return _session_runs(str(tmp_path_factory.getbasetemp() / "engine_session"))


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def tiny_recipe(root: Path, tasks: tuple[str, ...] = ("target",), run_keys: str = "epochs: 1\n") -> Path:
    """A recipe config over the tiny presets on a fixture dataroot taken as it is (`dataset: null`, train-only
    tags as atmaCup #11), all its runs under `root/runs` (each preset plus `run_keys`), stacking `tasks`."""
    dataroot = make_dataroot(root / "data", test_tags=False)
    runs, tiny = root / "runs", ROOT / "parameters" / "tiny"
    confs = {name: write(root / f"{name}.yml", f"base: {tiny / name}.yml\ncheckpoints_dir: {runs}\n{run_keys}")
             for name in ("jigsaw", *tasks)}
    chosen = ", ".join(f"{task}: last" for task in tasks)  # a mapping --set replaces the whole mapping
    stack = load_config(tiny / "stack.yml", [f"checkpoints_dir={runs}", f"out_dir={root / 'submissions'}",
                                             f"runs={{{chosen}}}"], schema=StackConfig)
    return Path(write(root / "recipe.yml", f"""base: {ROOT / 'parameters' / 'demo' / 'recipe.yml'}
dataset: null
dataroot: {dataroot}
answers: {root / 'answers.csv'}
fold_batch_size: 8
word2vec: {{dim: 20, epochs: 5}}
devices: cpu
pretext: {confs['jigsaw']}
tasks: [{', '.join(confs[task] for task in tasks)}]
stack: {write(root / 'stack.yml', dump_config(stack))}
"""))


class Interrupt(Exception):
    """Stands for a kill: raised inside train() at a chosen point."""


def interrupt_in_epoch_2(monkeypatch, where: str) -> None:
    if where == "mid-epoch":  # after the first log line of epoch 2: partial log, no 2.pth, resume.pth at epoch 1
        write = trainer.LossLog.write

        def log_then_die(self, epoch, *rest):
            write(self, epoch, *rest)
            if epoch == 2:
                raise Interrupt
        monkeypatch.setattr(trainer.LossLog, "write", log_then_die)
    else:  # between the two writes: 2.pth in place, resume.pth still at epoch 1
        save = saver.save_checkpoint

        def save_then_die(path, state):
            if path.name == rundir.RESUME and state["epoch"] == 2:
                raise Interrupt
            return save(path, state)
        monkeypatch.setattr(saver, "save_checkpoint", save_then_die)
