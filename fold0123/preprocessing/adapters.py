"""Input adapters: a competition's own layout -> the project's dataroot (DESIGN.md section 1), without copying.

Every stage reads one dataroot: `train.csv` (object_id, target[, group][, extra columns]), `test.csv`
(object_id), `photos/{object_id}.jpg` and `competition.yml` (data.competition: kind, metric, classes, group
column). Competitions ship their images otherwise; an adapter reads their layout once, checks it, and writes that
dataroot:

  atmaCup #11    the project's own layout: the identity adapter, nothing to do (a dataroot without
                 competition.yml is read as atmaCup #11; point --dataroot at the data as shipped)
  imagefolder    `SRC/train/{class}/*.{jpg,png,webp,...}` and `SRC/test/*` (ACCV 2022), optionally `--groups
                 FILE`: a CSV whose first column names an image (its path relative to SRC, or its name without
                 extension) and whose second column holds its group; that column's header becomes the group
                 column (images of one group never straddle two folds)
  csv            `SRC/train.csv` (an id column holding image file names, a label column, any extra columns, which
                 are kept), images in `SRC/train_images/{label}/` or flat in `SRC/train_images/`, test images in
                 `SRC/test_images/` (the fastai paddy-disease layout); `--group-column` names a grouping column

    python -m fold0123.preprocessing.adapters imagefolder SRC --out DATAROOT [--groups FILE] [--metric accuracy]
                                              (SRC or --src SRC)
    python -m fold0123.preprocessing.adapters csv SRC --out DATAROOT --id-column image_id --label-column label
                                              [--group-column G] [--metric accuracy]
    (both: [--name NAME] [--force] [--no-decode])

What they write, and why so:
- Object ids are the image file names without their extension (`train/cat/0042.png` -> `0042`), so a submission's
  ids are the competition's own; two images with one stem, or a test image whose stem is also a train image's, are
  an error naming both files. Ids must be usable as file names (common.names).
- The classes are the sorted folder (or label) names; `target` is the class index 0..K-1 and competition.yml
  lists the names in that order (kind: classification, the metric given, the group column or null).
- `photos/{object_id}.jpg` are relative SYMLINKS to the original files: a competition's images are not copied (a
  100k-image set costs no space and no time). The `.jpg` name is only the project's naming rule: PIL decodes
  every file by its content, so a PNG or WebP behind a `.jpg` name reads as itself in the image cache, the pixel
  statistics and the photo checks. Relative links keep working when the folder holding both the source and the
  dataroot is moved or copied as a whole (`rsync -a`, a container mount); moving one of them alone breaks them:
  re-run the adapter with --force. (Hard links would survive that, but only on one file system and they hide
  where a photo came from; copies would double the disk use.)
- Every image is decoded once (JPEGs at 1/8 scale, which still reads every byte, so a truncated file is caught):
  a file that is not an image stops the adapter naming it, instead of a DataLoader worker hours later.
  `--no-decode` only identifies each file's format from its header (fast on a very large set). Hidden files
  (`.DS_Store`, macOS `._*`) and Thumbs.db / desktop.ini are skipped.
- The dataroot is built in a temporary folder beside it and renamed into place at the end: an error leaves nothing
  half-written. An existing folder is replaced only with --force. `adapter.json` records what made it.
- Every bad layout is one line naming the file or folder (missing train/ folder, empty class folder, a file that is
  not an image, a label that does not match its folder, a missing id column, a test image also in train, no test
  images, ...), as the dataroot's readers do.

Importable without torch (numpy, pandas, PIL, pyyaml only).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml
from PIL import Image

from fold0123.common.build import BuildError, staged_build
from fold0123.common.errors import LayoutError, UsageError, cli_main
from fold0123.common.io import make_dir
from fold0123.common.names import name_problem
from fold0123.data.competition import METRICS, SPEC_FILE, read_spec
from fold0123.data.layout import read_csv

MARKER = "adapter.json"  # written into the dataroot by every adapter: what made it, from where
SKIPPED_NAMES = {"Thumbs.db", "desktop.ini"}
PROJECT_COLUMNS = ("object_id", "target")
DRAFT_SIDE = 64  # JPEG decode check at reduced scale
MAX_NAME_BYTES = 255  # a file name's limit on Linux and macOS file systems
# labels that are a missing number written out (pandas and numpy write NaN as "nan"/"NaN"), not a class; "NA",
# "null", "no" stay names (Namibia's flag; tests/test_adapters.py keeps YAML-looking class names as text)
MISSING_LABELS = {"nan", "#n/a"}


def label_problem(label: str) -> str | None:
    """Why a class name (a CSV label or a class folder's name) cannot be one, or None: leading or trailing
    whitespace (`"blast "` would become a class beside `blast`) or a missing-value word (`NaN`). Refused rather than
    normalised, so that the classes are exactly the names the user sees."""
    if label != label.strip():
        return "has leading or trailing whitespace (it would become a class beside " + repr(label.strip()) + ")"
    if label.lower() in MISSING_LABELS:
        return "is a missing value, not a class"
    return None


@dataclass(frozen=True)
class SourceImage:
    """One image of the competition: its object id, its original file, its class name (None for a test image)
    and the train.csv values it brings (group and extra columns)."""
    object_id: str
    path: Path
    label: str | None = None
    values: tuple[tuple[str, str], ...] = ()


@dataclass
class Collected:
    """What an adapter found in SRC, checked: train images with their classes, test images, and the columns."""
    adapter: str
    source: Path
    train: list[SourceImage]
    test: list[SourceImage]
    classes: list[str]
    group_column: str | None = None
    columns: list[str] = field(default_factory=list)  # train.csv's columns after object_id, target (group first)
    notes: list[str] = field(default_factory=list)
    options: dict = field(default_factory=dict)
    image_dirs: list[str] = field(default_factory=list)  # SRC's folders that hold images (--out must not be in one)


@dataclass
class AdapterSummary:
    """What was written; printed by the CLI (class count, sizes, the largest and smallest classes)."""
    out: str
    adapter: str
    source: str
    classes: int
    train_rows: int
    test_rows: int
    groups: int | None
    group_column: str | None
    metric: str
    class_counts: dict[str, int]
    notes: list[str] = field(default_factory=list)

    def lines(self, shown: int = 5) -> list[str]:
        largest, smallest = extremes(self.class_counts, shown)
        out = [f"{self.adapter} {self.source} -> {self.out}",
               f"  {self.classes} classes; train {self.train_rows} images, test {self.test_rows}; metric "
               f"{self.metric}; "
               + (f"{self.groups} groups ({self.group_column})" if self.groups else "no groups (plain folds)"),
               f"  largest classes: {largest}", f"  smallest classes: {smallest}"]
        return out + [f"  note: {n}" for n in self.notes]


# ---------------------------------------------------------------------------------------------------- checks

def extremes(counts: dict[str, int], shown: int = 5) -> tuple[str, str]:
    """The `shown` largest and smallest classes, each as `name count, ...` (ties in name order)."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return tuple(", ".join(f"{k} {v}" for k, v in part[:shown]) for part in (ranked, ranked[::-1]))


def class_order(names) -> list[str]:
    """The classes in index order: sorted names (as torchvision's ImageFolder orders them)."""
    return sorted(set(names))


def is_skipped(name: str) -> bool:
    """Files an OS or a file manager leaves beside images, which are never images of the competition."""
    return name.startswith(".") or name in SKIPPED_NAMES


def listed(folder: Path) -> list[Path]:
    """The entries of `folder` a competition put there, sorted by name (hidden and OS files left out)."""
    try:
        return sorted((p for p in folder.iterdir() if not is_skipped(p.name)), key=lambda p: p.name)
    except OSError as err:  # a folder without read permission, a vanished mount
        raise LayoutError(f"{folder}: cannot be listed ({err.strerror or err})") from None


def object_id_of(path: Path) -> str:
    """The object id of an image: its file name without the extension; LayoutError when it cannot be a file name
    (common.names) or `photos/{id}.jpg` would be longer than a file name may be."""
    object_id = path.stem
    problem = name_problem(object_id)
    if not problem and len(f"{object_id}.jpg".encode()) > MAX_NAME_BYTES:
        problem = f"is too long for photos/{{id}}.jpg (at most {MAX_NAME_BYTES - 4} bytes)"
    if problem:
        raise LayoutError(f"{path}: image name {object_id!r} {problem}: it cannot become an object id")
    return object_id


def check_unique(images: list[SourceImage], seen: dict[str, Path] | None = None, also: str = "") -> dict[str, Path]:
    """Object ids occur once: a second image with the same stem is an error naming both files. `seen`: ids already
    taken (the train images, when checking test images: `also` then says so)."""
    seen = dict(seen or {})
    own: set[str] = set()
    for image in images:
        if image.object_id in seen:
            earlier = seen[image.object_id]
            if image.object_id in own or not also:
                raise LayoutError(f"duplicate image name {image.object_id!r}: {earlier} and {image.path} (object ids "
                                  f"are the file names without extension)")
            raise LayoutError(f"{image.path}: test image {image.object_id!r} is also a {also} image ({earlier})")
        seen[image.object_id] = image.path
        own.add(image.object_id)
    return seen


def check_image(path: Path, decode: bool = True) -> None:
    """LayoutError naming `path` when it is not an image PIL can read: decoded (JPEG at 1/8 scale, every byte still
    read) or, without `decode`, only identified from its header."""
    try:
        with Image.open(path) as img:
            if decode:
                img.draft("RGB", (DRAFT_SIDE, DRAFT_SIDE))
                img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise LayoutError(f"{path}: not a readable image ({reason})") from None


def _digest(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_leaks(collected: Collected) -> None:
    """LayoutError naming both files when a test image is a train image: a link to the same file, or the same
    bytes (a leak that inflates every score). Only files of a train image's size are hashed."""
    by_file = {os.path.realpath(i.path): i.path for i in collected.train}
    sizes: dict[int, list[Path]] = {}
    for image in collected.train:
        sizes.setdefault(image.path.stat().st_size, []).append(image.path)
    known: dict[Path, str] = {}  # a train file's digest, computed when a test file of its size first asks

    def digest(path: Path) -> str:
        if path not in known:
            known[path] = _digest(path)
        return known[path]

    for image in collected.test:
        same = by_file.get(os.path.realpath(image.path))
        if same is not None:
            raise LayoutError(f"{image.path}: test image is the train image {same} (the same file; "
                              f"--allow-duplicates keeps it)")
        candidates = sizes.get(image.path.stat().st_size, [])
        mine = _digest(image.path) if candidates else None
        same = next((p for p in candidates if digest(p) == mine), None)
        if same is not None:
            raise LayoutError(f"{image.path}: test image has the same bytes as the train image {same} "
                              f"(--allow-duplicates keeps it)")


def _folder(path: Path, what: str, hint: str) -> Path:
    if not path.is_dir():
        raise LayoutError(f"{path}: {'is not a folder' if path.exists() else 'folder not found'}: {what} ({hint})")
    return path


def _test_images(folder: Path, hint: str) -> list[SourceImage]:
    _folder(folder, "the test images", hint)
    images = []
    for entry in listed(folder):
        if entry.is_dir():
            raise LayoutError(f"{entry}: a folder among the test images (expected image files only: {hint})")
        images.append(SourceImage(object_id_of(entry), entry))
    if not images:
        raise LayoutError(f"{folder}: no test images (the test set is what the competition predicts)")
    return images


def _classes_and_test(collected: Collected, where: Path, test_dir: str, hint: str) -> Collected:
    """`collected` with its classes (at least 2, from the train images) and its test images (none sharing a train
    image's id), every id checked to occur once."""
    classes = class_order(image.label for image in collected.train)
    if len(classes) < 2:
        raise LayoutError(f"{where}: {len(classes)} class{'es' if len(classes) != 1 else ''} "
                          f"({', '.join(classes) or 'none'}): a classification needs at least 2")
    if any(not str(name).strip() for name in classes):
        raise LayoutError(f"{where}: an empty class name")
    seen = check_unique(collected.train)
    collected.classes, collected.test = classes, _test_images(collected.source / test_dir, hint)
    check_unique(collected.test, seen, also="train")
    return collected


# ---------------------------------------------------------------------------------------------------- ImageFolder

IMAGEFOLDER_HINT = "ImageFolder layout: SRC/train/{class}/*.jpg and SRC/test/*.jpg"


def scan_imagefolder(src: str | os.PathLike, groups: str | os.PathLike | None = None) -> Collected:
    """The ImageFolder layout (ACCV 2022): one folder per class under train/, the test images flat in test/."""
    src = Path(src)
    _folder(src, "the competition's data", IMAGEFOLDER_HINT)
    train_dir = _folder(src / "train", "the train images, one folder per class", IMAGEFOLDER_HINT)
    train = []
    for entry in listed(train_dir):
        if not entry.is_dir():
            raise LayoutError(f"{entry}: a file directly in train/ (expected one folder per class: "
                              f"{IMAGEFOLDER_HINT})")
        problem = label_problem(entry.name)
        if problem:
            raise LayoutError(f"{entry}: class folder name {entry.name!r} {problem}")
        files = listed(entry)
        if not files:
            raise LayoutError(f"{entry}: empty class folder (no images)")
        for path in files:
            if path.is_dir():
                raise LayoutError(f"{path}: a folder inside class folder {entry.name!r} (expected image files only)")
            train.append(SourceImage(object_id_of(path), path, entry.name))
    collected = _classes_and_test(Collected("imagefolder", src, train, [], [], image_dirs=["train", "test"],
                                            options={"groups": None if groups is None else str(groups)}),
                                  train_dir, "test", IMAGEFOLDER_HINT)
    if groups is not None:
        collected = _with_groups(collected, Path(groups))
    return collected


def _with_groups(collected: Collected, path: Path) -> Collected:
    """Attach a groups CSV (image, group) to the train images: every train image needs exactly one group."""
    if not path.is_file():
        raise LayoutError(f"{path}: groups file not found")
    frame = read_csv(path, (), text=True)  # every column as text: ids such as 045 stay themselves
    if frame.shape[1] < 2:
        raise LayoutError(f"{path}: expected 2 columns (the image, its group), has {frame.shape[1]}")
    image_column, column = str(frame.columns[0]), str(frame.columns[1])
    if column in PROJECT_COLUMNS or not column.strip():
        raise LayoutError(f"{path}: group column {column!r} cannot be a column of train.csv (name it e.g. 'group')")
    by_path, by_id = {}, {}
    for image in [*collected.train, *collected.test]:
        by_path[image.path.relative_to(collected.source).as_posix()] = image.object_id
        by_id[image.object_id] = image.object_id
    group_of: dict[str, str] = {}
    for row, (name, group) in enumerate(zip(frame[image_column], frame[column])):
        where = f"{path}: row {row + 2}"
        object_id = by_path.get(name.strip("/").removeprefix("./")) or by_id.get(name) or by_id.get(Path(name).stem)
        if object_id is None:
            raise LayoutError(f"{where}: image {name!r} is neither a train nor a test image of {collected.source}")
        if not group.strip():
            raise LayoutError(f"{where}: image {name!r}: empty group")
        if object_id in group_of:
            raise LayoutError(f"{where}: image {name!r} has a group already (a second row for it)")
        group_of[object_id] = group
    train = []
    for image in collected.train:
        if image.object_id not in group_of:
            raise LayoutError(f"{path}: no group for train image {image.path}")
        train.append(SourceImage(image.object_id, image.path, image.label, ((column, group_of[image.object_id]),)))
    collected.train, collected.group_column, collected.columns = train, column, [column]
    return collected


# ---------------------------------------------------------------------------------------------------- CSV + images

CSV_HINT = "CSV layout: SRC/train.csv, SRC/train_images/{label}/ (or flat), SRC/test_images/"


def _index(folder: Path) -> tuple[dict[str, list[tuple[str | None, Path]]], dict[str, list[tuple[str | None, Path]]]]:
    """Every image under `folder` (flat, or one level of label folders) by file name and by stem: (label folder or
    None, path)."""
    by_name: dict[str, list] = {}
    by_stem: dict[str, list] = {}
    for entry in listed(folder):
        inside = [(entry.name, p) for p in listed(entry) if not p.is_dir()] if entry.is_dir() else [(None, entry)]
        for label, path in inside:
            by_name.setdefault(path.name, []).append((label, path))
            by_stem.setdefault(path.stem, []).append((label, path))
    return by_name, by_stem


def scan_csv(src: str | os.PathLike, id_column: str = "image_id", label_column: str = "label",
             group_column: str | None = None, train_csv: str = "train.csv", train_images: str = "train_images",
             test_images: str = "test_images") -> Collected:
    """The CSV + image folder layout (fastai paddy): labels in a CSV, images in label folders or flat."""
    src = Path(src)
    _folder(src, "the competition's data", CSV_HINT)
    if id_column == label_column:
        raise UsageError(f"--label-column {label_column!r} is the --id-column: every image would be its own class")
    csv_path = src / train_csv
    if not csv_path.is_file():
        raise LayoutError(f"{csv_path}: file not found ({CSV_HINT})")
    frame = read_csv(csv_path, (), text=True)
    has = ", ".join(map(str, frame.columns))
    for column, option in ((id_column, "--id-column"), (label_column, "--label-column"),
                           (group_column, "--group-column")):
        if column is not None and column not in frame.columns:
            raise LayoutError(f"{csv_path}: no column {column!r} (has {has}; choose it with {option})")
    extras = [str(c) for c in frame.columns if c not in (id_column, label_column, group_column)]
    for column in extras:
        if column in PROJECT_COLUMNS:
            raise LayoutError(f"{csv_path}: column {column!r} would clash with train.csv's own {column!r} column "
                              f"(rename it)")
    if frame.empty:
        raise LayoutError(f"{csv_path}: no rows (only a header)")
    images_dir = _folder(src / train_images, "the train images", CSV_HINT)
    by_name, by_stem = _index(images_dir)
    columns = ([group_column] if group_column else []) + extras
    train, used = [], set()
    for row, record in enumerate(frame.to_dict("records")):
        where = f"{csv_path}: row {row + 2}"
        name, label = record[id_column], record[label_column]
        if not name.strip():
            raise LayoutError(f"{where}: empty {id_column!r}")
        if not label.strip():
            raise LayoutError(f"{where}: empty {label_column!r} for image {name!r}")
        if label_problem(label):
            raise LayoutError(f"{where}: {label_column!r} {label!r} of image {name!r} {label_problem(label)}")
        if group_column and not record[group_column].strip():
            raise LayoutError(f"{where}: empty {group_column!r} for image {name!r}")
        candidates = by_name.get(name) or by_stem.get(name) or []
        found = ([p for folder, p in candidates if folder == label]
                 or [p for folder, p in candidates if folder is None])
        if not found and candidates:
            others = ", ".join(sorted({f"{train_images}/{folder}/" for folder, _ in candidates}))
            raise LayoutError(f"{where}: label {label!r} does not match the folder of image {name!r} (it is in "
                              f"{others})")
        if not found:
            raise LayoutError(f"{where}: image {name!r} not found in {images_dir / label}/ or {images_dir}/")
        if found[0] in used:
            raise LayoutError(f"{where}: image {name!r} is listed twice")
        used.add(found[0])
        train.append(SourceImage(object_id_of(found[0]), found[0], label,
                                 tuple((c, record[c]) for c in columns)))
    unlisted = sum(len(v) for v in by_name.values()) - len(used)
    notes = [f"{unlisted} images under {images_dir} are not in {train_csv}: left out"] if unlisted else []
    return _classes_and_test(Collected(
        "csv", src, train, [], [], group_column, columns, notes, image_dirs=[train_images, test_images],
        options={"id_column": id_column, "label_column": label_column, "group_column": group_column,
                 "train_csv": train_csv, "train_images": train_images, "test_images": test_images}),
        csv_path, test_images, CSV_HINT)


# ---------------------------------------------------------------------------------------------------- writing

def check_out(out: Path, src: Path, image_dirs: list[str], force: bool) -> None:
    """Refuse an output that would replace the source or sit among its images (a rerun would scan it), and an
    existing folder without --force (replacing the data a run read is the user's call, even an adapter's own)."""
    out_r, src_r = out.resolve(), src.resolve()
    if out_r == src_r or src_r.is_relative_to(out_r):
        raise UsageError(f"--out {out}: would replace the source folder {src}")
    for folder in image_dirs:
        if out_r.is_relative_to(src_r / folder):
            raise UsageError(f"--out {out}: inside the source's image folder {src / folder} (choose a folder "
                             f"beside it)")
    if (out.exists() or out.is_symlink()) and not force:
        raise BuildError(f"{out}: exists; pass --force to replace it")


def _relative_link(target: Path, final_dir: Path) -> str:
    """The link text from `final_dir` to `target`, on resolved paths (the kernel resolves `..` physically)."""
    return os.path.relpath(target.resolve(), final_dir)


def _write(collected: Collected, built: Path, final_photos: Path, metric: str, name: str, decode: bool) -> None:
    """photos/ (links), train.csv, test.csv and competition.yml into the fresh folder `built`; the links point as
    seen from `final_photos` (where they will be once `built` is renamed into place). Each image is checked as its
    link is made (one pass over the files); a bad one stops the build with `built` half-made, which the caller
    deletes."""
    photos = built / "photos"
    photos.mkdir()
    for image in [*collected.train, *collected.test]:
        check_image(image.path, decode)
        os.symlink(_relative_link(image.path, final_photos), photos / f"{image.object_id}.jpg")
    index = {c: i for i, c in enumerate(collected.classes)}
    train = pd.DataFrame({"object_id": [i.object_id for i in collected.train],
                          "target": [index[i.label] for i in collected.train]})
    for column in collected.columns:
        train[column] = [dict(i.values)[column] for i in collected.train]
    train.to_csv(built / "train.csv", index=False)
    pd.DataFrame({"object_id": [i.object_id for i in collected.test]}).to_csv(built / "test.csv", index=False)
    # columns: [] -- the extra columns are kept in train.csv but not required of every split file (the spec's
    # default, atmaCup's sorting_date, would be)
    spec = {"name": name, "kind": "classification", "metric": metric, "classes": list(collected.classes),
            "group_column": collected.group_column, "columns": []}
    (built / SPEC_FILE).write_text(f"# written by fold0123.preprocessing.adapters ({collected.adapter}) from "
                                   f"{collected.source}\n" + yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
    read_spec(built)  # what the pipeline will read: a spec it would refuse fails here, before anything is published


def write_layout(collected: Collected, out: str | os.PathLike, metric: str = "accuracy", name: str | None = None,
                 force: bool = False, decode: bool = True, allow_duplicates: bool = False) -> AdapterSummary:
    """Write the dataroot `out` atomically (a temp folder beside it, renamed into place once every image has been
    checked and every file written; on any error the temp folder is deleted and `out` is as it was). A test image
    that is a train image (`check_leaks`) is refused unless `allow_duplicates`."""
    out = Path(out)
    if metric not in METRICS:
        raise UsageError(f"--metric {metric}: expected one of {', '.join(METRICS)}")
    if metric == "rmse":
        raise UsageError("--metric rmse: scores a number; these adapters write a classification")
    check_out(out, collected.source, collected.image_dirs, force)
    if not allow_duplicates:
        check_leaks(collected)
    make_dir(out.parent)
    final_photos = out.parent.resolve() / out.name / "photos"
    name = name or collected.source.resolve().name
    counts = pd.Series([i.label for i in collected.train]).value_counts()
    groups = (len({dict(i.values)[collected.group_column] for i in collected.train})
              if collected.group_column else None)
    summary = AdapterSummary(str(out), collected.adapter, str(collected.source), len(collected.classes),
                             len(collected.train), len(collected.test), groups, collected.group_column, metric,
                             {c: int(counts.get(c, 0)) for c in collected.classes}, collected.notes)
    with staged_build(out) as (built,):
        _write(collected, built, final_photos, metric, name, decode)
        (built / MARKER).write_text(json.dumps({
            "adapter": collected.adapter, "source": str(collected.source.resolve()), "options": collected.options,
            "metric": metric, "name": name, "decoded": decode, "allow_duplicates": allow_duplicates,
            "classes": len(collected.classes), "train_rows": summary.train_rows, "test_rows": summary.test_rows,
            "groups": groups, "photos": "relative symlinks to the source files"}, indent=2) + "\n")
    return summary


def _adapt(scan, src, out, image_dirs: list[str], hint: str, metric: str, name: str | None, force: bool,
           decode: bool, allow_duplicates: bool = False) -> AdapterSummary:
    """`scan()` SRC and write the dataroot OUT; SRC and OUT are checked before the scan: fail fast."""
    _folder(Path(src), "the competition's data", hint)
    check_out(Path(out), Path(src), image_dirs, force)
    return write_layout(scan(), out, metric, name, force, decode, allow_duplicates)


def adapt_imagefolder(src, out, groups=None, metric: str = "accuracy", name: str | None = None, force: bool = False,
                      decode: bool = True, allow_duplicates: bool = False) -> AdapterSummary:
    """ImageFolder SRC -> dataroot OUT (see the module docstring)."""
    return _adapt(lambda: scan_imagefolder(src, groups), src, out, ["train", "test"], IMAGEFOLDER_HINT, metric, name,
                  force, decode, allow_duplicates)


def adapt_csv(src, out, id_column: str = "image_id", label_column: str = "label", group_column: str | None = None,
              metric: str = "accuracy", name: str | None = None, force: bool = False, decode: bool = True,
              allow_duplicates: bool = False, **folders: str) -> AdapterSummary:
    """CSV + image folders SRC -> dataroot OUT (see the module docstring); `folders`: train_csv, train_images,
    test_images names inside SRC."""
    image_dirs = [folders.get("train_images", "train_images"), folders.get("test_images", "test_images")]
    return _adapt(lambda: scan_csv(src, id_column, label_column, group_column, **folders), src, out, image_dirs,
                  CSV_HINT, metric, name, force, decode, allow_duplicates)


# ---------------------------------------------------------------------------------------------------- CLI

@cli_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="adapter", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("src", nargs="?", help="the competition's data folder, as shipped (or --src)")
    common.add_argument("--src", dest="src_option", default=None, help="the same as SRC")
    common.add_argument("--out", required=True, help="the dataroot to write (a new folder)")
    common.add_argument("--metric", default="accuracy", choices=[m for m in METRICS if m != "rmse"],
                        help="the competition metric written to competition.yml (default accuracy)")
    common.add_argument("--name", default=None, help="the competition's name in competition.yml (default: SRC's "
                                                     "folder name)")
    common.add_argument("--force", action="store_true", help="replace --out if it exists")
    common.add_argument("--no-decode", action="store_true",
                        help="only identify each image from its header instead of decoding it (large sets)")
    common.add_argument("--allow-duplicates", action="store_true",
                        help="keep a test image that is a train image (a link to it or the same bytes): refused by "
                             "default, since it leaks the answer into every score")
    folder = sub.add_parser("imagefolder", parents=[common], help="SRC/train/{class}/*, SRC/test/* (ACCV 2022)")
    folder.add_argument("--groups", default=None, help="CSV: image (path relative to SRC or name without "
                                                       "extension), group; the second header names the column")
    csv = sub.add_parser("csv", parents=[common], help="SRC/train.csv + SRC/train_images/ + SRC/test_images/ (paddy)")
    csv.add_argument("--id-column", default="image_id", help="train.csv's image file name column (default image_id)")
    csv.add_argument("--label-column", default="label", help="train.csv's class name column (default label)")
    csv.add_argument("--group-column", default=None, help="train.csv's group column (default: none, plain folds)")
    csv.add_argument("--train-csv", default="train.csv")
    csv.add_argument("--train-images", default="train_images")
    csv.add_argument("--test-images", default="test_images")
    args = parser.parse_args(argv)
    if (args.src is None) == (args.src_option is None):
        parser.error("give the source folder once: SRC or --src SRC")
    args.src = args.src or args.src_option
    if args.adapter == "imagefolder":
        summary = adapt_imagefolder(args.src, args.out, args.groups, args.metric, args.name, args.force,
                                    not args.no_decode, args.allow_duplicates)
    else:
        summary = adapt_csv(args.src, args.out, args.id_column, args.label_column, args.group_column, args.metric,
                            args.name, args.force, not args.no_decode, args.allow_duplicates, train_csv=args.train_csv,
                            train_images=args.train_images, test_images=args.test_images)
    print("\n".join(summary.lines()))


if __name__ == "__main__":
    main()
