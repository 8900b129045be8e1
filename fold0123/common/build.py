"""The small builder kit of the bundled datasets and the layout adapters (preprocessing/): salted ids, npm pins,
build markers, the reuse check of an earlier build and the staged build with its publish step.

A build writes into temp folders beside its outputs and renames them into place at the end, the dataroot (whose
marker, `dataset.json` or `adapter.json`, says "complete") last, so an error leaves nothing half-written. A
complete earlier build made as asked now is reused; anything else at the output is refused unless --force (or, for
a build made with other options, --redo-stale where the builder offers it).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterator

from fold0123.common.errors import Fold0123Error
from fold0123.common.io import TMP_MARKER, make_dir, raise_if_unwritable

MARKER = "dataset.json"  # written last into a built dataroot: its presence means "complete build"
SUMMARY = "summary.json"  # the build's summary, in its private folder


class BuildError(Fold0123Error):
    """The output folder is in a state the builder will not touch without --force."""


class StaleBuildError(BuildError):
    """A complete earlier build made with other options; the message names what differs."""

    def __init__(self, out: Path, reasons: list[str], hint: str = "pass --force to rebuild it"):
        self.reasons = reasons
        super().__init__(f"{out}: built with other options ({'; '.join(reasons)}); {hint}")


def salted_id(salt: str, kind: str, key: str, digits: int = 20) -> str:
    """The first `digits` hex digits of a salted SHA-1 of `key` (a hexcode): stable across machines, uninformative
    about the key. Each dataset has its salt (shared ids would join two datasets) and each kind of id its `kind`."""
    return hashlib.sha1(f"{salt}/{kind}/{key.upper()}".encode()).hexdigest()[:digits]


def pins(packages) -> list[str]:
    """The npm pins a build records: `name@version sha512-...` per package."""
    return [f"{p.spec} {p.integrity}" for p in packages]


def headline(title: str, summary) -> str:
    """A build summary's first line: what was built where, and whether an earlier build was reused."""
    return f"{title} {summary.out}" + (" (reused; --force rebuilds)" if summary.reused else "")


def write_records(tmp_out: Path, tmp_private: Path, summary, marker: dict) -> None:
    """The summary into the private folder and the marker into the dataroot (both still temp folders)."""
    (tmp_private / SUMMARY).write_text(json.dumps(asdict(summary), indent=2) + "\n")
    (tmp_out / MARKER).write_text(json.dumps(marker, indent=2) + "\n")


def earlier_build(out: str | os.PathLike, private: Path, summary_type, wanted: dict, what: str = "build",
                  hint: str = "pass --force to rebuild it", defaults: dict | None = None,
                  phrases: dict[str, Callable] | None = None, force: bool = False, redo_stale: bool = False):
    """The summary (marked `reused`) of a complete earlier build at `out` whose marker holds `wanted`; None when
    nothing is at `out` or `force` rebuilds whatever is there.

    A folder without the marker (partial, or not a build) or with unreadable records is a BuildError; a build made
    with other options a StaleBuildError naming each difference (`key old -> new`, or `phrases[key](value)` on
    either side; a marker without a key reads as `defaults[key]`), or with `redo_stale` None after saying so (the
    caller rebuilds it). The builder never overwrites what it did not make as asked now without --force."""
    out = Path(out)
    if force or not out.exists():
        return None
    if not (out / MARKER).is_file():
        raise BuildError(f"{out}: exists but holds no {MARKER} (not a complete {what}); pass --force to replace it")
    try:
        made = json.loads((out / MARKER).read_text())
        summary = summary_type(**json.loads((private / SUMMARY).read_text()))
    except (OSError, ValueError, TypeError) as err:
        raise BuildError(f"{out}: earlier build unreadable or its private folder {private} incomplete ({err}); "
                         f"pass --force to rebuild") from None
    reasons = []
    for key, value in wanted.items():
        was = made.get(key, (defaults or {}).get(key))
        if was != value:
            phrase = (phrases or {}).get(key)
            reasons.append(f"{phrase(was)} -> {phrase(value)}" if phrase else f"{key} {was} -> {value}")
    if reasons and redo_stale:
        print(f"{out}: rebuilding, made with other options ({'; '.join(reasons)})", flush=True)
        return None
    if reasons:
        raise StaleBuildError(out, reasons, hint)
    summary.reused, summary.out, summary.private = True, str(out), str(private)
    return summary


def publish(built: Path, final: Path) -> None:
    """Rename a finished temp folder into place, moving what was there aside first and deleting it after."""
    old = None
    if final.exists() or final.is_symlink():
        old = final.with_name(f"{final.name}.old{TMP_MARKER}{os.getpid()}")
        os.replace(final, old)
    os.replace(built, final)
    if old is not None:
        shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()


@contextlib.contextmanager
def staged_build(out: Path, *others: Path) -> Iterator[tuple[Path, ...]]:
    """Fresh empty temp folders beside `out` and `others` to build into. When the block ends without an error
    they replace the originals, `others` first in order, then `out` (whose marker says "complete"); either way no
    temp folder stays, so a failure leaves no half-written dataset behind."""
    finals = [*others, Path(out)]
    staged = [path.with_name(f"{path.name}{TMP_MARKER}{os.getpid()}") for path in finals]
    try:
        for tmp, final in zip(staged, finals):
            if tmp.exists():
                shutil.rmtree(tmp)
            try:
                tmp.mkdir(parents=True)
            except OSError as err:
                raise_if_unwritable(final.parent, err)  # a read-only or unwritable parent: named, not the temp
                make_dir(tmp)  # a file in the way: its one line
                raise
        yield staged[-1], *staged[:-1]
        for tmp, final in zip(staged, finals):
            publish(tmp, final)
    finally:
        for tmp in staged:
            if tmp.exists():
                shutil.rmtree(tmp)
