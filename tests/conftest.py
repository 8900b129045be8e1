"""The tests' shared set-up, in one place: the checkout's ROOT, the fixture dataroots the tests make themselves
(atmaCup #11 layout, K-class, MUGE retrieval, label-only with synthetic run directories), the engine's tiny configs
and session runs, and the pytest fixtures. Test modules import the helpers from here (`from tests.conftest import
...`); the fault-injection machinery lives in tests/faults_harness.py.
"""
from __future__ import annotations

import contextlib
import functools
import io
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy and torch read it

import numpy as np  # noqa: E402
import pandas as pd
import pytest
import yaml
from PIL import Image

from fold0123.common import muge, rundir
from fold0123.common.config import dump_config, load_config
from fold0123.common.io import atomic_path, write_csv, write_json, write_text
from fold0123.common.schema import RunConfig, StackConfig
from fold0123.data.layout import read_csv, read_test, read_train, split_names, split_paths, tag_vectors_path
from fold0123.data.muge import MugeText, encode_base64, read_texts, write_images, write_texts
from fold0123.data.tags import vector_columns

ROOT = Path(__file__).resolve().parents[1]


def run_script(script: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """One of the top-level CLIs in a subprocess, as a user runs it (one thread, a bare PATH)."""
    return subprocess.run([sys.executable, script, *args], cwd=cwd, capture_output=True, text=True,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})


@contextlib.contextmanager
def read_only_folder(parent: Path):
    """A real read-only file system (EROFS) when this runs as root; skips otherwise (chmod cannot make EROFS, and
    root ignores permission bits)."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("a read-only mount needs root")
    folder = parent / "ro"
    folder.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True)
    if made.returncode:
        pytest.skip(f"cannot mount a read-only tmpfs here ({made.stderr.decode().strip()})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def cfg_with(cfg: RunConfig, **changes) -> RunConfig:
    """`cfg` with some keys changed, validated again."""
    return RunConfig(**{**cfg.model_dump(), **changes})


# ------------------------------------------------------------------------ a tiny dataroot in the atmaCup #11 layout
# Images carry a learnable signal (the hue and the position of a bright square depend on the target), series hold
# 1-3 objects, and tags correlate with the target, so a broken pipeline scores visibly worse than a working one.
# `test_tags=False` leaves the test objects out of materials.csv and techniques.csv, as atmaCup #11 shipped them.

YEARS = {0: 2010, 1: 2015, 2: 2016, 3: 2019}
MATERIALS = [["paper", "ink"], ["paper", "pencil"], ["oil", "canvas"], ["pencil", "wood"]]
TECHNIQUES = [["etching"], ["pencil", "drawing"], ["painting"], ["carving"]]


def draw_era(target: int, rng: np.random.Generator, size: int) -> Image.Image:
    base = np.array([[200, 60, 60], [60, 200, 60], [60, 60, 200], [200, 200, 60]][target], dtype=float)
    pixels = np.clip(base + rng.normal(0, 25, (size, size, 3)), 0, 255)
    q = size // 4
    y, x = [(0, 0), (0, 2), (2, 0), (2, 2)][target]
    pixels[y * q:(y + 2) * q, x * q:(x + 2) * q] = 255
    return Image.fromarray(pixels.astype(np.uint8))


def make_dataroot(root: Path, n_train: int = 48, n_test: int = 16, size: int = 32, seed: int = 0,
                  test_tags: bool = True) -> Path:
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "photos").mkdir(parents=True, exist_ok=True)
    rows, series = [], 0
    while len(rows) < n_train + n_test:
        target = int(rng.integers(0, 4))
        for _ in range(int(rng.integers(1, 4))):
            rows.append(dict(object_id=f"{rng.integers(16**12):012x}", art_series_id=f"s{series:04d}", target=target,
                             sorting_date=YEARS[target] + int(rng.integers(0, 2))))
        series += 1
    frame = pd.DataFrame(rows[: n_train + n_test])
    # the last series go to test whole, so no series straddles train and test
    test_series = frame["art_series_id"].drop_duplicates().iloc[-(n_test // 2):]
    is_test = frame["art_series_id"].isin(test_series)
    materials, techniques = [], []
    for row, test in zip(frame.itertuples(), is_test):
        draw_era(row.target, rng, size).save(root / "photos" / f"{row.object_id}.jpg", quality=95)
        tagged_materials = [(row.object_id, m) for m in MATERIALS[row.target] if rng.random() < 0.9]
        tagged_techniques = [(row.object_id, t) for t in TECHNIQUES[row.target] if rng.random() < 0.9]
        if test_tags or not test:  # the same draws either way, so the photos do not depend on the option
            materials += tagged_materials
            techniques += tagged_techniques
    frame[~is_test][["object_id", "sorting_date", "art_series_id", "target"]].to_csv(root / "train.csv", index=False)
    frame[is_test][["object_id"]].to_csv(root / "test.csv", index=False)
    frame[is_test][["object_id", "target", "sorting_date"]].to_csv(root.parent / "answers.csv", index=False)
    pd.DataFrame(materials, columns=["object_id", "name"]).to_csv(root / "materials.csv", index=False)
    pd.DataFrame(techniques, columns=["object_id", "name"]).to_csv(root / "techniques.csv", index=False)
    return root


# ----------------------------------------------------------------------------------- a tiny K-class dataroot
# The project's layout with a `competition.yml`: no group column, no year, class names instead of atmaCup's four
# eras; the colour and a bright square's position give the class.

def draw_class(label: int, k: int, rng: np.random.Generator, size: int) -> Image.Image:
    angle = 2 * np.pi * label / k
    hue = np.array([np.cos(angle), np.cos(angle + 2), np.cos(angle + 4)])
    pixels = np.clip(128 + 100 * hue + rng.normal(0, 20, (size, size, 3)), 0, 255)
    q = size // 4
    y, x = divmod(label % 9, 3)
    pixels[y * q:(y + 1) * q, x * q:(x + 1) * q] = 255
    return Image.fromarray(pixels.astype(np.uint8))


def make_class_dataroot(root: Path, k: int = 7, n_train: int = 84, n_test: int = 35, size: int = 32,
                        seed: int = 0, metric: str = "accuracy") -> Path:
    """`root/competition.yml` (classification, `metric`, classes c0..c{k-1}), train.csv (object_id, target, kind: an
    extra column adapters keep), test.csv, photos; answers in root.parent/answers.csv."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "photos").mkdir(parents=True, exist_ok=True)
    labels = np.arange(n_train + n_test) % k
    rng.shuffle(labels)
    ids = [f"img{i:04d}" for i in range(len(labels))]
    for object_id, label in zip(ids, labels):
        draw_class(int(label), k, rng, size).save(root / "photos" / f"{object_id}.jpg", quality=95)
    frame = pd.DataFrame({"object_id": ids, "target": labels, "kind": "photo"})
    frame[:n_train].to_csv(root / "train.csv", index=False)
    frame[n_train:][["object_id"]].to_csv(root / "test.csv", index=False)
    frame[n_train:][["object_id", "target"]].to_csv(root.parent / "answers.csv", index=False)
    classes = ", ".join(f"c{c}" for c in range(k))
    (root / "competition.yml").write_text(f"name: tiny{k}\nkind: classification\nmetric: {metric}\n"
                                          f"classes: [{classes}]\ngroup_column: null\ncolumns: []\n")
    return root


# --------------------------------------------------------------------------------------------- the engine's set-up
# A tiny dataroot with folds and tag vectors, and one pretext + transfer run made once per session (they cost
# seconds, and three test files read them).

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
    import torch

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
    tags as atmaCup #11), 3 folds and `all`, all its runs under `root/runs` (each preset plus `run_keys`), stacking
    `tasks`."""
    dataroot = make_dataroot(root / "data", test_tags=False)
    runs, tiny = root / "runs", ROOT / "parameters" / "tiny"
    confs = {name: write(root / f"{name}.yml", f"base: {tiny / name}.yml\ncheckpoints_dir: {runs}\n{run_keys}")
             for name in ("jigsaw", *tasks)}
    chosen = ", ".join(f"{task}: last" for task in tasks)  # a mapping --set replaces the whole mapping
    stack = load_config(tiny / "stack.yml", [f"checkpoints_dir={runs}", f"out_dir={root / 'submissions'}",
                                             f"runs={{{chosen}}}"], schema=StackConfig)
    return Path(write(root / "recipe.yml", f"""base: {ROOT / 'parameters' / 'demo' / 'three_folds_all' / 'recipe.yml'}
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
    from fold0123.engine import saver, trainer

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


def killed_in_epoch_2_then_resumed(cfg: RunConfig, split: str, monkeypatch, where: str = "mid-epoch") -> Path:
    """Train `cfg`, killed in epoch 2 (see interrupt_in_epoch_2), then resumed to the end: the run directory."""
    from fold0123.engine.trainer import train

    interrupt_in_epoch_2(monkeypatch, where)
    with pytest.raises(Interrupt):
        train(cfg, split, "cpu", progress=False)
    monkeypatch.undo()
    return train(cfg, split, "cpu", resume=True, progress=False)


def assert_backbone_transferred(jigsaw: Path, run: Path, cfg: RunConfig, changed: str) -> dict:
    """A frozen transfer: the run's backbone is the pretext's whole, and its `changed` weight is not the fresh
    initialisation. The run's epoch-1 weights."""
    import torch

    from fold0123.engine.trainer import epoch_seed
    from fold0123.models.checkpoints import read_checkpoint
    from fold0123.models.network import build_model
    from fold0123.models.tasks import get_task

    pretext = read_checkpoint(rundir.checkpoint_path(jigsaw, 1))["model"]
    tuned = read_checkpoint(rundir.checkpoint_path(run, 1))["model"]
    torch.manual_seed(epoch_seed(cfg.seed, 0))
    fresh = build_model(cfg, get_task("target")).state_dict()
    backbone = [k for k in tuned if k.startswith("backbone.")]
    assert backbone and all(torch.equal(tuned[k], pretext[k]) for k in backbone)  # frozen: the pretext's, whole
    assert not torch.equal(tuned[changed], fresh[changed])
    return tuned


def assert_epoch_spec_taken(good: list[str], expected: dict, bad: list[str], message: str) -> None:
    """The stack config's `runs` take the epoch specs in `good` (giving `expected`); each of `bad` is refused in
    one line matching `message`."""
    cfg = load_config(ROOT / "parameters/stack.yml", good, schema=StackConfig)
    assert {"runs": cfg.runs, "ensemble.runs": cfg.ensemble.runs} == expected
    from fold0123.common.config import ConfigError

    for spec in bad:
        with pytest.raises(ConfigError, match=rf"key 'runs.target': .*{message}.*\(got '{spec}'\)") as err:
            load_config(ROOT / "parameters/stack.yml", [f"runs={{target: {spec}}}"], schema=StackConfig)
        assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- a tiny retrieval dataroot (MUGE)
# Each image shows a concept (a colour and the position of a bright square) and its text names it ("red top
# left"), with noise, so a text tower and an image tower can learn to meet; several images share a text, so
# batches hold identical texts. Test texts are written without image_ids; their answers go to `{root}_private`,
# and a test-time-learning cache (other noisy drawings of the valid and test concepts) to `{root}_cache`, as
# the bundled build does.

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 220), "yellow": (220, 220, 40)}
PLACES = {"top left": (0, 0), "top right": (0, 2), "bottom left": (2, 0), "bottom right": (2, 2)}


def draw_concept(colour: str, place: str, rng: np.random.Generator, size: int = 16) -> bytes:
    pixels = np.clip(np.array(COLOURS[colour], float) + rng.normal(0, 20, (size, size, 3)), 0, 255)
    q = size // 4
    y, x = PLACES[place]
    pixels[y * q:(y + 2) * q, x * q:(x + 2) * q] = 255
    out = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(out, "PNG")
    return out.getvalue()


def make_muge_root(root: Path, per_split=(48, 16, 16), seed: int = 0, size: int = 16) -> Path:
    rng = np.random.default_rng(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    concepts = [(c, p) for c in COLOURS for p in PLACES]
    next_id = iter(range(1000, 100000, 7))
    cache_images, cache_texts = {}, []
    for split, n in zip(muge.SPLITS, per_split):
        images, texts = {}, []
        for i in range(n):
            colour, place = concepts[int(rng.integers(len(concepts)))]
            image_id, text_id = next(next_id), next(next_id)
            images[image_id] = encode_base64(draw_concept(colour, place, rng, size))
            texts.append(MugeText(text_id, f"{colour} {place}", (image_id,)))
            if split == "test":
                cache_id = next(next_id)
                cache_images[cache_id] = encode_base64(draw_concept(colour, place, rng, size))
                cache_texts.append(MugeText(text_id, f"{colour} {place}", (cache_id,)))
        write_images(muge.images_tsv(root, split), images)
        write_texts(muge.texts_jsonl(root, split), texts, answers=split != "test")
        if split == "test":
            write_texts(muge.texts_jsonl(root.parent / f"{root.name}_private", "test"), texts)
    write_images(muge.images_tsv(root.parent / f"{root.name}_cache", "test"), cache_images)
    write_texts(muge.texts_jsonl(root.parent / f"{root.name}_cache", "test"), cache_texts)
    # the valid split's cache, drawn with a generator of its own so the splits above stay what they were
    other, valid_images, valid_texts = np.random.default_rng(seed + 1), {}, []
    for text in read_texts(muge.texts_jsonl(root, "valid")):
        cache_id = next(next_id)
        valid_images[cache_id] = encode_base64(draw_concept(*_concept(text.text), other, size))
        valid_texts.append(MugeText(text.text_id, text.text, (cache_id,)))
    write_images(muge.images_tsv(root.parent / f"{root.name}_cache", "valid"), valid_images)
    write_texts(muge.texts_jsonl(root.parent / f"{root.name}_cache", "valid"), valid_texts)
    return root


def _concept(text: str) -> tuple[str, str]:
    colour, place = text.split(" ", 1)
    return colour, place


# ------------------------------------------------------------------------------------ synthetic run directories
# Contract-exact fake run directories with a known signal, for the tests of the stacking step.
# `make_synthetic_dataroot` writes a label-only dataroot (train.csv, test.csv, the {K}fold{k} and `all` split CSVs,
# the tag vectors of dimension W2V_DIM; no photos) and `answers.csv` beside it. `make_runs` writes, for each task
# and each split in split_names(K), what train.py and evaluate.py would: config.yml,
# eval/epoch{E}_{oof,test,train}.npz (ids + outputs [n, 8, d] float32), eval/epoch{E}_metrics.json and DONE. The
# metrics, their primary and its direction come from the task table (models.tasks), as evaluate.py's do. Every
# model's error on an object is its own random draw, shrinking with the epoch, so averaging tasks (stacking) beats
# any single one; the `train` part (in-fold) has a quarter of that error, like a model that saw those labels.

TASKS = ("target", "onehot", "sortingdate", "materialstechniques")
SYNTHETIC_YEARS = {0: 1600.0, 1: 1700.0, 2: 1800.0, 3: 1880.0}
CENTERS = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]], float)  # each class's tag vector
W2V_DIM = CENTERS.shape[1]


def make_synthetic_dataroot(root: str | Path, n_train: int = 240, n_test: int = 80, k: int = 3, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    root = Path(root)
    rows, series = [], 0
    while len(rows) < n_train + n_test:
        target = int(rng.integers(0, 4))
        for _ in range(int(rng.integers(1, 4))):
            rows.append(dict(object_id=f"{rng.integers(16 ** 12):012x}", sorting_date=SYNTHETIC_YEARS[target] +
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


def save_npz(path: Path, ids, outputs, views=None) -> None:
    """An eval npz as evaluate.py writes it (atomically); `views`: the names of a kept form (rundir.VIEW_FORMS)."""
    extra = {} if views is None else {"views": np.asarray(views)}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, ids=np.asarray(ids, dtype=str), outputs=outputs, **extra)


def make_runs(checkpoints_dir: str | Path, dataroot: str | Path, tasks=TASKS, k: int = 3, epochs: int = 3,
              seed: int = 0, train_epochs=None, split_suffix: str = "") -> list[Path]:
    """Write one run per (task, split); experiment name = task. `train_epochs`: epochs with a `train` part
    (default: all). Returns the run directories."""
    from fold0123.models.tasks import get_task
    from fold0123.stacking.runs import eval_path, run_dir

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


# --------------------------------------------------------------------------------------------------- fixtures

@pytest.fixture
def dataroot(tmp_path: Path) -> Path:
    """A fresh tiny dataroot (train.csv, test.csv, tags, 32 px photos); answers.csv lies beside it."""
    return make_dataroot(tmp_path / "data")


@pytest.fixture(autouse=True, scope="session")
def private_tmpdir(tmp_path_factory):
    """The suite's temporary files under pytest's base folder, which goes when the session passes, instead of in
    /tmp for good: torch's spawn error files (`pytorch-errorfile-*.pickle`), torchrun's `torchelastic_*` log
    folders, and whatever the scripts the tests start make there."""
    folder = str(tmp_path_factory.mktemp("tmpdir"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", folder)
        patch.setattr(tempfile, "tempdir", folder)
        yield folder


@pytest.fixture
def tmux_socket():
    """A private tmux server name; the server (and everything it runs) is killed afterwards."""
    name = f"fold0123test_{uuid.uuid4().hex[:8]}"
    yield name
    subprocess.run(["tmux", "-L", name, "kill-server"], capture_output=True)


def pytest_terminal_summary(terminalreporter):
    """The fault-injection figures (tests/test_faults.py), one line per probe, when any probe ran."""
    import sys

    harness = sys.modules.get("tests.faults_harness")
    if harness is None or not harness.SUMMARY:
        return
    terminalreporter.section("fault injection")
    for part in harness.summary_line(harness.SUMMARY).split("; "):
        terminalreporter.write_line(part)
    if os.environ.get("FAULT_SUMMARY"):
        terminalreporter.write_line(f"figures and the kill schedule: {os.environ['FAULT_SUMMARY']}")
