"""Pack MUGE-layout splits into LMDB, as Chinese-CLIP's `build_lmdb_dataset.py` does (same keys and values, so
either project reads the other's files; the layout is in fold0123.data.muge_lmdb).

    python -m fold0123.preprocessing.pack_lmdb --data-dir D --splits train,valid,test [--lmdb-dir D/lmdb]

Each split is validated first (data.muge: one line naming the file and line for a bad row, with images decoded),
then written into `lmdb/{split}.tmp.<pid>/` and renamed into place, so a killed pack never leaves an LMDB that
a training would trust. Texts without image_ids (a public test split) give no pairs, as in the original, which
requires them: predictions read the texts from the JSONL.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from fold0123.common import muge
from fold0123.common.build import staged_build
from fold0123.common.errors import UsageError, cli_main
from fold0123.common.io import make_dir
from fold0123.data import muge as layout
from fold0123.data.muge_lmdb import COUNT_IMAGES, COUNT_PAIRS, dumps_pair

MAP_SIZE = 1 << 40  # the original's 1 TiB address space; the file grows with the data only
COMMIT_EVERY = 1000


def _write_env(path: Path, records) -> None:
    import lmdb

    env = lmdb.open(str(path), map_size=MAP_SIZE)
    try:
        txn = env.begin(write=True)
        for n, (key, value) in enumerate(records, 1):
            txn.put(key, value)
            if n % COMMIT_EVERY == 0:
                txn.commit()
                txn = env.begin(write=True)
        txn.commit()
        env.sync(True)
    finally:
        env.close()


def pack_split(root: str | Path, split: str, lmdb_root: str | Path | None = None, decode: bool = True) -> dict:
    """Validate and pack one split; returns {"split", "images", "pairs"}."""
    root = Path(root)
    data = layout.read_split(root, split, decode=decode)
    final = muge.lmdb_dir(root, split) if lmdb_root is None else Path(lmdb_root) / split
    make_dir(final.parent)
    pairs = [(image_id, t.text_id, t.text) for t in data.texts for image_id in (t.image_ids or ())]
    with staged_build(final) as (tmp,):
        _write_env(tmp / "pairs", [*((str(i).encode(), dumps_pair(*p)) for i, p in enumerate(pairs)),
                                   (COUNT_PAIRS, str(len(pairs)).encode())])
        _write_env(tmp / "imgs", [*((str(i).encode(), b64.encode()) for i, b64 in data.images.items()),
                                  (COUNT_IMAGES, str(len(data.images)).encode())])
    return {"split": split, "images": len(data.images), "pairs": len(pairs)}


def pack(root: str | Path, splits, lmdb_root: str | Path | None = None) -> list[dict]:
    splits = [s.strip() for s in splits if s.strip()]
    if not splits:
        raise UsageError("--splits: name at least one split (e.g. train,valid,test)")
    if not Path(root).is_dir():
        raise UsageError(f"--data-dir {root}: not a folder")
    return [pack_split(root, split, lmdb_root) for split in dict.fromkeys(splits)]


@cli_main
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="the folder of {split}_imgs.tsv and {split}_texts.jsonl")
    parser.add_argument("--splits", required=True, help="comma-separated, e.g. train,valid,test")
    parser.add_argument("--lmdb-dir", default=None, help="where the LMDB goes (default DATA_DIR/lmdb)")
    args = parser.parse_args(argv)
    for row in pack(args.data_dir, args.splits.split(","), args.lmdb_dir):
        print(f"{row['split']}: {row['images']} images, {row['pairs']} pairs")


if __name__ == "__main__":
    main()
