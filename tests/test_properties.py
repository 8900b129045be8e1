"""Property-based bad input (issue 12): hypothesis generates broken configs, dataroot CSVs, photos and stacking
inputs, and every case must end in a correct result or one clear line naming the file and the key, row or
column: never a traceback (an exception outside Fold0123Error), never a silently wrong value.

The runs are derandomized (the same cases on every machine and every CI run) and each test counts the distinct
cases it tried, so the number docs/reliability.md states is checked here, not assumed. `PROPERTY_EXAMPLES` scales them.
"""
from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from fold0123.common import rundir
from fold0123.common.config import load_config, parse_value
from fold0123.common.errors import Fold0123Error
from fold0123.common.schema import RunConfig, StackConfig
from fold0123.data.answers import score_answers
from fold0123.data.competition import ATMACUP
from fold0123.data.images import load_image
from fold0123.data.layout import check_photos, read_split, read_test, read_train
from fold0123.stacking.runs import RunError, eval_path, load_outputs
from tests.conftest import ROOT, read_only_folder

TRAIN_COLUMNS, N_CLASSES = ATMACUP.train_columns, ATMACUP.n_classes

SCALE = float(os.environ.get("PROPERTY_EXAMPLES", "1"))
COUNTS: dict[str, int] = {}  # distinct cases per test, printed at the end of the module


class Cases(set):
    """The distinct cases a check tried, and how many of them it accepted: a loader that refuses everything
    gives one clear line every time, so each property also asks for a share of its cases to be accepted."""
    accepted = 0

    def accept(self) -> None:
        self.accepted += 1


def examples(n: int):
    return settings(max_examples=max(1, int(n * SCALE)), derandomize=True, database=None, deadline=None,
                    suppress_health_check=list(HealthCheck))


def run_counted(name: str, check, minimum: float, accepted: float, **fixtures) -> None:
    """Run a @given check, counting the distinct cases it tried (the figure docs/reliability.md states is checked here)
    and asking that at least the share `accepted` of its calls ended in a correct result, not an error."""
    seen = Cases()
    check(seen=seen, **fixtures)
    assert len(seen) >= minimum, (name, len(seen))
    share = seen.accepted / max(len(seen), 1)
    print(f"{name}: {len(seen)} cases, {share:.0%} accepted")
    assert share >= accepted, f"{name}: only {seen.accepted} of {len(seen)} cases accepted: valid input refused?"
    COUNTS[name] = len(seen)


def assert_one_clear_line(err: BaseException, *names: str) -> str:
    """A project error, on one line, naming each of `names` (a file, a key, a column)."""
    assert isinstance(err, Fold0123Error), f"{type(err).__name__} is not a Fold0123Error: {err}"
    message = str(err)
    assert message and "\n" not in message and "Traceback" not in message, message
    for name in names:
        assert str(name) in message, f"{name!r} not named in: {message}"
    return message


# ------------------------------------------------------------------------------------------------ configs

def _leaf_keys(model, prefix="") -> list[str]:
    keys = []
    for name, value in model.model_dump().items():
        if isinstance(value, dict) and value and name not in ("runs",):
            keys += [f"{prefix}{name}.{k}" for k in value]
        else:
            keys.append(f"{prefix}{name}")
    return keys


RUN_KEYS = sorted(_leaf_keys(RunConfig(exp="x")))
STACK_KEYS = sorted(_leaf_keys(StackConfig()))
scalars = st.one_of(
    st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(),
    st.sampled_from(["", "ten", "0", "-1", "1e-3", "[]", "{}", "[1, 2]", "nan", "inf", "a/b", "..", "last", "cpu",
                     "resnet18", "oof", "none", "{a: 1}", "[oof, bogus]"]),
    st.text(max_size=8))
values = st.one_of(scalars, st.lists(scalars, max_size=3))


def _as_yaml(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _get(cfg, key: str):
    value = cfg
    for part in key.split("."):
        value = value[part] if isinstance(value, dict) else getattr(value, part)
    return value


def _same(parsed, got) -> bool:
    """The value the config holds is the value the user set (pydantic may coerce 2 -> 2.0 or 3 -> '3')."""
    if isinstance(got, (list, tuple)):
        return isinstance(parsed, (list, tuple)) and len(parsed) == len(got) and all(map(_same, parsed, got))
    if isinstance(got, float) and isinstance(parsed, (int, float)) and not isinstance(parsed, bool):
        return got == parsed or (math.isnan(got) and math.isnan(parsed))
    return got == parsed or str(got) == str(parsed)


def _check_override(path: Path, schema, key: str, value, seen: set) -> None:
    text = _as_yaml(value) if not isinstance(value, str) else value
    override = f"{key}={text}"
    seen.add((schema.__name__, override))
    try:
        cfg = load_config(path, [override], schema=schema)
    except Fold0123Error as err:
        assert_one_clear_line(err, "--set")
        return
    seen.accept()
    parsed = parse_value(text) if text != "" else ""  # what apply_override reads
    if key != "exp" and not isinstance(parsed, dict):  # exp: the loader names it; a dict merges key by key
        assert _same(parsed, _get(cfg, key)), f"{override} silently became {_get(cfg, key)!r}"


@examples(250)
@given(key=st.sampled_from(RUN_KEYS), value=values)
def _run_overrides(key, value, seen):
    _check_override(ROOT / "parameters/tiny/target.yml", RunConfig, key, value, seen)


def test_run_config_overrides_end_in_the_value_set_or_one_line():
    run_counted("run config --set", _run_overrides, 200 * SCALE, 0.1)


@examples(120)
@given(key=st.sampled_from(STACK_KEYS), value=values)
def _stack_overrides(key, value, seen):
    _check_override(ROOT / "parameters/stack.yml", StackConfig, key, value, seen)


def test_stack_config_overrides_end_in_the_value_set_or_one_line():
    run_counted("stack config --set", _stack_overrides, 90 * SCALE, 0.1)


@pytest.mark.parametrize("path,schema", [("parameters/tiny/target.yml", RunConfig), ("parameters/stack.yml",
                                                                                   StackConfig)])
def test_every_key_set_to_its_own_value_is_accepted_and_kept(path, schema):
    """The valid half of the override properties: a loader that refused everything would pass those."""
    cfg = load_config(ROOT / path, [], schema=schema)
    for key in _leaf_keys(cfg):
        value = _get(cfg, key)
        if isinstance(value, dict):
            continue  # a mapping merges key by key; its leaves are listed on their own
        text = _as_yaml(value) if not isinstance(value, str) else value
        if text == "":
            continue
        again = load_config(ROOT / path, [f"{key}={text}"], schema=schema)
        assert _same(value, _get(again, key)) and again == cfg, key


@examples(60)
@given(body=st.one_of(st.text(max_size=40), st.dictionaries(st.sampled_from(RUN_KEYS[:20] + ["nope", "base"]),
                                                               values, max_size=3).map(yaml.safe_dump)))
def _config_files(body, tmp, seen):
    seen.add(body)
    path = tmp / "c.yml"
    path.write_text(body)
    try:
        load_config(path, [], schema=RunConfig)
    except Fold0123Error as err:
        assert_one_clear_line(err, path)
        return
    seen.accept()


def test_config_files_end_in_a_config_or_one_line_naming_the_file(tmp_path):
    run_counted("config files", _config_files, 45 * SCALE, 0.015, tmp=tmp_path)


# ------------------------------------------------------------------------------------------- dataroot CSVs

def _valid_train(n: int = 12) -> pd.DataFrame:
    return pd.DataFrame({"object_id": [f"{i:06x}" for i in range(n)],
                         "sorting_date": [1600 + 10 * i for i in range(n)],
                         "art_series_id": [f"s{i // 2}" for i in range(n)],
                         "target": [i % N_CLASSES for i in range(n)]})


cells = st.one_of(st.sampled_from(["", " ", "nan", "NaN", "inf", "-inf", "-1", "4", "3.5", "1e309", "abc", "../x",
                                   "a/b", "..", "000001", "0x10", "１", "2,5", '"', "\t", "None"]),
                  st.text(max_size=6), st.integers(-5, 5).map(str), st.floats().map(str))
mutations = st.one_of(
    st.tuples(st.just("cell"), st.integers(0, 11), st.sampled_from(TRAIN_COLUMNS), cells),
    st.tuples(st.just("drop"), st.sampled_from(TRAIN_COLUMNS)),
    st.tuples(st.just("duplicate"), st.integers(0, 11)),
    st.tuples(st.just("raw"), st.sampled_from(["", "\n", "object_id\n", "a,b\n1,2,3\n", "\x00\x00", "\ufeff",
                                               "object_id,target\n", "\xff\xfe"])),
    st.tuples(st.just("truncate"), st.integers(1, 200)),
)


def _expected_names(mutation) -> tuple[str, ...]:
    kind = mutation[0]
    if kind == "cell":
        return ()  # a cell is named by row and column below when the reader refuses it
    if kind == "drop":
        return (mutation[1],)
    return ()


def _write_mutated(root: Path, mutation) -> None:
    frame = _valid_train()
    path = root / "train.csv"
    kind = mutation[0]
    if kind == "cell":
        _, row, column, value = mutation
        frame = frame.astype(str)
        frame.loc[row, column] = value
    elif kind == "drop":
        frame = frame.drop(columns=[mutation[1]])
    elif kind == "duplicate":
        frame = pd.concat([frame, frame.iloc[[mutation[1]]]], ignore_index=True)
    if kind == "raw":
        path.write_bytes(mutation[1].encode("utf-8", "surrogatepass") if mutation[1] != "\xff\xfe" else b"\xff\xfe")
        return
    frame.to_csv(path, index=False)
    if kind == "truncate":
        path.write_bytes(path.read_bytes()[: mutation[1]])


def _check_train_frame(frame: pd.DataFrame) -> None:
    """What every stage after the reader relies on: a train.csv that passed is a correct one."""
    assert list(frame.columns[:4]) == list(TRAIN_COLUMNS) or set(TRAIN_COLUMNS) <= set(frame.columns)
    assert frame["object_id"].is_unique and all("/" not in i and i.strip(".") for i in frame["object_id"])
    assert frame["target"].isin(range(N_CLASSES)).all()
    assert np.isfinite(frame["sorting_date"].to_numpy(float)).all()
    assert (frame["art_series_id"].str.strip() != "").all()


@examples(220)
@given(mutation=mutations)
def _train_csvs(mutation, root, seen):
    seen.add(repr(mutation))
    _write_mutated(root, mutation)
    try:
        frame = read_train(root)
    except Fold0123Error as err:
        message = assert_one_clear_line(err, root / "train.csv", *_expected_names(mutation))
        if mutation[0] == "cell" and ("row " in message):
            assert re.search(r"row \d+", message)
        return
    seen.accept()
    _check_train_frame(frame)


def test_train_csv_mutations_end_in_a_correct_table_or_one_line(tmp_path):
    run_counted("train.csv mutations", _train_csvs, 150 * SCALE, 0.15, root=tmp_path)


@examples(60)
@given(ids=st.lists(st.one_of(st.sampled_from(["ok1", "ok2", "../up", "", "..", "a\\b", "000001", "x y"]),
                              st.text(max_size=5)), max_size=5),
       header=st.sampled_from(["object_id", "id", "object_id,extra"]))
def _test_csvs(ids, header, root, seen):
    seen.add((tuple(ids), header))
    lines = [header] + [f"{i}" if header != "object_id,extra" else f"{i},1" for i in ids]
    (root / "test.csv").write_text("\n".join(lines) + "\n")
    try:
        frame = read_test(root, train=_valid_train())
    except Fold0123Error as err:
        assert_one_clear_line(err, root / "test.csv")
        return
    seen.accept()
    assert len(frame) > 0 and frame["object_id"].is_unique
    assert not set(frame["object_id"]) & set(_valid_train()["object_id"])


def test_test_csv_mutations_end_in_a_correct_table_or_one_line(tmp_path):
    run_counted("test.csv mutations", _test_csvs, 40 * SCALE, 0.04, root=tmp_path)


@examples(50)
@given(mutation=mutations, part=st.sampled_from(["train", "test"]))
def _split_csvs(mutation, part, root, seen):
    seen.add((repr(mutation), part))
    _write_mutated(root, mutation)
    other = "test" if part == "train" else "train"
    shutil.copy(root / "train.csv", root / f"3fold0_{part}.csv")
    _valid_train().iloc[:3].to_csv(root / f"3fold0_{other}.csv", index=False)
    try:
        train, held_out = read_split(root, "3fold0")
    except Fold0123Error as err:
        assert_one_clear_line(err, "3fold0_")
        return
    seen.accept()
    assert train["target"].between(0, N_CLASSES - 1).all() and train["object_id"].is_unique


def test_split_file_mutations_end_in_a_correct_table_or_one_line(tmp_path):
    run_counted("split file mutations", _split_csvs, 35 * SCALE, 0.1, root=tmp_path)


# ----------------------------------------------------------------------------------------------------- photos

def _image_bytes(kind: str, mode: str, width: int, height: int, cut: int) -> bytes:
    if kind == "random":
        return np.random.default_rng(width * 131 + height).bytes(cut)
    image = Image.new(mode, (width, height), color=None)
    buffer = io.BytesIO()
    image.save(buffer, format={"jpeg": "JPEG", "png": "PNG", "gif": "GIF", "bmp": "BMP"}[kind])
    data = buffer.getvalue()
    return data[:cut] if cut < len(data) else data


photos = st.tuples(st.sampled_from(["jpeg", "png", "gif", "bmp", "random"]),
                   st.sampled_from(["RGB", "L", "CMYK", "1", "P", "RGBA", "LA", "I;16", "I", "F"]),
                   st.integers(1, 40), st.integers(1, 40), st.integers(0, 400))


@examples(120)
@given(photo=photos, size=st.sampled_from([8, 32]), fit=st.sampled_from(["pad", "squish", "crop"]))
def _photos(photo, size, fit, root, seen):
    kind, mode, width, height, cut = photo
    try:
        data = _image_bytes(kind, mode, width, height, cut)
    except (OSError, ValueError, KeyError):
        return  # PIL cannot write this mode in this format: not a photo a user could bring
    seen.add((data, size, fit))
    path = root / "photos" / "abc.jpg"
    path.write_bytes(data)
    try:
        check_photos(root, ["abc"], decode=True)
        pixels = load_image(path, size, fit)
    except Fold0123Error as err:
        assert_one_clear_line(err, path)
        return
    seen.accept()
    assert pixels.shape == (size, size, 3) and pixels.dtype == np.uint8


def test_photos_decode_to_rgb_or_fail_in_one_line_naming_the_file(tmp_path):
    (tmp_path / "photos").mkdir()
    run_counted("photos", _photos, 60 * SCALE, 0.15, root=tmp_path)


# ------------------------------------------------------------------------------------------ stacking inputs

arrays = st.one_of(
    st.tuples(st.just("ok"), st.integers(0, 4), st.integers(1, 3)),
    st.tuples(st.just("ids"), st.sampled_from(["int", "bytes", "object", "2d", "missing"]), st.integers(1, 3)),
    st.tuples(st.just("outputs"), st.sampled_from(["nan", "inf", "2d", "7views", "short", "int", "missing",
                                                   "object"]), st.integers(1, 3)),
    st.tuples(st.just("bytes"), st.sampled_from([b"", b"PK", b"\x93NUMPY", b"PK\x03\x04" + b"\0" * 30]),
              st.integers(1, 3)),
)


def _write_npz(path: Path, case) -> tuple[int, int] | None:
    """Write the case; return (n, d) when it is a valid file."""
    kind, what, d = case
    n = 4
    ids = np.array([f"id{i}" for i in range(n)])
    outputs = np.random.default_rng(0).normal(size=(n, len(rundir.VIEWS), d)).astype(np.float32)
    if kind == "bytes":
        path.write_bytes(what)
        return None
    if kind == "ok":
        n = what
        np.savez(path, ids=ids[:n], outputs=outputs[:n])
        return n, d
    arrays_ = {"ids": ids, "outputs": outputs}
    if kind == "ids":
        arrays_["ids"] = {"int": np.arange(n), "bytes": ids.astype("S"), "object": ids.astype(object),
                          "2d": ids.reshape(2, 2), "missing": None}[what]
    else:
        bad = outputs.copy()
        if what in ("nan", "inf"):
            bad[1, 2, 0] = np.nan if what == "nan" else np.inf
        arrays_["outputs"] = {"nan": bad, "inf": bad, "2d": outputs[:, 0], "7views": outputs[:, :7],
                              "short": outputs[:2], "int": outputs.astype(np.int64) + 0 * 0, "missing": None,
                              "object": outputs.astype(object)}[what]
    kept = {k: v for k, v in arrays_.items() if v is not None}
    if any(v.dtype == object for v in kept.values()):
        np.savez(path, allow_pickle=True, **kept)
    else:
        np.savez(path, **kept)
    return (n, d) if kind == "outputs" and what == "int" else None


@examples(80)
@given(case=arrays)
def _npzs(case, run, seen):
    seen.add(repr(case))
    path = eval_path(run, 1, "oof")
    valid = _write_npz(path, case)
    os.utime(path, ns=(len(seen), len(seen)))  # load_outputs caches by (size, mtime): a new file, a new read
    try:
        loaded = load_outputs(run, 1, "oof")
    except Fold0123Error as err:
        assert isinstance(err, RunError)
        assert_one_clear_line(err, path)
        assert valid is None, f"a valid file was refused: {err}"
        return
    seen.accept()
    assert valid is not None, f"{case} was accepted"
    assert loaded.outputs.shape == (valid[0], len(rundir.VIEWS), valid[1]) and np.isfinite(loaded.outputs).all()
    assert loaded.ids.dtype.kind == "U"


def test_eval_npz_cases_load_correctly_or_fail_in_one_line(tmp_path):
    (tmp_path / "eval").mkdir()
    run_counted("eval npz", _npzs, min(25 * SCALE, 60), 0.1, run=tmp_path)  # the space holds about 70 distinct files


@examples(60)
@given(body=st.one_of(st.text(max_size=30), st.fixed_dictionaries(  # a valid file, with extra keys or not
    {k: st.just({"mean": {"rmse": 0.5}}) if k == "views" else st.integers(0, 9) for k in rundir.METRICS_KEYS},
    optional={"other": st.integers(), "primary_view": st.sampled_from(["mean", "identity"])}).map(json.dumps),
    st.dictionaries(
    st.sampled_from(list(rundir.METRICS_KEYS) + ["other"]),
    st.one_of(st.integers(), st.text(max_size=4), st.none(), st.just({}), st.lists(st.integers(), max_size=2)),
    max_size=len(rundir.METRICS_KEYS) + 1).map(json.dumps)))
def _metrics(body, run, seen):
    seen.add(body)
    path = rundir.metrics_path(run, "epoch1")
    path.write_text(body)
    try:
        metrics = rundir.read_metrics(run, "epoch1")
    except Fold0123Error as err:
        assert_one_clear_line(err, path)
        return
    seen.accept()
    assert set(rundir.METRICS_KEYS) <= set(metrics) and isinstance(metrics["views"], dict)


def test_metrics_json_cases_read_correctly_or_fail_in_one_line(tmp_path):
    (tmp_path / "eval").mkdir()
    run_counted("metrics json", _metrics, 45 * SCALE, 0.2, run=tmp_path)


@examples(60)
@given(rows=st.one_of(
    st.permutations(["a", "b", "c", "d"]).flatmap(  # every asked id once with a valid label, in any order
        lambda ids: st.tuples(*[st.tuples(st.just(i), st.sampled_from(["0", "1", "2", "3"])) for i in ids])
    ).map(list),
    st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d", "", "a "]),
                       st.sampled_from(["0", "1", "3", "4", "-1", "1.5", "x", "", "nan"])), max_size=5)),
       header=st.sampled_from(["object_id,target", "object_id", "id,target", "object_id,target,sorting_date"]))
def _answers(rows, header, root, seen):
    seen.add((tuple(rows), header))
    path = root / "answers.csv"
    extra = ",1900" if header.endswith("sorting_date") else ""
    path.write_text("\n".join([header] + [f"{i},{t}{extra}" if "," in header else i for i, t in rows]) + "\n")
    predictions = np.full(4, 1.5)
    try:
        score = score_answers(["a", "b", "c", "d"], predictions, path)
    except Fold0123Error as err:
        assert_one_clear_line(err, path)
        return
    seen.accept()
    answers = pd.read_csv(path, dtype={"object_id": str}).set_index("object_id")["target"]
    expected = float(np.sqrt(np.mean((answers.loc[["a", "b", "c", "d"]].to_numpy(float) - 1.5) ** 2)))
    assert math.isclose(score["rmse"], expected, rel_tol=1e-9) and score["n"] == 4


def test_answers_cases_score_correctly_or_fail_in_one_line(tmp_path):
    run_counted("answers csv", _answers, 40 * SCALE, 0.1, root=tmp_path)


# ------------------------------------------------------------------------------- issue 22: the two root causes

TEXT_INPUTS = ("config", "competition.yml", "train.csv", "texts.jsonl", "imgs.tsv")


def _text_inputs(tmp: Path) -> dict:
    """One valid file of each text input, and the reader the pipeline reads it with."""
    from fold0123.data.competition import read_spec
    from fold0123.data.muge import read_split as read_muge_split
    from tests.conftest import make_dataroot, make_muge_root

    muge_root = make_muge_root(tmp / "muge", per_split=(3, 3, 3))
    dataroot = make_dataroot(tmp / "data", n_train=8, n_test=4)
    spec_root = tmp / "spec"
    spec_root.mkdir()
    (spec_root / "competition.yml").write_text("name: t\nkind: regression\nmetric: rmse\n")
    config = tmp / "conf.yml"
    config.write_text("exp: x\nlr: 0.001\nepochs: 2\n")
    from fold0123.common import muge
    return {"config": (config, lambda: load_config(config, [], schema=RunConfig)),
            "competition.yml": (spec_root / "competition.yml", lambda: read_spec(spec_root)),
            "train.csv": (dataroot / "train.csv", lambda: read_train(dataroot)),
            "texts.jsonl": (muge.texts_jsonl(muge_root, "valid"), lambda: read_muge_split(muge_root, "valid", False)),
            "imgs.tsv": (muge.images_tsv(muge_root, "valid"), lambda: read_muge_split(muge_root, "valid", False))}


@examples(100)
@given(which=st.sampled_from(TEXT_INPUTS), where=st.floats(0, 1), junk=st.binary(min_size=1, max_size=4))
def _non_utf8(which, where, junk, inputs, seen):
    seen.add((which, round(where, 3), junk))
    path, read = inputs[which]
    original = inputs[which + " bytes"]
    at = int(where * len(original))
    mutated = original[:at] + junk + original[at:]
    path.write_bytes(mutated)
    try:
        try:
            mutated.decode("utf-8")
            decodes = True
        except UnicodeDecodeError:
            decodes = False
        try:
            read()
        except Fold0123Error as err:
            message = assert_one_clear_line(err, path)
            if not decodes:
                assert "UTF-8" in message or "CSV" in message, message
            return
        assert decodes, f"{path}: {junk!r} at byte {at} is not UTF-8, yet it was read"
        seen.accept()
    finally:
        path.write_bytes(original)


def test_non_utf8_bytes_in_every_text_input_end_in_a_result_or_one_line_naming_the_file(tmp_path):
    inputs = _text_inputs(tmp_path)
    inputs.update({f"{k} bytes": v[0].read_bytes() for k, v in list(inputs.items())})
    run_counted("non-UTF-8 text inputs", _non_utf8, 70 * SCALE, 0.02, inputs=inputs)


def _writers(tmp: Path) -> dict:
    """Every kind of output the pipeline writes, each into a folder `out` it is given."""
    from fold0123.common.build import staged_build
    from fold0123.common.io import exclusive_lock, make_dir, write_csv, write_json, write_text
    from fold0123.engine.trainer import train
    from fold0123.preprocessing import adapters, pack_lmdb
    from fold0123.reports.markdown import write_submission
    from fold0123.retrieval.predictions import save_similarity
    from tests.conftest import make_dataroot, make_muge_root, tiny_config

    muge_root = make_muge_root(tmp / "muge", per_split=(3, 3, 3))
    from fold0123.data.folds import write_folds

    dataroot = make_dataroot(tmp / "data", n_train=24, n_test=4)
    write_folds(dataroot, k=3, batch_size=None, seed=0)
    src = tmp / "folder_src"
    for i, photo in enumerate(sorted((dataroot / "photos").iterdir())[:12]):
        folder = src / ("test" if i >= 9 else f"train/c{i % 2}")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, folder / photo.name)

    def staged(out):
        with staged_build(out / "built"):
            pass

    def locked(out):
        with exclusive_lock(out / "cache.npy.lock", wait=True):
            pass

    return {
        "make_dir": lambda out: make_dir(out / "a"),
        "write_text": lambda out: write_text(out / "f.txt", "x"),
        "write_json": lambda out: write_json(out / "f.json", {"a": 1}),
        "write_csv": lambda out: write_csv(out / "f.csv", pd.DataFrame({"a": [1]})),
        "image-cache lock": locked,
        "staged build": staged,
        "similarity": lambda out: save_similarity(out / "s.npy", np.zeros((1, 1)), [1], [2]),
        "submission": lambda out: write_submission(out, "sub", ["a"], np.zeros(1)),
        "pack_lmdb": lambda out: pack_lmdb.pack_split(muge_root, "valid", out, decode=False),
        "adapter --out": lambda out: adapters.main(["imagefolder", str(src), "--out", str(out / "built"),
                                                    "--no-decode"]),
        "checkpoints_dir": lambda out: train(tiny_config("target", dataroot, out, "transfer_from=null"), "3fold0",
                                             device="cpu", progress=False),
    }


@examples(60)
@given(writer=st.sampled_from(["make_dir", "write_text", "write_json", "write_csv", "image-cache lock",
                               "staged build", "similarity", "submission", "pack_lmdb", "adapter --out",
                               "checkpoints_dir"]),
       depth=st.lists(st.sampled_from(["x", "runs", "out dir"]), max_size=2))
def _read_only(writer, depth, ro, writers, seen):
    seen.add((writer, tuple(depth)))
    out = ro.joinpath(*depth)
    try:
        writers[writer](out)
    except SystemExit as exit_:  # a CLI: its one line
        line = str(exit_.code)
        assert line.startswith("error: ") and "\n" not in line and "read-only file system" in line, line
    except Fold0123Error as err:
        assert "read-only file system" in assert_one_clear_line(err, ro)
    else:
        raise AssertionError(f"{writer} wrote into a read-only {out}")
    assert not any(ro.iterdir())


def test_every_output_folder_read_only_ends_in_one_line_and_writes_nothing(tmp_path):
    writers = _writers(tmp_path)
    with read_only_folder(tmp_path) as ro:  # the space holds 143 distinct (writer, folder depth) cases
        run_counted("read-only outputs", _read_only, min(25 * SCALE, 120), 0.0, ro=ro, writers=writers)


@pytest.fixture(scope="module", autouse=True)
def _report_counts():
    yield
    if COUNTS:
        print(f"\nproperty cases: {sum(COUNTS.values())} distinct ({', '.join(f'{k} {v}' for k, v in COUNTS.items())})")
