"""A tiny retrieval dataroot in the MUGE layout, made by the tests themselves.

Each image shows a concept (a colour and the position of a bright square) and its text names it ("red top left"),
with noise, so a text tower and an image tower can learn to meet; several images share a text, so batches hold
identical texts. Test texts are written without image_ids; their answers go to `{root}_private`, and a
test-time-learning cache (other noisy drawings of the valid and test concepts) to `{root}_cache`, as the bundled
build does.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from fold0123.common import muge
from fold0123.data.muge import MugeText, encode_base64, read_texts, write_images, write_texts

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 220), "yellow": (220, 220, 40)}
PLACES = {"top left": (0, 0), "top right": (0, 2), "bottom left": (2, 0), "bottom right": (2, 2)}


def draw(colour: str, place: str, rng: np.random.Generator, size: int = 16) -> bytes:
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
            images[image_id] = encode_base64(draw(colour, place, rng, size))
            texts.append(MugeText(text_id, f"{colour} {place}", (image_id,)))
            if split == "test":
                cache_id = next(next_id)
                cache_images[cache_id] = encode_base64(draw(colour, place, rng, size))
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
        valid_images[cache_id] = encode_base64(draw(*_concept(text.text), other, size))
        valid_texts.append(MugeText(text.text_id, text.text, (cache_id,)))
    write_images(muge.images_tsv(root.parent / f"{root.name}_cache", "valid"), valid_images)
    write_texts(muge.texts_jsonl(root.parent / f"{root.name}_cache", "valid"), valid_texts)
    return root


def _concept(text: str) -> tuple[str, str]:
    colour, place = text.split(" ", 1)
    return colour, place
