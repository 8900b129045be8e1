"""The files retrieval writes and reads: MUGE-format predictions and similarity matrices with their id orders.

    {split}_predictions.jsonl    one line per text: {"text_id": int, "image_ids": [top 10, best first]}
    {name}.npy                   float32 [texts, images] similarity (text rows, image columns)
    {name}.ids.json              {"text_ids": [...], "image_ids": [...]}: the rows' and columns' ids, in order

The reader is as strict as the MUGE scorer (integer ids, a list of distinct ids per text, no text twice) and,
unlike the original's, reads what the writer writes (tests/test_retrieval.py round-trips it). A gallery smaller
than K gives shorter lists; the reader accepts 1..K ids per text.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fold0123.common.errors import LayoutError
from fold0123.common.io import atomic_path, write_json, write_text
from fold0123.data.muge import json_lines
from fold0123.data.recall import top_k

TOP_K = 10


def predictions_path(folder: str | Path, split: str) -> Path:
    return Path(folder) / f"{split}_predictions.jsonl"


def write_predictions(path: str | Path, text_ids, image_ids, similarity: np.ndarray, k: int = TOP_K) -> Path:
    """The top-`k` images of each text (similarity descending, ties to the earlier column), atomically."""
    similarity = np.asarray(similarity)
    if similarity.shape != (len(text_ids), len(image_ids)):
        raise ValueError(f"similarity {similarity.shape} for {len(text_ids)} texts x {len(image_ids)} images")
    image_ids = np.asarray([int(i) for i in image_ids], dtype=object)
    best = top_k(similarity, k)
    lines = [json.dumps({"text_id": int(t), "image_ids": [int(i) for i in image_ids[row]]})
             for t, row in zip(text_ids, best)]
    write_text(path, "\n".join(lines) + "\n")
    return Path(path)


def read_predictions(path: str | Path, k: int = TOP_K) -> dict[int, list[int]]:
    """text_id -> ranked image ids; one LayoutError line naming the file and line for anything malformed."""
    out: dict[int, list[int]] = {}
    for where, obj in json_lines(path, "predictions file"):
        if "text_id" not in obj or "image_ids" not in obj:
            raise LayoutError(f"{where}: expected {{\"text_id\": int, \"image_ids\": [int, ...]}}")
        text_id, ids = obj["text_id"], obj["image_ids"]
        if not isinstance(text_id, int) or isinstance(text_id, bool):
            raise LayoutError(f"{where}: text_id {text_id!r} is not an integer")
        if not isinstance(ids, list) or not 1 <= len(ids) <= k:
            raise LayoutError(f"{where}: text_id {text_id}: image_ids must be a list of 1 to {k} ids")
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise LayoutError(f"{where}: text_id {text_id}: image_ids must be integers")
        if len(set(ids)) != len(ids):
            raise LayoutError(f"{where}: text_id {text_id}: duplicate image ids in its list")
        if text_id in out:
            raise LayoutError(f"{where}: duplicate text_id {text_id}")
        out[text_id] = ids
    return out


def save_similarity(path: str | Path, similarity: np.ndarray, text_ids, image_ids) -> Path:
    """`{path}` (.npy, float32) and `{path minus .npy}.ids.json`, each atomically."""
    path = Path(path)
    similarity = np.asarray(similarity, dtype=np.float32)
    if similarity.shape != (len(text_ids), len(image_ids)):
        raise ValueError(f"similarity {similarity.shape} for {len(text_ids)} texts x {len(image_ids)} images")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, similarity, allow_pickle=False)
    write_json(ids_path(path), {"text_ids": [int(i) for i in text_ids], "image_ids": [int(i) for i in image_ids]})
    return path


def ids_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name[:-4] + ".ids.json" if path.name.endswith(".npy") else path.name + ".ids.json")


def load_similarity(path: str | Path) -> tuple[np.ndarray, list[int], list[int]]:
    path = Path(path)
    if not path.is_file() or not ids_path(path).is_file():
        raise LayoutError(f"{path}: similarity matrix or its {ids_path(path).name} not found")
    try:
        similarity = np.load(path, allow_pickle=False)
        ids = json.loads(ids_path(path).read_text())
        text_ids, image_ids = [int(i) for i in ids["text_ids"]], [int(i) for i in ids["image_ids"]]
    except (ValueError, KeyError, TypeError, OSError) as err:
        raise LayoutError(f"{path}: not a similarity matrix with its ids ({' '.join(str(err).split())})") from None
    if similarity.shape != (len(text_ids), len(image_ids)):
        raise LayoutError(f"{path}: shape {similarity.shape} for {len(text_ids)} text and {len(image_ids)} image ids")
    for name, ids_ in (("text", text_ids), ("image", image_ids)):
        seen = set()
        for i in ids_:
            if i in seen:
                raise LayoutError(f"{ids_path(path)}: {name} id {i} appears twice")
            seen.add(i)
    if similarity.size and not np.isfinite(similarity).all():
        row = int(np.flatnonzero(~np.isfinite(similarity).all(axis=1))[0])
        raise LayoutError(f"{path}: row {row} (text id {text_ids[row]}) holds a NaN or infinite similarity")
    return similarity, text_ids, image_ids
