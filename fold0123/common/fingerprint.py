"""Fingerprints: what made an output, so that a re-run can tell an output it may reuse from a stale one.

Every output that a later stage reuses instead of recomputing (a run directory, the fold files, the tag
vectors; the image cache carries its inputs in its name) stores a fingerprint beside it: the part of the config
that changes what it computes (flattened `key: value`) and a digest of each input it read. A re-run builds the
fingerprint it would store now and compares: any difference is reported by name (`lr: 0.001 -> 0.0003`,
`3fold0_test.csv changed`) and the output is redone (`--redo-stale`) or refused, never mixed in.

Digests: small inputs (split CSVs, tag tables and vectors) by content; the photo folder and checkpoints by
name + size + mtime, which a replaced photo or a retrained pretext run changes, without reading gigabytes.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from pydantic import BaseModel

from fold0123.common import dataroot, muge, rundir
from fold0123.common.dataroot import TAG_TABLES, tag_table_path
from fold0123.common.errors import Fold0123Error
from fold0123.common.io import file_hash, write_json
from fold0123.common.schema import RUN_VOLATILE_KEYS


class StaleError(Fold0123Error):
    """An output made by a different config or from different inputs than the ones asked for now."""


def file_digest(path: str | Path) -> str:
    """sha256 of the file's content (first 16 hex digits); 'missing' when it does not exist."""
    return file_hash(path).hexdigest()[:16] if Path(path).is_file() else "missing"


def stat_digest(paths: Iterable[str | Path]) -> str:
    """Digest of the names, sizes and modification times of `paths` (a missing file counts as such)."""
    h = hashlib.sha256()
    for path in paths:
        try:
            st = os.stat(path)
            h.update(f"{Path(path).name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except FileNotFoundError:
            h.update(f"{Path(path).name}|missing\n".encode())
    return h.hexdigest()[:16]


def folder_digest(folder: str | Path) -> str:
    """stat_digest of every file in `folder` (sorted): a replaced, added or removed photo changes it."""
    folder = Path(folder)
    if not folder.is_dir():
        return "missing"
    with os.scandir(folder) as entries:
        names = sorted(e.path for e in entries if e.is_file())
    return stat_digest(names)


def flatten(mapping: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def config_identity(cfg: BaseModel, volatile: Iterable[str] = ()) -> dict[str, Any]:
    """The config's keys that change what it computes, flattened (`jigsaw.grid: 3`), volatile keys left out."""
    volatile = tuple(volatile)
    flat = flatten(cfg.model_dump(mode="json"))
    return {k: v for k, v in flat.items() if not any(k == v_ or k.startswith(v_ + ".") for v_ in volatile)}


@dataclass
class Fingerprint:
    config: dict[str, Any]
    inputs: dict[str, str] = field(default_factory=dict)

    def digest(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_fingerprint(path: str | Path, fingerprint: Fingerprint) -> None:
    write_json(Path(path), asdict(fingerprint))


def read_fingerprint(path: str | Path) -> Fingerprint | None:
    """The stored fingerprint, or None when there is none (an output of an older version: treat as stale)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
        return Fingerprint(dict(raw["config"]), dict(raw.get("inputs", {})))
    except (ValueError, KeyError, TypeError):
        raise StaleError(f"{path}: not a fingerprint file (delete it, or pass --redo-stale)") from None


# Keys added to the run schema after runs existed, with the value that gives what those runs computed: a stored
# fingerprint without such a key was made with that behaviour, so the new key alone makes nothing stale.
ADDED_LATER = {"resize": "pad", "label_smoothing": 0.0, "head": "linear", "layer_decay": 1.0,
               "arcface.subcenters": 3, "arcface.scale": 30.0, "arcface.margin_min": 0.05, "arcface.margin_max": 0.5,
               "cpu_extras": False, "sync_bn": False, "transfer": "backbone", "mim.mask_ratio": 0.6,
               # the training-recipe keys (issue 19): off, or torchvision's model, as every earlier run trained
               "stem": "imagenet", "width": 64, "drop_path": 0.0, "augmentation.crop_scale": None,
               "augmentation.crop_ratio": [0.75, 4 / 3], "augmentation.policy": "none", "augmentation.magnitude": 9,
               "augmentation.color_jitter": 0.0, "augmentation.erasing": 0.0, "mixup.mixup_alpha": 0.0,
               "mixup.cutmix_alpha": 0.0, "mixup.prob": 1.0, "mixup.off_epochs": 0, "ema.decay": 0.0,
               "ema.warmup": True, "seed_offset": 0}


def differences(stored: Fingerprint | None, now: Fingerprint) -> list[str]:
    """What differs between the stored fingerprint and the one asked for now, one short phrase each."""
    if stored is None:
        return ["no fingerprint (made by an older version, or by hand)"]
    out = []
    for key in sorted(set(stored.config) | set(now.config)):
        old, new = stored.config.get(key, ADDED_LATER.get(key, "<unset>")), now.config.get(key, "<unset>")
        if old != new:
            out.append(f"{key}: {old!r} -> {new!r}")
    for name in sorted(set(stored.inputs) | set(now.inputs)):
        old, new = stored.inputs.get(name), now.inputs.get(name)
        if old is None:
            out.append(f"{name} is a new input")
        elif new is None:
            out.append(f"{name} is no longer an input")
        elif old != new:
            out.append(f"{name} changed")
    return out


def stale_message(what: str | Path, reasons: list[str]) -> str:
    shown = "; ".join(reasons[:6]) + (f"; and {len(reasons) - 6} more" if len(reasons) > 6 else "")
    return f"{what} is stale ({shown}): pass --redo-stale to redo it, or delete it"


# ---------------------------------------------------------------------------------------------------- run directories

def run_inputs(cfg, split: str) -> dict[str, str]:
    """Digests of what a run of `cfg` on `split` reads: its split files, the competition spec, the photos, the tag
    vectors or tables its task uses, and the checkpoint it transfers from (keyed by names relative to the
    dataroot)."""
    root = Path(cfg.dataroot)
    if cfg.task == "clip":  # a MUGE-layout dataroot: the texts by content, the packed images by stat
        inputs = {muge.texts_jsonl(root, s).name: file_digest(muge.texts_jsonl(root, s)) for s in muge.SPLITS}
        inputs["lmdb/"] = stat_digest(muge.lmdb_images(root, s) / "data.mdb" for s in muge.SPLITS)
    else:
        files = list(dataroot.split_paths(root, split))
        if cfg.task == "materialstechniques":
            files.append(dataroot.tag_vectors_path(root, cfg.w2v_dim))
        if cfg.task == "tags":
            files.extend(tag_table_path(root, table) for table in TAG_TABLES)
        if (root / "competition.yml").is_file():  # its classes size the head (atmaCup dataroots have none)
            files.append(root / "competition.yml")
        inputs = {p.name: file_digest(p) for p in files}
        inputs["photos/"] = folder_digest(dataroot.photos_dir(root))
    try:
        transfer = rundir.resolve_transfer(cfg, quiet=True)
    except rundir.RunError:
        inputs["transfer checkpoint"] = "missing"
    else:
        if transfer is not None:
            inputs["transfer checkpoint"] = f"{Path(transfer).resolve()}|{stat_digest([transfer])}"
    return inputs


def run_fingerprint(cfg, split: str) -> Fingerprint:
    return Fingerprint(config_identity(cfg, RUN_VOLATILE_KEYS), run_inputs(cfg, split))


def run_staleness(run: str | Path, cfg, split: str) -> list[str]:
    """Why the run directory `run` was not made by `cfg` on `split` from today's inputs ([] = it was)."""
    return differences(read_fingerprint(rundir.fingerprint_path(run)), run_fingerprint(cfg, split))


# ---------------------------------------------------------------------------------------------------- dataroot outputs

def folds_fingerprint(dataroot: str | Path, k: int, batch_size: int | None, seed: int) -> Fingerprint:
    """What the `{k}fold*`/`all` split files are made of (SGKFold.py stores it beside them); batch size 0 and
    None both mean no alignment, as SGKFold.py's `--batch-size 0` does. A competition spec (its group column and
    kind decide the folds) counts where there is one; atmaCup dataroots have none, so their fingerprints stay."""
    root = Path(dataroot)
    names = ("train.csv", "test.csv") + (("competition.yml",) if (root / "competition.yml").is_file() else ())
    return Fingerprint({"k": int(k), "batch_size": batch_size or None, "seed": int(seed)},
                       {name: file_digest(root / name) for name in names})


def tag_vectors_fingerprint(dataroot: str | Path, dim: int, epochs: int, seed: int, sg: bool = False) -> Fingerprint:
    """What `materialstechniques_w2v{dim}.csv` is made of (word2vec.py stores it beside it)."""
    root = Path(dataroot)
    names = ("train.csv", "test.csv", *(tag_table_path(root, table).name for table in TAG_TABLES))
    return Fingerprint({"dim": int(dim), "epochs": int(epochs), "seed": int(seed), "sg": bool(sg)},
                       {name: file_digest(root / name) for name in names})
