"""Bad input, round two (issue 22, this half): retrieval ensembles and ids, a half-written stack, non-UTF-8 text
inputs, read-only output folders and the remaining tracebacks. Each case ends in one line naming the culprit
(file, row, id, key or argument) and leaves nothing under a final name."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import stack
from fold0123.common import muge
from fold0123.common.config import ConfigError, load_config
from fold0123.common.errors import Fold0123Error, LayoutError, UsageError
from fold0123.common.io import OutputPathError, exclusive_lock, make_dir, read_user_text, write_text
from fold0123.common.schema import RunConfig
from fold0123.data.competition import read_competition, read_spec
from fold0123.data.muge import read_split
from fold0123.retrieval import ensemble, predict, predictions, ttl
from tests.conftest import (
    ROOT,
    make_dataroot,
    make_muge_root,
    make_runs,
    make_synthetic_dataroot,
    read_only_folder,
    tiny_config,
)


def _one_line(err: pytest.ExceptionInfo, *names) -> str:
    message = str(err.value)
    assert isinstance(err.value, Fold0123Error) and "\n" not in message, message
    for name in names:
        assert str(name) in message, (name, message)
    return message


def _cli_line(capsys, main, argv, *names) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    line = str(exit_.value.code)
    assert line.startswith("error: ") and "\n" not in line, line
    err = capsys.readouterr().err
    assert "Traceback" not in err and "[LightGBM]" not in err, err  # capfd: LightGBM's own C++ line too
    for name in names:
        assert str(name) in line, (name, line)
    return line


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


# --------------------------------------------------------------------------------------------------- retrieval

def _matrices(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    a = predictions.save_similarity(tmp_path / "a.npy", rng.normal(size=(4, 5)), [1, 2, 3, 4], [10, 11, 12, 13, 14])
    b = predictions.save_similarity(tmp_path / "b.npy", rng.normal(size=(4, 5)), [1, 2, 3, 4], [10, 11, 12, 13, 14])
    return a, b


def test_ensemble_refuses_a_nan_row_naming_file_and_row(tmp_path, capsys):
    a, b = _matrices(tmp_path)
    sim = np.load(b)
    sim[2, 3] = np.nan
    np.save(b, sim)
    with pytest.raises(LayoutError) as err:
        ensemble.combine([a, b])
    _one_line(err, b, "row 2", "text id 3")
    _cli_line(capsys, ensemble.main, [str(a), str(b), "--out", str(tmp_path / "out")], b, "row 2")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("weights", ["nan,1", "inf,1", "1,-inf"])
def test_ensemble_refuses_a_non_finite_weight(tmp_path, capsys, weights):
    a, b = _matrices(tmp_path)
    bad = next(w for w in weights.split(",") if w not in ("1",))
    line = _cli_line(capsys, ensemble.main, [str(a), str(b), "--weights", weights, "--out", str(tmp_path / "out")],
                     "--weights")
    assert bad.lstrip("-") in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("key", ["image_ids", "text_ids"])
def test_ensemble_refuses_a_repeated_id_in_ids_json(tmp_path, capsys, key):
    a, b = _matrices(tmp_path)
    ids_file = predictions.ids_path(b)
    ids = json.loads(ids_file.read_text())
    ids[key][1] = ids[key][0]
    ids_file.write_text(json.dumps(ids))
    with pytest.raises(LayoutError) as err:
        predictions.load_similarity(b)
    _one_line(err, ids_file, f"id {ids[key][0]} appears twice")
    _cli_line(capsys, ensemble.main, [str(a), str(b), "--out", str(tmp_path / "out")], ids_file)
    assert not (tmp_path / "out").exists()


def test_predict_epoch_that_is_not_a_number_is_one_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "1.pth").write_bytes(b"")
    with pytest.raises(UsageError) as err:
        predict.checkpoint_of(run, "abc")
    _one_line(err, "--epoch abc")


def test_ttl_cache_whose_texts_lack_image_ids_is_one_line(tmp_path):
    root = make_muge_root(tmp_path / "muge", per_split=(4, 4, 4))
    with pytest.raises(Fold0123Error) as err:  # the dataroot's public test texts carry no image_ids: no cache
        ttl.cache_pairs(root, "test", 16)
    _one_line(err, muge.texts_jsonl(root, "test"), "image_ids")


# --------------------------------------------------------------------------------------------------- stacking

@pytest.fixture(scope="module")
def stack_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stack22")
    root = make_synthetic_dataroot(tmp / "data", n_train=90, n_test=30)
    make_runs(tmp / "runs", root, tasks=("target",), epochs=1)
    return tmp


def _stack_argv(tmp: Path, out: Path, answers: Path, *extra: str) -> list[str]:
    argv = ["--conf", str(ROOT / "parameters/tiny/stack.yml")]
    sets = [f"dataroot={tmp / 'data'}", f"checkpoints_dir={tmp / 'runs'}", f"out_dir={out}", f"answers={answers}",
            "runs={target: 1}", "infold=false", *extra]
    for s in sets:
        argv += ["--set", s]
    return argv


def _answers_fault(answers: pd.DataFrame, fault: str) -> tuple[pd.DataFrame, str]:
    """The answers with one fault, and what the one line must name."""
    if fault == "extra":
        return pd.concat([answers, pd.DataFrame({"object_id": ["stranger"], "target": [1]})]), "'stranger'"
    if fault == "missing":
        return answers.iloc[1:], repr(answers["object_id"].iloc[0])
    if fault == "duplicated":
        return pd.concat([answers, answers.iloc[[3]]]), repr(answers["object_id"].iloc[3])
    bad = answers.astype({"target": object})
    bad.loc[bad.index[2], "target"] = "three"
    return bad, "row 4"


@pytest.mark.parametrize("fault", ["extra", "missing", "duplicated", "non-numeric"])
def test_stack_with_a_faulty_answers_file_writes_nothing(stack_runs, tmp_path, capsys, fault):
    answers = pd.read_csv(stack_runs / "answers.csv", dtype={"object_id": str})[["object_id", "target"]]
    broken, culprit = _answers_fault(answers, fault)
    path = tmp_path / "answers.csv"
    broken.to_csv(path, index=False)
    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier.txt").write_text("kept")
    _cli_line(capsys, stack.main, _stack_argv(stack_runs, out, path), path, culprit)
    assert _tree(out) == ["earlier.txt"]


def test_stack_lightgbm_refusing_a_parameter_is_one_line(stack_runs, tmp_path, capfd):
    """capfd: LightGBM's C++ side writes its own `[LightGBM] [Fatal]` line to file descriptor 2, not sys.stderr."""
    out = tmp_path / "out"
    _cli_line(capfd, stack.main, _stack_argv(stack_runs, out, stack_runs / "answers.csv",
                                             "lgbm.params.num_leaves=-5"), "lgbm.params", "num_leaves")
    assert _tree(out) == []
    _cli_line(capfd, stack.main, _stack_argv(stack_runs, out, stack_runs / "answers.csv", "lgbm.tune={trials: 2, "
                                             "space: {num_leaves: {choices: [-5]}}}"), "lgbm.params", "num_leaves")


def test_stack_test_npz_of_another_width_than_the_oof_is_one_line(stack_runs, tmp_path, capsys):
    from fold0123.stacking.runs import eval_path
    from tests.conftest import save_npz

    runs = tmp_path / "runs"
    shutil.copytree(stack_runs / "runs", runs)
    test_npz = eval_path(runs / "target_3fold1", 1, "test")
    with np.load(test_npz) as f:
        ids, outputs = f["ids"], f["outputs"]
    save_npz(test_npz, ids, np.concatenate([outputs, outputs], axis=2))
    out = tmp_path / "out"
    argv = _stack_argv(stack_runs, out, stack_runs / "answers.csv", f"checkpoints_dir={runs}")
    _cli_line(capsys, stack.main, argv, test_npz, "target_3fold0")
    assert _tree(out) == []


# --------------------------------------------------------------------------------------------------- non-UTF-8

BAD_BYTES = b"caf\xe9 \xff\xfe"


def test_non_utf8_text_inputs_are_one_line_naming_the_file(tmp_path):
    root = make_muge_root(tmp_path / "muge", per_split=(4, 4, 4))
    for path in (muge.images_tsv(root, "valid"), muge.texts_jsonl(root, "valid")):
        original = path.read_bytes()
        path.write_bytes(original + BAD_BYTES + b"\n")
        with pytest.raises(LayoutError) as err:
            read_split(root, "valid", decode=False)
        _one_line(err, path, f"offset {len(original) + 3}")
        path.write_bytes(original)

    config = tmp_path / "conf.yml"
    config.write_bytes(b"lr: 0.001\n# " + BAD_BYTES + b"\n")
    with pytest.raises(ConfigError) as err:
        load_config(config, schema=RunConfig)
    _one_line(err, config, "UTF-8", "line 2")

    data = make_dataroot(tmp_path / "data", n_train=8, n_test=4)
    (data / "competition.yml").write_bytes(b"name: " + BAD_BYTES + b"\n")
    with pytest.raises(LayoutError) as err:
        read_spec(data)
    _one_line(err, data / "competition.yml", "UTF-8")


def test_read_user_text_keeps_read_texts_behaviour(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes("é\r\nb\rc\n".encode())
    assert read_user_text(path) == path.read_text()
    with pytest.raises(LayoutError, match="is a folder"):
        read_user_text(tmp_path)


# --------------------------------------------------------------------------------------------------- competition.yml

def test_an_empty_or_folder_spec_is_named_not_defaulted(tmp_path):
    data = make_dataroot(tmp_path / "data", n_train=8, n_test=4)
    spec = data / "competition.yml"
    spec.write_text("")
    with pytest.raises(LayoutError) as err:
        read_spec(data)
    _one_line(err, spec, "empty")
    spec.unlink()
    spec.mkdir()
    with pytest.raises(LayoutError) as err:
        read_spec(data)
    _one_line(err, spec, "folder")


def test_classes_null_without_a_target_column_names_the_spec(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    pd.DataFrame({"object_id": ["a", "b"], "label": [0, 1]}).to_csv(data / "train.csv", index=False)
    (data / "competition.yml").write_text("kind: classification\nmetric: accuracy\nclasses: null\n")
    with pytest.raises(LayoutError) as err:
        read_competition(data)
    _one_line(err, data / "competition.yml", "'target'", "classes")


# --------------------------------------------------------------------------------------------------- train.py

@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    from fold0123.data.folds import write_folds

    root = make_dataroot(tmp_path_factory.mktemp("train22") / "data", n_train=24, n_test=8)
    write_folds(root, k=3, batch_size=None, seed=0)
    return root


@pytest.mark.parametrize("split, device, culprit", [
    ("3fold0", "banana", "--device banana"),
    ("7fold9", "cpu", "7fold9"),
] + ([("3fold0", "cuda", "--device cuda")] if not __import__("torch").cuda.is_available() else []))
def test_a_refused_device_or_split_leaves_no_run_directory(tiny_root, tmp_path, split, device, culprit):
    from fold0123.engine.trainer import train

    cfg = tiny_config("target", tiny_root, tmp_path / "runs", "transfer_from=null")
    with pytest.raises(Fold0123Error) as err:
        train(cfg, split, device=device, progress=False)
    _one_line(err, culprit)
    assert _tree(tmp_path / "runs") == []


@pytest.mark.parametrize("key", ["warmup_epochs", "lr", "weight_decay"])
def test_an_infinite_number_in_the_config_is_refused_naming_the_key(tiny_root, tmp_path, key):
    with pytest.raises(ConfigError) as err:
        tiny_config("target", tiny_root, tmp_path / "runs", f"{key}=inf")
    _one_line(err, key)


# --------------------------------------------------------------------------------------------------- read-only

def test_a_read_only_file_system_is_one_line_everywhere(tiny_root, stack_runs, tmp_path, capsys):
    from fold0123.data.photos import photo_cache  # noqa: F401 (the cache's lock is exclusive_lock)
    from fold0123.engine.trainer import train
    from fold0123.preprocessing import adapters, pack_lmdb

    muge_root = make_muge_root(tmp_path / "muge", per_split=(4, 4, 4))
    src = tmp_path / "folder_src"
    for folder in ("train/cat", "train/dog", "test"):
        (src / folder).mkdir(parents=True)
    for i, image in enumerate(sorted((tiny_root / "photos").iterdir())[:6]):
        shutil.copy(image, src / "train" / ("cat", "dog")[i % 2] / image.name)
    for image in sorted((tiny_root / "photos").iterdir())[6:8]:
        shutil.copy(image, src / "test" / image.name)
    with read_only_folder(tmp_path) as ro:
        with pytest.raises(OutputPathError) as err:
            make_dir(ro / "a" / "b")
        _one_line(err, ro, "read-only file system")
        with pytest.raises(OutputPathError) as err:
            write_text(ro / "x.txt", "hi")
        _one_line(err, ro, "read-only file system")
        with pytest.raises(OutputPathError) as err:  # the image cache's lock
            with exclusive_lock(ro / "cache" / "x.npy.lock", wait=True):
                pass
        _one_line(err, "read-only file system")
        with pytest.raises(OutputPathError) as err:
            train(tiny_config("target", tiny_root, ro / "runs", "transfer_from=null"), "3fold0", "cpu",
                  progress=False)
        _one_line(err, ro / "runs", "read-only file system")
        _cli_line(capsys, pack_lmdb.main, ["--data-dir", str(muge_root), "--splits", "valid", "--lmdb-dir",
                                           str(ro / "lmdb")], ro, "read-only file system")
        _cli_line(capsys, pack_lmdb.main, ["--data-dir", str(muge_root), "--splits", "valid", "--lmdb-dir", str(ro)],
                  ro, "read-only file system")
        _cli_line(capsys, adapters.main, ["imagefolder", str(src), "--out", str(ro / "built")], ro,
                  "read-only file system")
        _cli_line(capsys, stack.main, _stack_argv(stack_runs, ro, stack_runs / "answers.csv"), ro,
                  "read-only file system")
        _cli_line(capsys, stack.main, _stack_argv(stack_runs, ro / "deeper", stack_runs / "answers.csv"), ro,
                  "read-only file system")
        assert _tree(ro) == []


def test_an_unwritable_folder_is_one_line_like_a_read_only_one(tmp_path, capsys):
    """EACCES through the same one place as EROFS (common.io.write_problem); root ignores permission bits."""
    if os.geteuid() == 0:
        pytest.skip("root writes into a chmod 500 folder: the read-only mount test covers the conversion")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        for write in (lambda: make_dir(locked / "a"), lambda: write_text(locked / "x.txt", "x")):
            with pytest.raises(OutputPathError) as err:
                write()
            _one_line(err, locked, "permission denied")
        assert _tree(locked) == []
    finally:
        locked.chmod(0o700)
