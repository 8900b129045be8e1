"""Label cleaning (stack.py clean, cleanlab): labels flipped at random are found with stated precision and recall,
and the clean splits drop them from the training parts only."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import stack
from fold0123.common.errors import UsageError
from fold0123.data.layout import split_names, split_paths
from fold0123.stacking.clean import label_issues
from tests.conftest import ROOT, make_runs, make_synthetic_dataroot

PRECISION, RECALL = 0.8, 0.8  # what the tests ask of cleanlab on a 10 % flip of confidently predicted labels


def flip(labels: np.ndarray, share: float, k: int, rng) -> np.ndarray:
    """The positions of `share` of the labels, each moved to another class at random (in place)."""
    flipped = rng.choice(len(labels), int(share * len(labels)), replace=False)
    labels[flipped] = (labels[flipped] + rng.integers(1, k, len(flipped))) % k
    return flipped


def precision_recall(found, flipped) -> tuple[float, float]:
    hits = len(set(found) & set(flipped))
    return hits / max(len(found), 1), hits / len(flipped)


def test_flipped_labels_are_found_with_the_stated_precision_and_recall():
    rng = np.random.default_rng(0)
    n, k = 600, 5
    truth = rng.integers(0, k, n)
    logits = 3.0 * np.eye(k)[truth] + rng.standard_normal((n, k))  # a model right on 94 % of the rows
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    given = truth.copy()
    flipped = flip(given, 0.1, k, rng)
    ids = np.array([f"o{i}" for i in range(n)])
    issues = label_issues(ids, given, probs)
    found = [int(i[1:]) for i in issues["object_id"]]
    precision, recall = precision_recall(found, flipped)
    assert precision >= PRECISION and recall >= RECALL, (precision, recall)
    assert issues["given_probability"].is_monotonic_increasing  # ranked: the most contradicted first
    assert (issues["given"].to_numpy() == given[found]).all()
    assert (issues["suggested"].to_numpy() == probs[found].argmax(axis=1)).all()
    with pytest.raises(UsageError, match="labels 0..4 but 3 class probabilities"):
        label_issues(ids, given, probs[:, :3])


def test_stack_clean_writes_splits_without_the_flagged_rows_and_keeps_every_held_out_row(tmp_path, capsys):
    root = make_synthetic_dataroot(tmp_path / "data", n_train=300, n_test=60)
    make_runs(tmp_path / "runs", root, tasks=("onehot",), epochs=1)  # probabilities from the true labels
    rng = np.random.default_rng(1)
    train = pd.read_csv(root / "train.csv", dtype={"object_id": str, "art_series_id": str})
    labels = train["target"].to_numpy().copy()
    flipped_ids = set(train["object_id"].iloc[flip(labels, 0.1, 4, rng)])
    new_label = dict(zip(train["object_id"], labels))
    for path in [root / "train.csv"] + [p for s in split_names(3) for p in split_paths(root, s)]:
        table = pd.read_csv(path, dtype={"object_id": str, "art_series_id": str})
        if "target" in table:  # the given labels, flipped everywhere they are written
            table["target"] = table["object_id"].map(new_label).fillna(table["target"]).astype(int)
            table.to_csv(path, index=False)
    stack.main(["clean", "--conf", str(ROOT / "parameters/tiny/stack.yml"), "--set", f"dataroot={root}",
                "--set", f"checkpoints_dir={tmp_path / 'runs'}", "--set", f"out_dir={tmp_path / 'out'}",
                "--set", "runs={onehot: last}", "--set", "infold=false"])
    assert "label issues:" in capsys.readouterr().out
    issues = pd.read_csv(tmp_path / "out" / "label_issues.csv", dtype={"object_id": str})
    _, recall = precision_recall(issues["object_id"], flipped_ids)  # the synthetic model is weak: its own
    assert recall >= RECALL, recall  # mistakes are flagged too, so only the recall is asked here
    dropped = set(issues["object_id"])
    for split in split_names(3):
        train_part, held_out = split_paths(root, split)
        clean_train, clean_held = split_paths(root, f"{split}_clean")
        kept = pd.read_csv(clean_train, dtype={"object_id": str})["object_id"]
        before = pd.read_csv(train_part, dtype={"object_id": str})["object_id"]
        assert set(kept) == set(before) - dropped and len(kept) < len(before)
        assert clean_held.read_bytes() == held_out.read_bytes()  # every fold is still scored on all its rows


def test_the_recipe_cleans_then_trains_every_task_on_the_clean_splits_and_stacks_them(monkeypatch):
    """recipe.py with `clean: true`: the steps in order, each through its CLI (issue 21)."""
    from fold0123.common.schema import RecipeConfig
    from fold0123.launcher import recipe
    from tests.conftest import ROOT

    calls = []
    monkeypatch.setattr(recipe, "run_cli", lambda *args: calls.append(("cli",) + args))
    monkeypatch.setattr(recipe, "launch", lambda cfg, conf, redo, *args: calls.append(("launch", conf) + args))
    stack_conf = str(ROOT / "parameters/tiny/stack.yml")
    cfg = RecipeConfig(stack=stack_conf, tasks=["a.yml", "b.yml"], answers=None, devices="cpu")
    recipe.cleaned_round(cfg)
    assert calls == []  # clean: false (the default) adds nothing
    recipe.cleaned_round(cfg.model_copy(update={"clean": True}))
    splits = "3fold0_clean,3fold1_clean,3fold2_clean,all_clean"
    assert calls[0][:3] == ("cli", "stack.py", "clean")
    assert calls[1:3] == [("launch", "a.yml", "--splits", splits), ("launch", "b.yml", "--splits", splits)]
    assert calls[-1][:2] == ("cli", "stack.py") and "split_suffix=_clean" in calls[-1]


def test_the_recipes_pseudo_rounds_each_build_on_the_last(monkeypatch):
    """recipe.py with `pseudo_rounds: 3` (issue 21): round r pseudo-labels from round r-1's runs and stack, trains
    every task on `{split}_pseudo{r}` and stacks it; round 1 builds on the plain splits."""
    from fold0123.common.schema import RecipeConfig
    from fold0123.launcher import recipe
    from tests.conftest import ROOT

    calls = []
    monkeypatch.setattr(recipe, "run_cli", lambda *args: calls.append(("cli",) + args))
    monkeypatch.setattr(recipe, "launch", lambda cfg, conf, redo, *args: calls.append(("launch", conf) + args))
    cfg = RecipeConfig(stack=str(ROOT / "parameters/tiny/stack.yml"), tasks=["a.yml"], answers=None,
                       devices="cpu", pseudo_rounds=3)
    recipe.pseudo_label_rounds(cfg)
    pseudo = [c for c in calls if c[:3] == ("cli", "stack.py", "pseudo")]
    assert [c[c.index("--round") + 1] for c in pseudo] == ["1", "2", "3"]
    assert [[a for a in c if a.startswith("split_suffix=")] for c in pseudo] == [
        ["split_suffix="], ["split_suffix=_pseudo1"], ["split_suffix=_pseudo2"]]
    launched = [c[-1] for c in calls if c[0] == "launch"]
    assert launched == [",".join(f"{s}_pseudo{r}" for s in ("3fold0", "3fold1", "3fold2", "all")) for r in (1, 2, 3)]
    stacks = [c for c in calls if c[:2] == ("cli", "stack.py") and c[2] != "pseudo"]
    assert [[a for a in c if a.startswith("split_suffix=")] for c in stacks] == [
        [f"split_suffix=_pseudo{r}"] for r in (1, 2, 3)]
