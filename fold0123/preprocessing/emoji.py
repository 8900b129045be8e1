"""Build the bundled real dataset, in the atmaCup #11 layout, from two pinned npm emoji packages.

Each emoji image (a base emoji or one of its skin-tone variants) becomes an "art object": its photo is the Google
64 px PNG composited on white, its `sorting_date` the release year of its Emoji version, its `target` the era of
that year, its series the base emoji, its materials the emojibase tags and its techniques the category and
subcategory. The recipe can thus run end to end on real data on a laptop.

Unicode allocated code points in release order, so the hexcode alone predicts the era far better than the
pixels do. That is why the hexcode never reaches the dataroot: ids and series ids are salted hashes, rows (and
photo writes) are shuffled, and the hexcode <-> id mapping lives in the private folder beside the answers.

atmaCup #11 shipped materials.csv and techniques.csv for the training objects only (the solution predicted the tag
embedding from the photo for that reason), so by default the dataroot's tag tables hold train objects only and the
test objects' tag rows go to the private folder (test_materials.csv, test_techniques.csv). `--test-tags` keeps
them in the dataroot too, for experiments where test metadata is available; dataset.json records the choice, so a
build made the other way is refused (or, with --force / --redo-stale, rebuilt) instead of reused.

    python -m fold0123.preprocessing.emoji --out datasets/emoji [--cache DIR] [--seed 0] [--test-tags]
                                           [--force | --redo-stale]
"""
from __future__ import annotations

import io
import json
import os
import re
import tarfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from PIL import Image

from fold0123.common.build import earlier_build, headline, pins, salted_id, staged_build, write_records
from fold0123.common.dataroot import beside
from fold0123.common.errors import Fold0123Error, cli_main
from fold0123.preprocessing.npm import EMOJI_DATASOURCE, EMOJIBASE, Package, builder_parser, fetch_package

N_ERAS = 4  # the eras of the release year: atmaCup #11's four target classes
# Changing the salt changes every id: keep it fixed so runs and checkpoints stay comparable across machines.
ID_SALT = "fold0123/emoji/v1"
TEST_SHARE_FOLDS = 5  # test = one fold of a 5-fold stratified group split, i.e. ~20 % of the objects
EMOJI_JSON = "package/emoji.json"
IMAGE_DIR = "package/img/google/64/"
EMOJIBASE_JSON = "package/en/data.json"
JPEG_QUALITY = 95

RELEASE_YEARS = {
    "0.6": 2010, "0.7": 2010, "1.0": 2015, "2.0": 2015, "3.0": 2016, "4.0": 2016, "5.0": 2017, "11.0": 2018,
    "14.0": 2021, "15.0": 2022, "15.1": 2023, "16.0": 2024,
}
RELEASE_YEARS_BY_MAJOR = {"12": 2019, "13": 2020}  # 12.0, 12.1, 13.0, 13.1, ... share their year


class EmojiDataError(Fold0123Error):
    """A package file that does not have the structure the builder relies on; one line naming file and emoji."""


@dataclass(frozen=True)
class EmojiImage:
    """One image of emoji-datasource, before anonymisation (hexcodes are the uppercase `unified` strings)."""
    hexcode: str
    base_hexcode: str
    short_name: str
    added_in: str
    category: str
    subcategory: str
    image: str


@dataclass
class Summary:
    """What a build produced; printed by the CLI and stored (with test counts) in the private folder."""
    out: str
    private: str
    seed: int
    rows: int
    series: int
    train_rows: int
    test_rows: int
    train_series: int
    test_series: int
    train_targets: list[int]
    test_targets: list[int]
    tags_per_object: float
    share_without_tags: float
    tag_matched: int
    skipped_without_image: int
    techniques_per_object: float
    reused: bool = False
    packages: list[str] = field(default_factory=list)
    test_tags: bool = False  # the test objects' tag rows are in the dataroot too (--test-tags)
    test_tag_rows: int = 0   # materials + techniques rows of test objects (in the private folder either way)

    @property
    def tag_match_rate(self) -> float:
        return self.tag_matched / self.rows if self.rows else 0.0

    def lines(self) -> list[str]:
        header = "target " + "".join(f"{c:>7d}" for c in range(N_ERAS))
        return [
            headline("emoji dataset", self),
            f"  private answers and ids: {self.private}",
            f"  rows {self.rows} (train {self.train_rows}, test {self.test_rows}); "
            f"series {self.series} (train {self.train_series}, test {self.test_series}); seed {self.seed}",
            f"  {header}",
            "  train  " + "".join(f"{n:>7d}" for n in self.train_targets),
            "  test   " + "".join(f"{n:>7d}" for n in self.test_targets),
            f"  materials: {self.tags_per_object:.2f} tags per object, {100 * self.share_without_tags:.1f}% "
            f"without tags; tag match rate {100 * self.tag_match_rate:.1f}% ({self.tag_matched}/{self.rows})",
            f"  techniques: {self.techniques_per_object:.2f} per object; "
            f"skipped {self.skipped_without_image} emoji without a Google image",
            "  tags in the dataroot: " + ("train and test objects (--test-tags)" if self.test_tags else
                                           f"train objects only, as in atmaCup #11 ({self.test_tag_rows} test "
                                           f"tag rows in {self.private}/test_*.csv)"),
        ]


# ---------------------------------------------------------------- the mapping

def release_year(version: str, what: str) -> int:
    """The release year of an Emoji version; an unknown version is an error, never a guess."""
    version = str(version).strip()
    if version in RELEASE_YEARS:
        return RELEASE_YEARS[version]
    major, _, minor = version.partition(".")
    if major in RELEASE_YEARS_BY_MAJOR and minor.isdigit():
        return RELEASE_YEARS_BY_MAJOR[major]
    known = ", ".join(list(RELEASE_YEARS) + [f"{m}.x" for m in RELEASE_YEARS_BY_MAJOR])
    raise EmojiDataError(f"{what}: unknown Emoji version {version!r} in 'added_in' (known: {known})")


def era(year: int) -> int:
    """The ordinal target: 0 = 2010 (Japanese carriers), 1 = 2015, 2 = 2016-2017, 3 = 2018 and later."""
    if year <= 2010:
        return 0
    if year <= 2015:
        return 1
    if year <= 2017:
        return 2
    return 3


def strip_fe0f(hexcode: str) -> str:
    """The hexcode without variation selector 16, which the two packages use inconsistently."""
    return "-".join(part for part in hexcode.upper().split("-") if part != "FE0F")


def tone_names(label: str) -> list[str]:
    """The skin-tone names in an emojibase skin label ('waving hand: light skin tone' -> ['light skin tone'])."""
    _, _, qualifiers = label.partition(": ")
    return [part.strip() for part in qualifiers.split(",") if part.strip().endswith("skin tone")]


# ---------------------------------------------------------------- reading the packages

def member_bytes(tgz: Path, wanted: Callable[[str], bool]) -> dict[str, bytes]:
    """Read the members `wanted(name)` selects in one sequential pass (random access in a .tgz re-decompresses)."""
    found = {}
    try:
        with tarfile.open(tgz, "r:gz") as tar:
            for member in tar:
                if member.isfile() and wanted(member.name):
                    found[member.name] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as err:
        raise EmojiDataError(f"{tgz}: not a readable .tgz ({err})") from None
    return found


def json_list(tgz: Path, member: str, files: dict[str, bytes] | None = None) -> list:
    """The JSON list `member` of the package (read from `files` when given); EmojiDataError naming what is amiss."""
    files = member_bytes(tgz, lambda name: name == member) if files is None else files
    if member not in files:
        raise EmojiDataError(f"{tgz}: no {member} in the package")
    try:
        entries = json.loads(files[member])
    except ValueError as err:
        raise EmojiDataError(f"{tgz}: {member}: not valid JSON ({err})") from None
    if not isinstance(entries, list):
        raise EmojiDataError(f"{tgz}: {member}: expected a list of emoji, got {type(entries).__name__}")
    return entries


def _field(entry: dict, name: str, where: str) -> str:
    value = entry.get(name) if isinstance(entry, dict) else None
    if value is None or value == "":
        raise EmojiDataError(f"{where}: missing field {name!r}")
    return str(value)


def read_emoji_datasource(tgz: str | os.PathLike) -> tuple[list[EmojiImage], dict[str, bytes], int]:
    """Every emoji and skin variant of emoji.json that has a Google 64 px image (at least one), the images, and how
    many had none."""
    tgz = Path(tgz)
    files = member_bytes(tgz, lambda name: name == EMOJI_JSON or
                          (name.startswith(IMAGE_DIR) and name.endswith(".png")))
    entries = json_list(tgz, EMOJI_JSON, files)
    images = {name[len(IMAGE_DIR):]: data for name, data in files.items() if name.startswith(IMAGE_DIR)}
    rows, seen, skipped = [], set(), 0
    for i, entry in enumerate(entries):
        where = f"{tgz}: {EMOJI_JSON}: emoji #{i}"
        base = _field(entry, "unified", where).upper()
        short_name = str(entry.get("short_name") or base)
        where = f"{tgz}: {EMOJI_JSON}: emoji {base} ({short_name})"
        category, subcategory = _field(entry, "category", where), _field(entry, "subcategory", where)
        variants = [(base, short_name, entry)]
        skins = entry.get("skin_variations") or {}
        if not isinstance(skins, dict):
            raise EmojiDataError(f"{where}: 'skin_variations' is not an object")
        for key, skin in skins.items():
            tones = "::".join(f"skin-tone-{int(t, 16) - 0x1F3FA}" if re.fullmatch(r"1F3F[B-F]", t.upper()) else t
                              for t in key.split("-"))
            variants.append((_field(skin, "unified", f"{where} skin {key}").upper(), f"{short_name}::{tones}", skin))
        for hexcode, name, item in variants:
            what = f"{tgz}: {EMOJI_JSON}: emoji {hexcode} ({name})"
            image = _field(item, "image", what)
            if image not in images:
                skipped += 1
                continue
            if hexcode in seen:
                raise EmojiDataError(f"{what}: duplicate 'unified' hexcode")
            seen.add(hexcode)
            added_in = _field(item, "added_in", what)
            release_year(added_in, what)  # fail here, naming the emoji, rather than later
            rows.append(EmojiImage(hexcode, base, name, added_in, category, subcategory, image))
    if not rows:
        raise EmojiDataError(f"{tgz}: {EMOJI_JSON}: no emoji with a Google 64 px image")
    return rows, images, skipped


def read_emojibase(tgz: str | os.PathLike) -> tuple[dict[str, list[str]], dict[str, str]]:
    """(tags, English labels) by uppercase hexcode. Skins carry no tags in emojibase: they inherit the base's and
    add their tones."""
    tgz = Path(tgz)
    tags, labels = {}, {}
    for i, entry in enumerate(json_list(tgz, EMOJIBASE_JSON)):
        where = f"{tgz}: {EMOJIBASE_JSON}: entry #{i}"
        base = _field(entry, "hexcode", where).upper()
        base_tags = [str(t) for t in entry.get("tags") or []]
        tags[base] = base_tags
        for skin in entry.get("skins") or []:
            own = [t for t in tone_names(str(skin.get("label", ""))) if t not in base_tags]
            tags[_field(skin, "hexcode", f"{where} ({base}) skin").upper()] = base_tags + list(dict.fromkeys(own))
        labels.update((str(item["hexcode"]).upper(), str(item["label"]))
                      for item in [entry, *(entry.get("skins") or [])] if item.get("label"))
    return tags, labels


def by_hexcode(table: dict) -> Callable[[str], object]:
    """A lookup in emojibase's `table` (by uppercase hexcode) that tries a hexcode as is, then without FE0F on both
    sides; None when unmatched."""
    stripped = {}
    for hexcode, value in table.items():
        stripped.setdefault(strip_fe0f(hexcode), value)
    return lambda hexcode: table[hexcode.upper()] if hexcode.upper() in table else stripped.get(strip_fe0f(hexcode))


def on_white(png: bytes, what: str) -> Image.Image:
    """The PNG alpha-composited on a white background, as RGB (JPEG has no alpha)."""
    try:
        image = Image.open(io.BytesIO(png))
        image.load()
    except Exception as err:  # PIL raises many types for corrupt data
        raise EmojiDataError(f"{what}: not a readable PNG ({err})") from None
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def shuffled_ids(rows: list[EmojiImage], seed: int, salt: str, series_column: str,
                 tgz: Path) -> tuple[list[EmojiImage], pd.DataFrame]:
    """The rows in a seeded random order (the only order ever written) and their salted ids (common.build): the
    object id from the hexcode, `series_column` from the base emoji's, with a kind of its own so that a base emoji's
    object id never equals its series id (which would tell the base, usually the oldest row of its series)."""
    rows = [rows[i] for i in np.random.default_rng(seed).permutation(len(rows))]
    frame = pd.DataFrame({"object_id": [salted_id(salt, "object", r.hexcode) for r in rows],
                          series_column: [salted_id(salt, "series", r.base_hexcode) for r in rows]})
    if frame["object_id"].duplicated().any() or set(frame["object_id"]) & set(frame[series_column]):
        raise EmojiDataError(f"{tgz}: opaque id collision; change ID_SALT")
    return rows, frame


def test_split(series: pd.Series, target: pd.Series, seed: int) -> np.ndarray:
    """Which objects are test: a series-disjoint, target-stratified ~20 % (one fold of a 5-fold
    StratifiedGroupKFold)."""
    from sklearn.model_selection import StratifiedGroupKFold

    if series.nunique() < TEST_SHARE_FOLDS:
        raise EmojiDataError(f"only {series.nunique()} series; need at least {TEST_SHARE_FOLDS} to hold out a test set")
    splitter = StratifiedGroupKFold(n_splits=TEST_SHARE_FOLDS, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class has fewer members" on tiny inputs
        _, test_index = next(splitter.split(np.zeros(len(series)), target.to_numpy(), series.to_numpy()))
    return series.isin(set(series.iloc[test_index])).to_numpy()


# ---------------------------------------------------------------- the build

def test_tags_path(private: str | os.PathLike, table: str) -> Path:
    """Where the test objects' rows of `table` (materials | techniques) live: `{private}/test_{table}.csv`."""
    return Path(private) / f"test_{table}.csv"


def _write_tag_tables(tables: dict[str, pd.DataFrame], is_test_id: set[str], out: Path, private: Path,
                      test_tags: bool) -> int:
    """Each tag table split by object: train rows to the dataroot, test rows to the private folder (always, so the
    private folder is complete whichever way the dataroot was built), and with `test_tags` every row to the
    dataroot as well (in the one shuffled order). Returns the number of test rows."""
    n_test = 0
    for table, frame in tables.items():
        test = frame["object_id"].isin(is_test_id).to_numpy()
        n_test += int(test.sum())
        (frame if test_tags else frame[~test]).to_csv(out / f"{table}.csv", index=False)
        frame[test].to_csv(test_tags_path(private, table), index=False)
    return n_test


def _write_tables(rows: list[EmojiImage], images: dict[str, bytes], tags: dict[str, list[str]], out: Path,
                  private: Path, seed: int, emoji_tgz: Path, skipped: int, test_tags: bool = False) -> Summary:
    tags_of = by_hexcode(tags)
    rows, frame = shuffled_ids(rows, seed, ID_SALT, "art_series_id", emoji_tgz)
    frame.insert(1, "sorting_date", [release_year(r.added_in, r.hexcode) for r in rows])
    frame["target"] = frame["sorting_date"].map(era)
    is_test = test_split(frame["art_series_id"], frame["target"], seed)

    materials, techniques, matched, n_tags = [], [], 0, []
    for object_id, row in zip(frame["object_id"], rows):
        found = tags_of(row.hexcode)
        matched += found is not None
        names = list(dict.fromkeys(found or []))
        n_tags.append(len(names))
        materials += [(object_id, name) for name in names]
        techniques += [(object_id, row.category), (object_id, row.subcategory)]

    (out / "photos").mkdir()
    for object_id, row in zip(frame["object_id"], rows):
        photo = on_white(images[row.image], f"{emoji_tgz}: {IMAGE_DIR}{row.image}")
        photo.save(out / "photos" / f"{object_id}.jpg", "JPEG", quality=JPEG_QUALITY)
    frame[~is_test].to_csv(out / "train.csv", index=False)
    frame[is_test][["object_id"]].to_csv(out / "test.csv", index=False)
    test_tag_rows = _write_tag_tables({"materials": pd.DataFrame(materials, columns=["object_id", "name"]),
                                       "techniques": pd.DataFrame(techniques, columns=["object_id", "name"])},
                                      set(frame["object_id"][is_test]), out, private, test_tags)
    frame[is_test][["object_id", "target", "sorting_date"]].to_csv(private / "answers.csv", index=False)
    pd.DataFrame({
        "object_id": frame["object_id"], "hexcode": [r.hexcode for r in rows],
        "short_name": [r.short_name for r in rows], "split": np.where(is_test, "test", "train"),
        "art_series_id": frame["art_series_id"], "base_hexcode": [r.base_hexcode for r in rows],
        "added_in": [r.added_in for r in rows],
    }).to_csv(private / "ids.csv", index=False)

    def counts(mask: np.ndarray) -> list[int]:
        return np.bincount(frame["target"][mask], minlength=N_ERAS).tolist()

    n_tags = np.asarray(n_tags)
    return Summary(
        out=str(out), private=str(private), seed=seed, rows=len(frame), series=frame["art_series_id"].nunique(),
        train_rows=int((~is_test).sum()), test_rows=int(is_test.sum()),
        train_series=frame["art_series_id"][~is_test].nunique(),
        test_series=frame["art_series_id"][is_test].nunique(),
        train_targets=counts(~is_test), test_targets=counts(is_test),
        tags_per_object=float(n_tags.mean()), share_without_tags=float((n_tags == 0).mean()),
        tag_matched=int(matched), skipped_without_image=skipped, techniques_per_object=2.0, test_tags=test_tags,
        test_tag_rows=test_tag_rows)


def private_dir(out: str | os.PathLike) -> Path:
    """`datasets/emoji` -> `datasets/emoji_private`: beside the dataroot, never inside it."""
    return beside(out, "_private")


def _tags_phrase(test_tags: bool) -> str:
    return "test tags in the dataroot (--test-tags)" if test_tags else "train-only tags"


def _keep_photo_times(old_photos: Path, new_photos: Path) -> None:
    """Give each rebuilt photo that is byte-identical to the earlier build's its earlier modification time.

    Runs fingerprint the photo folder by names, sizes and mtimes (common.fingerprint), so a rebuild that changes
    only the tag tables (--test-tags) then leaves the runs that read only the photos up to date."""
    if not old_photos.is_dir():
        return
    for new in new_photos.iterdir():
        old = old_photos / new.name
        try:
            same = old.stat().st_size == new.stat().st_size and old.read_bytes() == new.read_bytes()
            if same:
                st = old.stat()
                os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))
        except OSError:
            continue


def build_from_tarballs(emoji_tgz: str | os.PathLike, emojibase_tgz: str | os.PathLike, out: str | os.PathLike,
                        seed: int = 0, packages: tuple[Package, ...] = (), test_tags: bool = False) -> Summary:
    """Build dataroot `out` and its private folder from the two tarballs, replacing what is there.

    Everything is written into temp folders first and renamed into place at the end (private first, then the
    dataroot whose marker says "complete"), so a failure leaves no half-written dataset behind. `test_tags`
    keeps the test objects' tag rows in the dataroot (they are in the private folder either way)."""
    out, emoji_tgz, emojibase_tgz = Path(out), Path(emoji_tgz), Path(emojibase_tgz)
    private = private_dir(out)
    with staged_build(out, private) as (tmp_out, tmp_private):
        rows, images, skipped = read_emoji_datasource(emoji_tgz)
        tags, _ = read_emojibase(emojibase_tgz)
        summary = _write_tables(rows, images, tags, tmp_out, tmp_private, seed, emoji_tgz, skipped, test_tags)
        summary.out, summary.private, summary.packages = str(out), str(private), pins(packages)
        write_records(tmp_out, tmp_private, summary, {
            "builder": "fold0123.preprocessing.emoji", "seed": seed, "packages": pins(packages),
            "test_tags": bool(test_tags),
            "rows": summary.rows, "train_rows": summary.train_rows, "test_rows": summary.test_rows})
        _keep_photo_times(out / "photos", tmp_out / "photos")
    return summary


def build_dataset(out: str | os.PathLike = "datasets/emoji", cache: str | os.PathLike | None = None, seed: int = 0,
                  force: bool = False, packages: tuple[Package, Package] = (EMOJI_DATASOURCE, EMOJIBASE),
                  test_tags: bool = False, redo_stale: bool = False) -> Summary:
    """Fetch (or reuse) the pinned packages and build the dataset, or reuse a complete earlier build made as asked.

    `force` rebuilds whatever is at `out`; `redo_stale` rebuilds only a complete earlier build made with other
    options (what recipe.py --redo-stale asks for), never a folder that is not a build."""
    earlier = earlier_build(out, private_dir(out), Summary, {"seed": seed, "packages": pins(packages),
                                                             "test_tags": test_tags}, "emoji build",
                            "pass --force or --redo-stale to rebuild it (recipe.py: --redo-stale)",
                            defaults={"test_tags": True}, phrases={"test_tags": _tags_phrase}, force=force,
                            redo_stale=redo_stale)
    if earlier is not None:
        earlier.test_tags = test_tags  # a marker without test_tags: made before the option, with them (defaults)
        return earlier
    emoji_tgz, emojibase_tgz = (fetch_package(p, cache) for p in packages)
    return build_from_tarballs(emoji_tgz, emojibase_tgz, out, seed=seed, packages=packages, test_tags=test_tags)


@cli_main
def main(argv: list[str] | None = None) -> None:
    parser = builder_parser(__doc__, "datasets/emoji")
    parser.add_argument("--test-tags", action="store_true",
                        help="keep the test objects' materials/techniques rows in the dataroot (default: train "
                             "objects only, as atmaCup #11 shipped them; the test rows go to the private folder)")
    parser.add_argument("--redo-stale", action="store_true",
                        help="rebuild a complete build made with another seed, package pin or --test-tags choice "
                             "(default: stop, naming what differs); a build made as asked is reused")
    args = parser.parse_args(argv)
    summary = build_dataset(args.out, cache=args.cache, seed=args.seed, force=args.force, test_tags=args.test_tags,
                            redo_stale=args.redo_stale)
    print("\n".join(summary.lines()))


if __name__ == "__main__":
    main()
