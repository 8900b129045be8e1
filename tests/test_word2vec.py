"""data/tags.py and word2vec.py: tokens, disambiguation, vector file shape, zeros, determinism, bad input."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fold0123.data import tags
from fold0123.data.layout import LayoutError
from tests.conftest import ROOT
from tests.test_layout import BAD_INPUTS, assert_one_line_naming, bad_inputs, files_in


def read_vectors(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"object_id": str}, keep_default_na=False)


def ids_of(root: Path, name: str) -> list[str]:
    return pd.read_csv(root / name, dtype=str, keep_default_na=False)["object_id"].tolist()


def test_file_has_every_object_and_dim_columns(dataroot):
    report = tags.write_tag_vectors(dataroot, dim=6, epochs=5, seed=0)
    frame = read_vectors(dataroot / "materialstechniques_w2v6.csv")
    assert report.path == dataroot / "materialstechniques_w2v6.csv"
    assert list(frame.columns) == ["object_id"] + [f"w2v_{i}" for i in range(6)]
    assert frame["object_id"].tolist() == ids_of(dataroot, "train.csv") + ids_of(dataroot, "test.csv")
    values = frame.drop(columns="object_id").to_numpy()
    assert values.dtype == float and np.isfinite(values).all()
    assert report.n_objects == len(frame)
    assert not [p for p in dataroot.iterdir() if ".tmp." in p.name]


def test_untagged_objects_get_zeros_and_tagged_ones_do_not(dataroot):
    untagged = ids_of(dataroot, "train.csv")[:3] + ids_of(dataroot, "test.csv")[:2]
    for table in ("materials", "techniques"):
        frame = pd.read_csv(dataroot / f"{table}.csv", dtype=str, keep_default_na=False)
        frame[~frame["object_id"].isin(untagged)].to_csv(dataroot / f"{table}.csv", index=False)
    report = tags.write_tag_vectors(dataroot, dim=4, epochs=5, seed=0)
    frame = read_vectors(report.path).set_index("object_id")
    assert (frame.loc[untagged].to_numpy() == 0).all()
    assert (np.abs(frame.drop(index=untagged).to_numpy()).sum(axis=1) > 0).all()
    assert report.n_untagged == 5


def test_a_name_in_both_tables_becomes_two_tokens():
    tables = {"materials": pd.DataFrame({"object_id": ["a", "a", "b"], "name": ["pencil", "paper", "NA"]}),
              "techniques": pd.DataFrame({"object_id": ["a", "b", "c"], "name": ["pencil", "etching", "drawing"]})}
    tokens = tags.token_lists(tables, ["a", "b", "c", "d"])
    assert tokens == {"a": ["pencil (material)", "paper", "pencil (technique)"], "b": ["NA", "etching"],
                      "c": ["drawing"], "d": []}
    wv = tags.train_word2vec([t for t in tokens.values() if t], dim=4, epochs=3, seed=0)
    assert "pencil" not in wv.key_to_index
    assert {"pencil (material)", "pencil (technique)", "NA"} <= set(wv.key_to_index)


def test_object_vector_is_the_mean_of_its_token_vectors():
    tokens = {"a": ["x", "y", "z"], "b": ["y"], "c": ["z", "x"], "d": []}
    frame = tags.object_vectors(tokens, dim=5, epochs=10, seed=3).set_index("object_id")
    wv = tags.train_word2vec([["x", "y", "z"], ["y"], ["z", "x"]], dim=5, epochs=10, seed=3)
    np.testing.assert_allclose(frame.loc["a"].to_numpy(), wv[["x", "y", "z"]].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(frame.loc["c"].to_numpy(), (wv["z"] + wv["x"]) / 2, rtol=1e-6)
    assert (frame.loc["d"].to_numpy() == 0).all()


def test_vectors_carry_the_tag_signal(tmp_path):
    """Objects sharing tags end up closer than objects that share none (the fixture's tags follow the target)."""
    from tests.conftest import make_dataroot
    root = make_dataroot(tmp_path / "data", n_train=120, n_test=20)
    frame = read_vectors(tags.write_tag_vectors(root, dim=8, epochs=50, seed=0).path).set_index("object_id")
    target = pd.read_csv(root / "train.csv", dtype={"object_id": str}).set_index("object_id")["target"]
    vectors = frame.loc[target.index].to_numpy()
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)
    cosine = unit @ unit.T
    same = target.to_numpy()[:, None] == target.to_numpy()[None, :]
    assert cosine[same].mean() > cosine[~same].mean() + 0.2


def test_deterministic_for_a_seed_different_across_seeds_and_sg(dataroot):
    path = tags.write_tag_vectors(dataroot, dim=5, epochs=5, seed=0).path
    first = path.read_bytes()
    assert tags.write_tag_vectors(dataroot, dim=5, epochs=5, seed=0).path.read_bytes() == first
    assert tags.write_tag_vectors(dataroot, dim=5, epochs=5, seed=1).path.read_bytes() != first
    assert tags.write_tag_vectors(dataroot, dim=5, epochs=5, seed=0, sg=True).path.read_bytes() != first


@pytest.mark.integration
def test_cli_identical_across_processes_with_different_hash_seeds(dataroot):
    """Python salts str hashes per process; the vectors must not depend on it (no PYTHONHASHSEED needed)."""
    outputs = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, str(ROOT / "word2vec.py"), "--dataroot", str(dataroot), "--dim", "5",
                              "--epochs", "5", "--seed", "0"], capture_output=True, text=True, cwd=ROOT, env=env)
        assert out.returncode == 0, out.stderr
        assert "materialstechniques_w2v5.csv" in out.stdout and "pencil" in out.stdout
        outputs.append((dataroot / "materialstechniques_w2v5.csv").read_bytes())
    assert outputs[0] == outputs[1]


def test_tags_of_unknown_objects_are_ignored_and_reported(dataroot):
    frame = pd.read_csv(dataroot / "materials.csv", dtype=str, keep_default_na=False)
    extra = pd.DataFrame({"object_id": ["stranger"], "name": ["paper"]})
    pd.concat([frame, extra]).to_csv(dataroot / "materials.csv", index=False)
    report = tags.write_tag_vectors(dataroot, dim=3, epochs=2, seed=0)
    assert "stranger" not in read_vectors(report.path)["object_id"].tolist()
    assert report.unknown_objects == 1 and "neither train.csv nor test.csv" in report.summary()


@pytest.mark.parametrize("case", bad_inputs("word2vec"))
def test_bad_input_fails_with_one_line_and_writes_nothing(dataroot, case):
    BAD_INPUTS[case][0](dataroot)
    before = files_in(dataroot)
    with pytest.raises(LayoutError) as info:
        tags.write_tag_vectors(dataroot, dim=3, epochs=2, seed=0)
    assert_one_line_naming(str(info.value), case)
    assert files_in(dataroot) == before


@pytest.mark.parametrize("case", ["test id also in train", "missing column name"])
def test_cli_bad_input_exits_with_error_line(dataroot, case):
    BAD_INPUTS[case][0](dataroot)
    before = files_in(dataroot)
    out = subprocess.run([sys.executable, str(ROOT / "word2vec.py"), "--dataroot", str(dataroot), "--dim", "3",
                          "--epochs", "2"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1, out.stderr
    assert_one_line_naming(out.stderr.removeprefix("error: "), case)
    assert files_in(dataroot) == before


def test_cli_rejects_nonpositive_dim(dataroot):
    out = subprocess.run([sys.executable, str(ROOT / "word2vec.py"), "--dataroot", str(dataroot), "--dim", "0"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 1 and out.stderr.startswith("error: dim and epochs must be positive")
