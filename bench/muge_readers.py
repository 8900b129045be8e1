"""Reading a MUGE split's images for training: the packed LMDB (Chinese-CLIP's reader: base64 from LMDB, decode,
resize, per sample) vs the TSV (read the whole file, then decode and resize each) vs the memmap cache the clip
task trains from (decoded once; a sample is a slice). Same images, same size, one process, CPU time per image;
the ratios are what BENCHMARKS.md records.

    .venv/bin/python -m bench.muge_readers [--data-dir datasets/emoji_muge] [--split train] [--size 32] [--rounds 3]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np

from fold0123.common import muge
from fold0123.data.muge import read_images
from fold0123.data.datasets import ImageDataset
from fold0123.data.muge_images import LmdbPairs, decode_image, muge_cache


def clock(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="datasets/emoji_muge")
    parser.add_argument("--split", default="train")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    lmdb = LmdbPairs(args.data_dir, args.split, np.zeros((0, 1)), args.size)
    n = len(lmdb.image_ids)
    lmdb.targets = np.zeros((n, 2), np.int64)
    with tempfile.TemporaryDirectory() as tmp:
        cache = muge_cache(args.data_dir, [args.split], args.size, tmp)
        cached = ImageDataset(cache, lmdb.image_ids, lmdb.targets, np.int64)

        def tsv():
            for i, b64 in read_images(muge.images_tsv(args.data_dir, args.split), decode=False).items():
                decode_image(b64, args.size, str(i))

        results = {"LMDB (per sample: base64, decode, resize)": [], "TSV (read, then decode and resize)": [],
                   "memmap cache (slice)": []}
        for _ in range(args.rounds):
            results["LMDB (per sample: base64, decode, resize)"].append(clock(lambda: [lmdb[i] for i in range(n)]))
            results["TSV (read, then decode and resize)"].append(clock(tsv))
            results["memmap cache (slice)"].append(clock(lambda: [cached[i] for i in range(n)]))
    base = statistics.median(results["LMDB (per sample: base64, decode, resize)"])
    print(f"{n} images of {args.data_dir} {args.split} at {args.size} px, CPU seconds, median of {args.rounds}")
    print("| reader | images/s | x the LMDB reader |\n| --- | ---: | ---: |")
    for name, times in results.items():
        t = statistics.median(times)
        print(f"| {name} | {n / t:,.0f} | {base / t:.2f} |")


if __name__ == "__main__":
    main()
