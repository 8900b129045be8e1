"""Names of the files of a retrieval dataroot in the MUGE / Chinese-CLIP layout, in one place: the data room reads
them, the packer writes the LMDB, the fingerprints and the retrieval commands only need to know where they are.

    {root}/{split}_imgs.tsv           image_id<TAB>base64 of a JPEG/PNG, one image per line (ids: integers)
    {root}/{split}_texts.jsonl        {"text_id": int, "text": str, "image_ids": [int, ...]} per line
                                      (test texts may lack image_ids: those are the answers)
    {root}/lmdb/{split}/imgs          LMDB: b"<image_id>" -> base64 bytes, b"num_images" -> count
    {root}/lmdb/{split}/pairs         LMDB: b"<index>" -> pickle of (image_id, text_id, text), b"num_samples"

Splits are `train`, `valid` and `test`, as MUGE ships them. The run split of a retrieval training (train.py
--split) says which MUGE splits it trains on: `train` (held out: valid) or `all` (train + valid, nothing held out).
"""
from __future__ import annotations

from pathlib import Path

from fold0123.common.names import check_name

SPLITS = ("train", "valid", "test")
RUN_SPLITS = {"train": ("train",), "all": ("train", "valid")}  # train.py --split -> the MUGE splits it trains on
HELD_OUT = {"train": "valid", "all": None}                       # -> the split its metrics are computed on


def images_tsv(root: str | Path, split: str) -> Path:
    return Path(root) / f"{check_name(split, 'split name')}_imgs.tsv"


def texts_jsonl(root: str | Path, split: str) -> Path:
    return Path(root) / f"{check_name(split, 'split name')}_texts.jsonl"


def lmdb_dir(root: str | Path, split: str) -> Path:
    return Path(root) / "lmdb" / check_name(split, "split name")


def lmdb_images(root: str | Path, split: str) -> Path:
    return lmdb_dir(root, split) / "imgs"


def lmdb_pairs(root: str | Path, split: str) -> Path:
    return lmdb_dir(root, split) / "pairs"

