"""Read the LMDB that `fold0123.preprocessing.pack_lmdb` packs, as Chinese-CLIP's `LMDBDataset` reads it.

    lmdb/{split}/imgs    b"<image_id>" -> base64 bytes of the image; b"num_images" -> the count
    lmdb/{split}/pairs   b"<index>" -> pickle of the tuple (image_id, text_id, text); b"num_samples" -> the count

The environments are opened read-only, without locks, and lazily in the process that reads: a DataLoader worker
forked after the parent opened one must not share its handle (LMDB forbids using an environment across fork),
so `LmdbSplit` reopens when its process id changes, closing the inherited copies first (py-lmdb refuses to open
a path that this process, through the fork, already holds: tests/test_retrieval_model.py forks after an open).
Pickle is Chinese-CLIP's choice for the pairs; it is read here with an unpickler that refuses every global
(class, function), so a pairs file can carry nothing but tuples, ints and strings.
"""
from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

from fold0123.common import muge
from fold0123.common.errors import LayoutError

COUNT_IMAGES, COUNT_PAIRS = b"num_images", b"num_samples"


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module, name):  # pragma: no cover - only a hostile or foreign file gets here
        raise pickle.UnpicklingError(f"refusing to load the global {module}.{name}")


def loads_pair(data: bytes, where: str) -> tuple[int, int, str]:
    """One pairs record, checked to be the (image_id, text_id, text) tuple Chinese-CLIP writes."""
    try:
        value = _PlainUnpickler(io.BytesIO(data)).load()
    except Exception as err:
        raise LayoutError(f"{where}: not a pickled (image_id, text_id, text) tuple ({err})") from None
    if (not isinstance(value, tuple) or len(value) != 3 or not isinstance(value[2], str)
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value[:2])):
        raise LayoutError(f"{where}: expected an (image_id, text_id, text) tuple, got {value!r:.80}")
    return value


def dumps_pair(image_id: int, text_id: int, text: str) -> bytes:
    return pickle.dumps((int(image_id), int(text_id), str(text)))


class LmdbSplit:
    """One packed split, opened read-only on first use in each process."""

    def __init__(self, root: str | Path, split: str):
        self.root, self.split = Path(root), split
        self.images_path, self.pairs_path = muge.lmdb_images(root, split), muge.lmdb_pairs(root, split)
        for path in (self.images_path, self.pairs_path):
            if not (path / "data.mdb").is_file():
                raise LayoutError(f"{path}: no LMDB here (run python -m fold0123.preprocessing.pack_lmdb "
                                  f"--data-dir {root} --splits {split})")
        self._pid = None
        self._images = self._pairs = None

    def _open(self):
        if self._pid != os.getpid():
            import lmdb

            if self._pid is not None:  # handles inherited through fork: py-lmdb still counts them as open here
                self._forget_inherited()

            def env(path):
                return lmdb.open(str(path), readonly=True, create=False, lock=False, readahead=False,
                                 meminit=False, max_readers=256)
            self._images, self._pairs, self._pid = env(self.images_path), env(self.pairs_path), os.getpid()
        return self._images, self._pairs

    def _forget_inherited(self) -> None:
        """Close, in a forked child, the parent's environments it inherited, so this process may open its own
        (py-lmdb refuses a second open of a path it already holds). Read-only and lock-free, closing them only
        unmaps this process's copies and closes its duplicated descriptors; the parent's handles are untouched."""
        for env in (self._images, self._pairs):
            if env is not None:
                env.close()
        self._images = self._pairs = None

    def __getstate__(self):  # a pickled copy (DataLoader workers with spawn) reopens in its own process
        state = dict(self.__dict__)
        state.update(_pid=None, _images=None, _pairs=None)
        return state

    def _count(self, env, key: bytes, path: Path) -> int:
        with env.begin() as txn:
            value = txn.get(key)
        if value is None or not value.isdigit():
            raise LayoutError(f"{path}: no {key.decode()} record (not packed by pack_lmdb, or packing was killed)")
        return int(value)

    @property
    def n_images(self) -> int:
        return self._count(self._open()[0], COUNT_IMAGES, self.images_path)

    @property
    def n_pairs(self) -> int:
        return self._count(self._open()[1], COUNT_PAIRS, self.pairs_path)

    def image_b64(self, image_id: int) -> bytes:
        with self._open()[0].begin(buffers=True) as txn:
            value = txn.get(str(int(image_id)).encode())
            if value is None:
                raise LayoutError(f"{self.images_path}: no image_id {image_id}")
            return bytes(value)

    def image_ids(self) -> list[int]:
        """Every image id, in increasing order (the gallery order of predictions and similarity matrices)."""
        with self._open()[0].begin() as txn:
            ids = [int(key) for key in txn.cursor().iternext(keys=True, values=False) if key != COUNT_IMAGES]
        return sorted(ids)

    def pair(self, index: int) -> tuple[int, int, str]:
        with self._open()[1].begin(buffers=True) as txn:
            value = txn.get(str(int(index)).encode())
            if value is None:
                raise LayoutError(f"{self.pairs_path}: no pair {index}")
            return loads_pair(bytes(value), f"{self.pairs_path}: pair {index}")

    def pairs(self) -> list[tuple[int, int, str]]:
        return [self.pair(i) for i in range(self.n_pairs)]

    def close(self) -> None:
        for env in (self._images, self._pairs):
            if env is not None and self._pid == os.getpid():
                env.close()
        self._pid = self._images = self._pairs = None


def gallery_ids(root: str | Path, split: str) -> list[int]:
    """A split's gallery: every image id of its LMDB, in increasing order (that of predictions and similarity
    matrices)."""
    reader = LmdbSplit(root, split)
    try:
        return reader.image_ids()
    finally:
        reader.close()
