"""Build the second bundled benchmark: emoji SUBCATEGORY classification, shipped as a competition would ship it.

From the same pinned npm package as the era dataset (preprocessing/emoji.py; `emoji-datasource-google@16.0.0`
gives the 64 px images and each emoji's Unicode subcategory, e.g. `face-smiling`, `animal-bird`, `country-flag`;
emojibase's subgroups are the same names, so emojibase-data is not needed here), each image (a base emoji or one
of its skin-tone variants) becomes one image of a K-class classification, imbalanced as Unicode made it (from 6
images a class to several hundred: `person-role` has 82 base emoji, each with 5 skin tones). Subcategories with
fewer than MIN_SERIES base emoji are DROPPED, not merged: merging would make classes no one could name, and with
a 20 % test split and 3 folds a class of fewer series has nothing left to learn from in some fold. With the pinned
package that drops 11 of the 99 subcategories (73 images), leaving 88 classes.

The output is the ImageFolder layout (the ACCV 2022 competition's), which preprocessing/adapters.py turns into a
dataroot, so the benchmark exercises the adapter a user's own data goes through:

    OUT/train/{subcategory}/{id}.png   photos composited on white (as emoji.py's), RGB PNG
    OUT/test/{id}.png                  a series-disjoint ~20 %, stratified by class at the series level (one fold
                                       of a 5-fold StratifiedGroupKFold, as emoji.py chooses its test set)
    OUT/groups.csv                     image (path relative to OUT), series: the base emoji, so a base and its
                                       skin-tone variants are one series (they must never straddle two folds).
                                       Train images only: test series would tell which test images share a label
    OUT/dataset.json                   written last: its presence means a complete build
    PRIVATE/answers.csv                object_id, target (class index, classes in sorted order), label (name)
    PRIVATE/ids.csv                    object_id, hexcode, short name, category, subcategory, series, split
    PRIVATE/summary.json

Ids are salted hashes with a salt of their own: not emoji.py's, because the era dataset's techniques.csv names
each of its train objects' subcategory, so shared ids would join the two sets and leak this one's test labels.
No hexcode or emoji name reaches OUT (Unicode allocated code points in release and block order, which says much
about the subcategory); the mapping lives in PRIVATE. Images are written in a shuffled order.

    python -m fold0123.preprocessing.emoji_classify --out datasets/emoji_classify_raw
        [--private datasets/emoji_classify_private] [--dataroot datasets/emoji_classify] [--seed 0] [--force]

`--dataroot` also runs the ImageFolder adapter (`--groups OUT/groups.csv`, metric accuracy): the dataroot the
pipeline reads, with `photos/` linking to OUT's images. A complete earlier build made as asked is reused; one made
otherwise, or a folder that is not a build, is refused unless --force.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fold0123.common.build import BuildError, earlier_build, headline, pins, staged_build, write_records
from fold0123.common.errors import cli_main
from fold0123.preprocessing.adapters import MARKER as ADAPTER_MARKER
from fold0123.preprocessing.adapters import adapt_imagefolder, class_order, extremes
from fold0123.preprocessing.emoji import (IMAGE_DIR, EmojiImage, on_white, read_emoji_datasource, shuffled_ids,
                                          test_split)
from fold0123.preprocessing.npm import EMOJI_DATASOURCE, Package, builder_parser, fetch_package

ID_SALT = "fold0123/emoji_classify/v1"  # fixed: ids stay comparable across machines; not emoji.py's (see above)
MIN_SERIES = 6         # a subcategory needs this many base emoji to be a class
GROUPS_FILE = "groups.csv"
BUILDER = "fold0123.preprocessing.emoji_classify"


@dataclass
class ClassifySummary:
    """What a build produced; printed by the CLI and stored in the private folder."""
    out: str
    private: str
    seed: int
    min_series: int
    rows: int
    series: int
    classes: int
    train_rows: int
    test_rows: int
    train_series: int
    test_series: int
    train_counts: dict[str, int]
    test_counts: dict[str, int]
    dropped: dict[str, int]  # subcategory -> its number of base emoji
    dropped_rows: int
    packages: list[str] = field(default_factory=list)
    reused: bool = False

    def lines(self, shown: int = 5) -> list[str]:
        largest, smallest = extremes({k: n + self.test_counts.get(k, 0) for k, n in self.train_counts.items()}, shown)
        return [
            headline("emoji subcategory dataset", self),
            f"  private answers and ids: {self.private}",
            f"  {self.classes} classes; images {self.rows} (train {self.train_rows}, test {self.test_rows}); "
            f"series {self.series} (train {self.train_series}, test {self.test_series}); seed {self.seed}",
            f"  largest classes (train+test): {largest}", f"  smallest classes (train+test): {smallest}",
            f"  dropped {len(self.dropped)} subcategories with fewer than {self.min_series} base emoji "
            f"({self.dropped_rows} images): {', '.join(f'{k} {v}' for k, v in sorted(self.dropped.items()))}",
        ]


def private_default(out: str | os.PathLike) -> Path:
    """`datasets/emoji_classify_raw` -> `datasets/emoji_classify_private`: beside the output, never inside it."""
    out = Path(out)
    return out.parent / f"{out.name.removesuffix('_raw')}_private"


def keep_classes(rows: list[EmojiImage], min_series: int = MIN_SERIES) -> tuple[list[EmojiImage], dict[str, int]]:
    """The rows of subcategories with at least `min_series` base emoji, and the dropped ones' base counts."""
    bases = pd.Series({r.base_hexcode: r.subcategory for r in rows}).value_counts()
    dropped = {str(k): int(v) for k, v in bases[bases < min_series].items()}
    return [r for r in rows if r.subcategory not in dropped], dropped


# ---------------------------------------------------------------------------------------------------- the build

def _write(rows: list[EmojiImage], images: dict[str, bytes], out: Path, private: Path, seed: int, emoji_tgz: Path,
           min_series: int) -> ClassifySummary:
    kept, dropped = keep_classes(rows, min_series)
    kept, frame = shuffled_ids(kept, seed, ID_SALT, "series", emoji_tgz)
    classes = class_order(r.subcategory for r in kept)  # the adapter's order: target = index in sorted names
    frame["label"] = [r.subcategory for r in kept]
    frame["target"] = frame["label"].map({c: i for i, c in enumerate(classes)})
    is_test = test_split(frame["series"], frame["target"], seed)
    frame["image"] = [f"test/{i}.png" if t else f"train/{label}/{i}.png"
                      for i, label, t in zip(frame["object_id"], frame["label"], is_test)]

    for label in classes:
        (out / "train" / label).mkdir(parents=True)
    (out / "test").mkdir()
    for image, row in zip(frame["image"], kept):
        on_white(images[row.image], f"{emoji_tgz}: {IMAGE_DIR}{row.image}").save(out / image, "PNG")
    frame[~is_test][["image", "series"]].to_csv(out / GROUPS_FILE, index=False)
    frame[is_test][["object_id", "target", "label"]].to_csv(private / "answers.csv", index=False)
    pd.DataFrame({"object_id": frame["object_id"], "hexcode": [r.hexcode for r in kept],
                  "short_name": [r.short_name for r in kept], "category": [r.category for r in kept],
                  "subcategory": frame["label"], "series": frame["series"],
                  "base_hexcode": [r.base_hexcode for r in kept],
                  "split": np.where(is_test, "test", "train")}).to_csv(private / "ids.csv", index=False)

    def counts(mask: np.ndarray) -> dict[str, int]:
        return {c: int(n) for c, n in frame["label"][mask].value_counts().reindex(classes, fill_value=0).items()}

    return ClassifySummary(
        out=str(out), private=str(private), seed=seed, min_series=min_series, rows=len(frame),
        series=frame["series"].nunique(), classes=len(classes), train_rows=int((~is_test).sum()),
        test_rows=int(is_test.sum()), train_series=frame["series"][~is_test].nunique(),
        test_series=frame["series"][is_test].nunique(), train_counts=counts(~is_test), test_counts=counts(is_test),
        dropped=dropped, dropped_rows=len(rows) - len(kept))


def build_from_tarball(emoji_tgz: str | os.PathLike, out: str | os.PathLike, private: str | os.PathLike | None = None,
                       seed: int = 0, min_series: int = MIN_SERIES,
                       packages: tuple[Package, ...] = ()) -> ClassifySummary:
    """Build OUT and PRIVATE from the emoji-datasource tarball, replacing what is there: everything is written
    into temp folders and renamed into place at the end (private first, then OUT, whose marker says complete)."""
    out, emoji_tgz = Path(out), Path(emoji_tgz)
    private = Path(private) if private is not None else private_default(out)
    with staged_build(out, private) as (tmp_out, tmp_private):
        rows, images, _ = read_emoji_datasource(emoji_tgz)
        summary = _write(rows, images, tmp_out, tmp_private, seed, emoji_tgz, min_series)
        summary.out, summary.private, summary.packages = str(out), str(private), pins(packages)
        write_records(tmp_out, tmp_private, summary, {
            "builder": BUILDER, "seed": seed, "min_series": min_series, "packages": pins(packages),
            "classes": summary.classes, "train_images": summary.train_rows, "test_images": summary.test_rows})
    return summary


def build_dataset(out: str | os.PathLike = "datasets/emoji_classify_raw", private: str | os.PathLike | None = None,
                  cache: str | os.PathLike | None = None, seed: int = 0, min_series: int = MIN_SERIES,
                  force: bool = False, package: Package = EMOJI_DATASOURCE) -> ClassifySummary:
    """Fetch (or reuse) the pinned package and build OUT and PRIVATE, or reuse a complete build made as asked."""
    out = Path(out)
    private = Path(private) if private is not None else private_default(out)
    if private.resolve().is_relative_to(out.resolve()) or out.resolve().is_relative_to(private.resolve()):
        raise BuildError(f"--private {private}: must lie beside --out {out}, not inside it (or around it)")
    wanted = {"builder": BUILDER, "seed": seed, "min_series": min_series, "packages": pins((package,))}
    earlier = earlier_build(out, private, ClassifySummary, wanted, force=force)
    if earlier is not None:
        return earlier
    return build_from_tarball(fetch_package(package, cache), out, private, seed, min_series, (package,))


def make_dataroot(out: str | os.PathLike, dataroot: str | os.PathLike, rebuilt: bool, force: bool = False):
    """The ImageFolder adapter on OUT (with its groups.csv): the pipeline's dataroot. An earlier dataroot made by the
    adapter from this OUT is reused unless OUT was rebuilt now (its links would point at new files); None then."""
    out, dataroot = Path(out), Path(dataroot)
    marker = dataroot / ADAPTER_MARKER
    ours = False
    if marker.is_file():
        try:
            ours = json.loads(marker.read_text()).get("source") == str(out.resolve())
        except (OSError, ValueError):
            ours = False
    if ours and not rebuilt and not force:
        return None
    # allow_duplicates: a few emoji are pixel-identical yet different objects in different series (the US flag and
    # the US Outlying Islands flag, DESIGN.md §6): irreducible noise of the data, not a train image copied into test
    return adapt_imagefolder(out, dataroot, groups=out / GROUPS_FILE, metric="accuracy", name="emoji_classify",
                             force=force or ours, allow_duplicates=True)


@cli_main
def main(argv: list[str] | None = None) -> None:
    parser = builder_parser(__doc__, "datasets/emoji_classify_raw")  # OUT: the competition-style ImageFolder
    parser.add_argument("--private", default=None, help="answers and ids (default: OUT without _raw, + _private)")
    parser.add_argument("--dataroot", default=None, help="also write the pipeline's dataroot here with the "
                                                         "ImageFolder adapter (e.g. datasets/emoji_classify)")
    parser.add_argument("--min-series", type=int, default=MIN_SERIES,
                        help=f"drop subcategories with fewer base emoji (default {MIN_SERIES})")
    args = parser.parse_args(argv)
    summary = build_dataset(args.out, args.private, args.cache, args.seed, args.min_series, args.force)
    print("\n".join(summary.lines()))
    if args.dataroot:
        adapted = make_dataroot(args.out, args.dataroot, rebuilt=not summary.reused, force=args.force)
        print("\n".join(adapted.lines()) if adapted else f"dataroot {args.dataroot} (reused; --force rebuilds)")


if __name__ == "__main__":
    main()
