"""Build the bundled retrieval set, in the MUGE layout, from the pinned npm emoji packages the emoji build uses.

One text per image: each Google 64 px emoji image (emoji-datasource-google, composited on white, PNG) and its
emojibase English `label` ("thumbs up: medium skin tone"). Splits are series-disjoint (a base emoji and its
skin-tone variants stay together, as in preprocessing.emoji): about 70 % train, 10 % valid, 20 % test of the
series. Image and text ids are salted hashes turned into integers (MUGE and its scorer use integer ids), and
every file is written in a shuffled order, so neither ids nor positions say anything about the code point (which
predicts the release year, see preprocessing.emoji); the id <-> hexcode key stays in the private folder.

    {out}/                 train/valid/test _imgs.tsv and _texts.jsonl (test texts without image_ids)
    {out}_private/         test_texts.jsonl with the answers (what `python -m fold0123.retrieval.score` reads),
                           ids.csv (id -> hexcode, split), summary.json
    {out}_cache/           the test-time-learning cache, itself MUGE splits `valid` and `test`: each valid and
                           test text (same text_id and text) with the same emoji drawn by another artist
                           (emoji-datasource-apple), as a web image search for that text would return it; cache
                           image ids are their own salted ids. The valid cache is where retrieval.ttl_select
                           chooses the test-time-learning settings, so the test answers choose nothing

`dataset.json`, written last, marks a complete build; a complete build made with the same seed and packages is
reused, anything else at `out` is refused without --force.

    python -m fold0123.preprocessing.muge_emoji --out datasets/emoji_muge [--seed 0] [--cache DIR] [--force]
"""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fold0123.common import muge
from fold0123.common.build import earlier_build, headline, pins, salted_id, staged_build, write_records
from fold0123.common.dataroot import beside
from fold0123.common.errors import cli_main
from fold0123.data.muge import MugeText, encode_base64, write_images, write_texts
from fold0123.preprocessing.emoji import (by_hexcode, member_bytes, on_white, read_emoji_datasource,
                                          read_emojibase)
from fold0123.preprocessing.npm import (EMOJI_DATASOURCE, EMOJI_DATASOURCE_APPLE, EMOJIBASE, Package,
                                        builder_parser, fetch_package)

ID_SALT = "fold0123/emoji-muge/v1"
SHARES = {"train": 0.7, "valid": 0.1, "test": 0.2}
OTHER_ARTIST_DIR = "package/img/apple/64/"
PACKAGES = (EMOJI_DATASOURCE, EMOJIBASE, EMOJI_DATASOURCE_APPLE)
CACHE_SPLITS = ("valid", "test")  # the splits with a test-time-learning cache (a build without valid is refused)


def opaque_int(hexcode: str, kind: str) -> int:
    """48 bits of a salted SHA-1: an integer id, stable across machines, uninformative about the code point."""
    return int(salted_id(ID_SALT, kind, hexcode, 12), 16)


def png_b64(png: bytes, what: str) -> str:
    out = io.BytesIO()
    on_white(png, what).save(out, "PNG", optimize=False)
    return encode_base64(out.getvalue())


@dataclass
class Summary:
    out: str
    private: str
    cache: str
    seed: int
    images: dict
    series: dict
    unlabelled: int
    cache_pairs: dict
    packages: list
    reused: bool = False

    def lines(self) -> list[str]:
        return [headline("emoji retrieval set", self),
                "  images (= texts): " + ", ".join(f"{k} {v}" for k, v in self.images.items()),
                "  series: " + ", ".join(f"{k} {v}" for k, v in self.series.items()),
                f"  test answers and ids: {self.private}; test-time cache: {self.cache} ("
                + ", ".join(f"{k} {v}" for k, v in self.cache_pairs.items()) + " pairs)",
                f"  skipped {self.unlabelled} images without an emojibase label"]


def private_dir(out: str | os.PathLike) -> Path:
    return beside(out, "_private")


def cache_dir(out: str | os.PathLike) -> Path:
    return beside(out, "_cache")


def build_from_tarballs(google_tgz, emojibase_tgz, other_tgz, out, seed: int = 0,
                        packages: tuple[Package, ...] = (), limit: int | None = None) -> Summary:
    """Build `out`, its private folder and its cache folder, replacing what is there (temp folders renamed into
    place at the end). `limit` keeps only that many series (tests)."""
    out = Path(out)
    private, cache = private_dir(out), cache_dir(out)
    with staged_build(out, private, cache) as (tmp_out, tmp_private, tmp_cache):
        rows, images, _ = read_emoji_datasource(google_tgz)
        label_of = by_hexcode(read_emojibase(emojibase_tgz)[1])  # English labels, base emoji and skins alike
        other = {name[len(OTHER_ARTIST_DIR):]: data for name, data in
                 member_bytes(Path(other_tgz), lambda n: n.startswith(OTHER_ARTIST_DIR) and n.endswith(".png"))
                 .items()}
        labelled = []
        for row in rows:
            label = label_of(row.hexcode)
            if label:
                labelled.append((row, label))
        unlabelled = len(rows) - len(labelled)
        rng = np.random.default_rng(seed)
        series = sorted({row.base_hexcode for row, _ in labelled})
        series = [series[i] for i in rng.permutation(len(series))]
        if limit is not None:
            series = series[:limit]
        cut = np.cumsum([SHARES["train"], SHARES["valid"]]) * len(series)
        split_of = {s: "train" if i < cut[0] else "valid" if i < cut[1] else "test" for i, s in enumerate(series)}
        labelled = [(row, label) for row, label in labelled if row.base_hexcode in split_of]
        by_split = {s: [] for s in muge.SPLITS}
        for i in rng.permutation(len(labelled)):  # the shuffled order is the only order ever written
            by_split[split_of[labelled[i][0].base_hexcode]].append(labelled[i])
        key_rows = []
        cache_images, cache_texts = {s: {} for s in CACHE_SPLITS}, {s: [] for s in CACHE_SPLITS}
        for split, items in by_split.items():
            image_map, texts = {}, []
            for row, label in items:
                image_id, text_id = opaque_int(row.hexcode, "image"), opaque_int(row.hexcode, "text")
                image_map[image_id] = png_b64(images[row.image], f"{google_tgz}: {row.image}")
                texts.append(MugeText(text_id, label, (image_id,)))
                key_rows.append((image_id, text_id, row.hexcode, row.base_hexcode, split, label))
                if split in CACHE_SPLITS and row.image in other:
                    cache_id = opaque_int(row.hexcode, "cache-image")
                    cache_images[split][cache_id] = png_b64(other[row.image], f"{other_tgz}: {row.image}")
                    cache_texts[split].append(MugeText(text_id, label, (cache_id,)))
            order = rng.permutation(len(texts))  # texts in another order than their images
            texts = [texts[i] for i in order]
            write_images(muge.images_tsv(tmp_out, split), image_map)
            write_texts(muge.texts_jsonl(tmp_out, split), texts, answers=split != "test")
            if split == "test":
                write_texts(muge.texts_jsonl(tmp_private, "test"), texts)
        for split in CACHE_SPLITS:
            write_images(muge.images_tsv(tmp_cache, split), cache_images[split])
            write_texts(muge.texts_jsonl(tmp_cache, split), cache_texts[split])
        with open(tmp_private / "ids.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["image_id", "text_id", "hexcode", "base_hexcode", "split", "text"])
            writer.writerows(key_rows)
        summary = Summary(str(out), str(private), str(cache), seed,
                          {s: len(v) for s, v in by_split.items()},
                          {s: len({r.base_hexcode for r, _ in v}) for s, v in by_split.items()},
                          unlabelled, {s: len(cache_texts[s]) for s in CACHE_SPLITS}, pins(packages))
        write_records(tmp_out, tmp_private, summary, {"builder": "fold0123.preprocessing.muge_emoji", "seed": seed,
                                                      "packages": pins(packages), "limit": limit,
                                                      "cache_splits": list(CACHE_SPLITS)})
    return summary


def build_dataset(out="datasets/emoji_muge", cache=None, seed: int = 0, force: bool = False,
                  packages: tuple[Package, ...] = PACKAGES, limit: int | None = None) -> Summary:
    """A complete earlier build made as asked (with a test-time cache for each of CACHE_SPLITS), else a new one;
    anything else at `out` is a BuildError unless `force` (common.build.earlier_build)."""
    wanted = {"seed": seed, "packages": pins(packages), "limit": limit, "cache_splits": list(CACHE_SPLITS)}
    earlier = earlier_build(out, private_dir(out), Summary, wanted, "retrieval build", force=force)
    if earlier is not None:
        return earlier
    google, emojibase, other = (fetch_package(p, cache) for p in packages)
    return build_from_tarballs(google, emojibase, other, out, seed, packages, limit)


@cli_main
def main(argv=None) -> None:
    args = builder_parser(__doc__, "datasets/emoji_muge").parse_args(argv)
    summary = build_dataset(args.out, args.cache, args.seed, args.force)
    print("\n".join(summary.lines()))


if __name__ == "__main__":
    main()
