"""The recipe's rooms joined for real on the 32 px fixture: train.py's loop and the evaluator write run
directories for two tasks on every split, and ensemble.ipynb stacks them headless into a submission that beats
the mean on the held-out answers."""
from __future__ import annotations

import json

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch

from fold0123.preprocessing.answers import score_submission
from tests.conftest import ROOT, make_recipe_root, tiny_config

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    from fold0123.engine.evaluator import evaluate_checkpoint
    from fold0123.engine.trainer import train

    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("recipe")
    dataroot = make_recipe_root(base / "data")
    runs = base / "runs"
    for task in ("target", "onehot"):
        for split in ("3fold0", "3fold1", "3fold2", "all"):
            # torchvision's width: at the test presets' 16 the 2-epoch nets' stack loses to the mean on 16 answers
            cfg = tiny_config(task, dataroot, runs, "transfer_from=null", "eval.train_epochs=[2]", "epochs=2",
                              "width=64")
            run = train(cfg, split, device="cpu", progress=False)
            for epoch in (1, 2):
                evaluate_checkpoint(run, epoch, device="cpu")
    return base


def test_run_directories_follow_the_contract(tiny_runs):
    run = tiny_runs / "runs" / "onehot_3fold1"
    held_out = pd.read_csv(tiny_runs / "data" / "3fold1_test.csv", dtype={"object_id": str})
    with np.load(run / "eval" / "epoch2_oof.npz", allow_pickle=False) as npz:
        assert sorted(npz["ids"].tolist()) == sorted(held_out["object_id"])
        probs = npz["outputs"]
    assert probs.shape == (len(held_out), 8, 4)
    assert abs(probs.sum(-1) - 1).max() < 1e-4  # onehot outputs are probabilities, per view
    metrics = json.loads((run / "eval" / "epoch2_metrics.json").read_text())
    assert metrics["primary"] == "rmse" and metrics["n"] == len(held_out)
    assert (run / "eval" / "epoch2_train.npz").is_file() and not (run / "eval" / "epoch1_train.npz").exists()
    assert (run / "DONE").is_file()


def test_notebook_stacks_real_runs_into_a_submission(tiny_runs):
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / "ensemble.ipynb", as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    out = tiny_runs / "submissions"
    overrides = [f"dataroot={tiny_runs / 'data'}", f"checkpoints_dir={tiny_runs / 'runs'}", f"out_dir={out}",
                 f"answers={tiny_runs / 'answers.csv'}", "runs={target: last, onehot: last}"]
    params.source = (f"CONF = {str(ROOT / 'parameters/tiny/stack.yml')!r}\nOVERRIDES = {overrides!r}\n"
                     f"ENSEMBLE = True\nSTAMP = 'real'")
    NotebookClient(nb, timeout=300, kernel_name="python3").execute()
    (with_ids,) = out.glob("*_real_ids.csv")
    test = pd.read_csv(tiny_runs / "data" / "test.csv", dtype={"object_id": str})
    frame = pd.read_csv(with_ids, dtype={"object_id": str})
    assert frame["object_id"].tolist() == test["object_id"].tolist()
    answers = pd.read_csv(tiny_runs / "answers.csv")
    train_mean = pd.read_csv(tiny_runs / "data" / "train.csv")["target"].mean()
    constant_rmse = float(((answers["target"] - train_mean) ** 2).mean() ** 0.5)  # what knowing nothing scores
    assert score_submission(with_ids, tiny_runs / "answers.csv")["rmse"] < constant_rmse
    report = json.loads(with_ids.with_name(with_ids.name.replace("_ids.csv", "_report.json")).read_text())
    assert {row["variant"] for row in report["tables"]["answers"]} >= {"out-of-fold stack", "in-fold stack (original)"}
