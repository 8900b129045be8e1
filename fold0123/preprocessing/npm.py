"""Fetch pinned npm package tarballs into a local cache, verified against their npm integrity hash.

The bundled dataset must be the same bytes on every machine, so each package is pinned by name, version AND the
sha512 the npm registry publishes (`dist.integrity`): a tarball that does not match is deleted, never used. The
cache makes the (large) download happen once per machine; a verified cached file is reused as is.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fold0123.common.errors import Fold0123Error
from fold0123.common.io import file_hash

CACHE_ENV = "FOLD0123_NPM_CACHE"
DEFAULT_CACHE = Path("~/.cache/fold0123/npm")


class PackageError(Fold0123Error):
    """A package that could not be fetched or failed its integrity check; the message is one line."""


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    integrity: str  # npm's "sha512-<base64>" string

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def filename(self) -> str:
        """The name `npm pack` gives the tarball (a scope's '@' dropped and its '/' turned into '-')."""
        return f"{self.name.lstrip('@').replace('/', '-')}-{self.version}.tgz"


EMOJI_DATASOURCE = Package(
    "emoji-datasource-google", "16.0.0",
    "sha512-ZRexfzs7MVoLnmzZmNsO4TKhnAJp5D++Vm6PpUpH/jEQQlemp3l88CjZ+DoZ2faM9R4QxZkOPJCoT8DlPhfQ3A==")
EMOJIBASE = Package(
    "emojibase-data", "17.0.0",
    "sha512-Yvgb5AWoHViHV/gq1qr5ZAarcBip+B27/ZLRsUJkbgAEaLlZ/fof9g882LTpmEpyhBNEC0m2SEmItljHsTygjA==")
# another artist's drawings of the same emoji: the retrieval set's test-time-learning cache (preprocessing.muge_emoji)
EMOJI_DATASOURCE_APPLE = Package(
    "emoji-datasource-apple", "16.0.0",
    "sha512-dVYjsK0FnCry9F+PBtnivhG2K0xdwlmqYaSgiUtztUdAGPYiHYhZcVKvNBqC791g2qyEcFNTBO6utg4eQ3uLTw==")


def cache_dir(cache: str | os.PathLike | None = None) -> Path:
    """The cache folder: the explicit argument, else $FOLD0123_NPM_CACHE, else ~/.cache/fold0123/npm."""
    chosen = cache if cache is not None else os.environ.get(CACHE_ENV) or DEFAULT_CACHE
    return Path(chosen).expanduser()


def builder_parser(doc: str, out: str) -> argparse.ArgumentParser:
    """The command line every builder of a bundled dataset starts from: --out, --cache (of the pinned packages),
    --seed, --force; `doc` is the builder's module docstring."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--out", default=out, help=f"the folder to write (default {out})")
    parser.add_argument("--cache", default=None, help=f"npm tarball cache (default ${CACHE_ENV} or {DEFAULT_CACHE})")
    parser.add_argument("--seed", type=int, default=0, help="the seed of the shuffled order and the split")
    parser.add_argument("--force", action="store_true", help="rebuild whatever is at --out")
    return parser


def integrity_of(path: str | os.PathLike) -> str:
    """npm's integrity string for a file: 'sha512-' + base64 of the SHA-512 digest."""
    return "sha512-" + base64.b64encode(file_hash(path, "sha512").digest()).decode("ascii")


def install_tarball(downloaded: Path, package: Package, cache: Path) -> Path:
    """Move a freshly downloaded tarball into the cache if it matches the pin; otherwise delete it and fail.

    Every download passes through here, so a tampered or truncated file never reaches the cache.
    """
    actual = integrity_of(downloaded)
    if actual != package.integrity:
        downloaded.unlink(missing_ok=True)
        raise PackageError(f"{downloaded}: integrity mismatch for {package.spec}: expected {package.integrity}, "
                           f"got {actual} (file deleted)")
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / package.filename
    os.replace(downloaded, target)
    return target


def npm_pack(package: Package, destination: Path) -> Path:
    """Run `npm pack <name>@<version> --json` in `destination` and return the tarball it wrote."""
    npm = shutil.which("npm")
    if npm is None:
        raise PackageError(f"{package.spec}: npm not found on PATH (install Node.js/npm, or put a verified "
                           f"{package.filename} into the cache folder)")
    try:
        done = subprocess.run([npm, "pack", package.spec, "--json", "--pack-destination", str(destination)],
                              cwd=destination, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        raise PackageError(f"{package.spec}: npm pack timed out") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise PackageError(f"{package.spec}: npm pack failed (exit {done.returncode}): {last}")
    try:
        filename = json.loads(done.stdout)[0]["filename"]
    except (ValueError, LookupError, TypeError):
        filename = package.filename
    path = destination / Path(filename).name
    if not path.is_file():
        raise PackageError(f"{package.spec}: npm pack reported {filename} but {path} does not exist")
    return path


def fetch_package(package: Package, cache: str | os.PathLike | None = None) -> Path:
    """The verified tarball of `package` in the cache, downloading it with npm only when it is not there yet."""
    folder = cache_dir(cache)
    target = folder / package.filename
    if target.is_file():
        if integrity_of(target) == package.integrity:
            return target
        print(f"warning: {target}: cached file fails its integrity check; downloading it again")
        target.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".npm-pack.", dir=folder) as scratch:
        downloaded = npm_pack(package, Path(scratch))
        return install_tarball(downloaded, package, folder)
