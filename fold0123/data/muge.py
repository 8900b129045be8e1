"""Read and validate a retrieval dataroot in the MUGE / Chinese-CLIP layout (names: fold0123.common.muge).

Like the atmaCup readers (data.layout), every reader fails with one `LayoutError` line naming the file and the
line, before any training starts: a line that is not `id<TAB>base64`, a base64 string that does not decode, an
image that PIL cannot open, a duplicate image or text id, a JSON line that is not an object with the MUGE keys,
a text pointing at an image its split does not have. Ids are integers, as MUGE has them and as the MUGE scorer
requires them in a submission.

Base64 is accepted in both alphabets: Chinese-CLIP decodes with `urlsafe_b64decode`, and real MUGE files
use the standard one.
"""
from __future__ import annotations

import base64
import binascii
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from fold0123.common import muge
from fold0123.common.errors import LayoutError
from fold0123.common.io import user_text_lines

_URLSAFE = str.maketrans("-_", "+/")


@dataclass(frozen=True)
class MugeText:
    text_id: int
    text: str
    image_ids: tuple[int, ...] | None  # None: a test text without answers


def decode_base64(value: str | bytes, where: str) -> bytes:
    """The image bytes of a base64 string (standard or URL-safe alphabet); LayoutError naming `where`."""
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    try:
        return base64.b64decode(value.strip().translate(_URLSAFE), validate=True)
    except (binascii.Error, ValueError) as err:
        raise LayoutError(f"{where}: not valid base64 ({err})") from None


def encode_base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def open_image(data: bytes, where: str):
    """A decoded PIL image of `data`, converted to RGB by the photos' one rule (data.images.to_rgb: transparency
    composited on white, 16-bit scaled)."""
    from fold0123.data.images import to_rgb
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as err:  # PIL raises many types for corrupt data
        raise LayoutError(f"{where}: not a readable image ({' '.join(str(err).split()) or type(err).__name__})") \
            from None
    return to_rgb(image)


def _int_id(value, where: str, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise LayoutError(f"{where}: {key} {value!r} is not a non-negative integer")
    return value


def numbered_lines(path: str | Path, what: str = "file", newline: str | None = None) -> Iterator[tuple[int, str]]:
    """(line number, line) per non-blank line of a UTF-8 text file; LayoutError naming the file when it is missing."""
    yield from ((number, line) for number, line in enumerate(user_text_lines(path, what, newline), 1)
                if line.strip())


def json_lines(path: str | Path, what: str = "file") -> Iterator[tuple[str, dict]]:
    """(`{path}: line {n}`, object) per non-blank line of a JSONL file; one LayoutError line for a line that is
    not a JSON object."""
    for number, line in numbered_lines(path, what):
        where = f"{path}: line {number}"
        try:
            obj = json.loads(line)
        except ValueError as err:
            raise LayoutError(f"{where}: not valid JSON ({err})") from None
        if not isinstance(obj, dict):
            raise LayoutError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        yield where, obj


def iter_images_tsv(path: str | Path) -> Iterator[tuple[int, int, str]]:
    """`(line number, image_id, base64 string)` per line of an images TSV, checking the shape of each line."""
    for number, line in numbered_lines(path, newline="\n"):
        parts = line.rstrip("\r\n").split("\t")
        if len(parts) != 2:
            raise LayoutError(f"{path}: line {number}: expected image_id<TAB>base64, got {len(parts)} fields")
        if not parts[0].strip().isdigit():
            raise LayoutError(f"{path}: line {number}: image_id {parts[0][:40]!r} is not a non-negative integer")
        yield number, int(parts[0]), parts[1].strip()


def read_images(path: str | Path, decode: bool = True) -> dict[int, str]:
    """image_id -> base64 string, in file order. `decode` also opens every image (seconds for a few thousand),
    so an undecodable one is reported here, naming its line, and not by a DataLoader worker hours later."""
    path = Path(path)
    images: dict[int, str] = {}
    for number, image_id, b64 in iter_images_tsv(path):
        where = f"{path}: line {number}: image_id {image_id}"
        if image_id in images:
            raise LayoutError(f"{path}: line {number}: duplicate image_id {image_id}")
        data = decode_base64(b64, where)
        if decode:
            open_image(data, where)
        images[image_id] = b64
    return images


def parse_text(obj: dict, where: str, need_images: bool) -> MugeText:
    for key in ("text_id", "text"):
        if key not in obj:
            raise LayoutError(f"{where}: missing key {key!r}")
    text_id = _int_id(obj["text_id"], where, "text_id")
    if not isinstance(obj["text"], str) or not obj["text"].strip():
        raise LayoutError(f"{where}: text_id {text_id}: 'text' must be a non-empty string")
    image_ids = obj.get("image_ids")
    if image_ids is None:
        if need_images:
            raise LayoutError(f"{where}: text_id {text_id}: missing key 'image_ids'")
        return MugeText(text_id, obj["text"], None)
    if not isinstance(image_ids, list) or not image_ids:
        raise LayoutError(f"{where}: text_id {text_id}: 'image_ids' must be a non-empty list")
    return MugeText(text_id, obj["text"], tuple(_int_id(i, where, "image id") for i in image_ids))


def read_texts(path: str | Path, need_images: bool = True) -> list[MugeText]:
    """The texts of a `{split}_texts.jsonl`, in file order; `need_images=False` admits texts without answers."""
    texts, seen = [], set()
    for where, obj in json_lines(path):
        text = parse_text(obj, where, need_images)
        if text.text_id in seen:
            raise LayoutError(f"{where}: duplicate text_id {text.text_id}")
        seen.add(text.text_id)
        texts.append(text)
    if not texts:
        raise LayoutError(f"{path}: no texts")
    return texts


def check_links(texts: list[MugeText], images, texts_path: Path, images_path: Path) -> None:
    """Every image a text names exists in its split's images (the line number is the text's position)."""
    images = set(images)
    for number, text in enumerate(texts, 1):
        for image_id in text.image_ids or ():
            if image_id not in images:
                raise LayoutError(f"{texts_path}: text_id {text.text_id} (text #{number}): image_id {image_id} "
                                  f"is not in {images_path.name}")


@dataclass
class MugeSplit:
    name: str
    images: dict[int, str]   # image_id -> base64, file order
    texts: list[MugeText]


def read_split(root: str | Path, split: str, decode: bool = True) -> MugeSplit:
    """One split of the TSV/JSONL layout, validated (see the module docstring); `test` texts may lack answers."""
    images_path, texts_path = muge.images_tsv(root, split), muge.texts_jsonl(root, split)
    images = read_images(images_path, decode)
    if not images:
        raise LayoutError(f"{images_path}: no images")
    texts = read_texts(texts_path, need_images=split != "test")
    check_links(texts, images, texts_path, images_path)
    return MugeSplit(split, images, texts)


def write_texts(path: str | Path, texts: list[MugeText], answers: bool = True) -> None:
    """A `{split}_texts.jsonl` (atomically): with `answers=False` the image_ids are left out (a public test)."""
    from fold0123.common.io import write_text

    lines = []
    for t in texts:
        obj = {"text_id": t.text_id, "text": t.text}
        if answers and t.image_ids is not None:
            obj["image_ids"] = list(t.image_ids)
        lines.append(json.dumps(obj, ensure_ascii=False))
    write_text(path, "\n".join(lines) + "\n")


def write_images(path: str | Path, images: dict[int, str]) -> None:
    from fold0123.common.io import write_text

    write_text(path, "".join(f"{image_id}\t{b64}\n" for image_id, b64 in images.items()))
