"""Atomic file writes: every output of the pipeline appears whole or not at all.

A reader (the watchdog evaluator, the stacking step, a user's `ls`) must never see a half-written file, and a
crash must never leave one behind. So each writer writes `name.tmp.<pid>` beside the target, fsyncs it and
`os.replace`s it into place, which is atomic on POSIX file systems.

The errors a user fixes by pointing an output elsewhere or freeing space (ENOSPC, EACCES/EPERM, EROFS) are
turned into one-line project errors here and nowhere else (`is_disk_full`, `raise_if_unwritable`), and text a
user gives (a config, a spec, a layout file) is read through `read_user_text` / `user_text_lines`, which name a
file that is not UTF-8 and its first bad byte instead of raising UnicodeDecodeError.
"""
from __future__ import annotations

import codecs
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterator

from fold0123.common.errors import Fold0123Error, LayoutError

TMP_MARKER = ".tmp."


def is_temporary(path: str | os.PathLike) -> bool:
    """True for the in-progress names `atomic_path` hands out (watchers ignore them)."""
    return TMP_MARKER in Path(path).name


class DiskFullError(Fold0123Error):
    """A write that ran out of space; the message names the file and the free space left."""


class OutputPathError(Fold0123Error):
    """A folder an output needs cannot be made: part of its path is a file, or it is not writable."""


def make_dir(folder: str | os.PathLike) -> Path:
    """`mkdir -p` that fails in one line naming the folder (e.g. `checkpoints_dir` given as a file's path)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), folder)
        raise OutputPathError(f"{folder}: cannot create this folder: {blocker} is a file, not a folder") from None
    except OSError as err:
        problem = write_problem(err)
        if problem is None:
            raise
        raise OutputPathError(f"{folder}: cannot create this folder: {problem}") from None
    return folder


# the errors a user fixes by pointing an output elsewhere (or freeing space), by errno: the one place they are named
WRITE_PROBLEMS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
}


def _chain_errnos(err: BaseException | None) -> Iterator[int]:
    """The errno of every OSError in the exception's chain (torch.save and other C++ writers report their file
    object's OSError as a RuntimeError whose context is the OSError)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError) and err.errno is not None:
            yield err.errno
        seen.add(id(err))
        err = err.__cause__ or err.__context__


def write_problem(err: BaseException) -> str | None:
    """'read-only file system' / 'permission denied' when `err` (or an error in its chain) is one a user fixes
    by pointing the output elsewhere; None for anything else."""
    return next((WRITE_PROBLEMS[n] for n in _chain_errnos(err) if n in WRITE_PROBLEMS), None)


def raise_if_unwritable(path: str | os.PathLike, err: BaseException) -> None:
    """Raise the one-line OutputPathError for a write to `path` that failed on permissions or a read-only file
    system, instead of `err`; return for any other error (the caller re-raises it)."""
    problem = write_problem(err)
    if problem is not None:
        raise OutputPathError(f"{path}: cannot write here: {problem}") from None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it to `path`, on error delete it.
    A full disk becomes one DiskFullError line; the previous version of `path`, if any, is left untouched."""
    path = Path(path)
    make_dir(path.parent)
    if path.is_dir():
        raise OutputPathError(f"{path}: is a folder; cannot write a file there")
    tmp = path.with_name(f"{path.name}{TMP_MARKER}{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except Exception as err:
        if not is_disk_full(err):
            raise_if_unwritable(path.parent, err)
            raise
        written = tmp.stat().st_size if tmp.exists() else 0
        tmp.unlink(missing_ok=True)
        free = shutil.disk_usage(path.parent).free
        raise DiskFullError(f"{path}: no space left on the device writing it ({written / 1e6:.1f} MB written "
                            f"before it filled up, {free / 1e6:.1f} MB free now): free some space and run the "
                            f"command again (training: with --resume)") from None
    finally:
        if tmp.exists():
            tmp.unlink()


def is_disk_full(err: BaseException) -> bool:
    """ENOSPC anywhere in the exception's chain: torch.save and other C++ writers report their file object's
    OSError as a RuntimeError ('unexpected pos ...') whose context is the OSError."""
    return errno.ENOSPC in _chain_errnos(err)


def folder_entries(folder: str | os.PathLike) -> list[Path]:
    """What `folder` holds; nothing when it does not exist (yet): a run without eval/, a cache never built."""
    folder = Path(folder)
    return list(folder.iterdir()) if folder.is_dir() else []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def cpu_cores() -> int:
    """The cores this process may run on (its affinity mask, which taskset and Slurm narrow), not the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity masks (macOS)
        return os.cpu_count() or 1


def remove_orphaned_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the `name.tmp.<pid>` files in `folder` whose writer is dead (a SIGKILL mid-write leaves one, up
    to a whole checkpoint's size); a live writer's are left alone. Runs call it when they start or resume."""
    removed = []
    for path in folder_entries(folder):
        head, marker, pid = path.name.rpartition(TMP_MARKER)
        if marker and head and pid.isdigit() and not _alive(int(pid)) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


class LockedError(Fold0123Error):
    """Another live process holds the lock (its PID is in the message)."""


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, wait: bool = False, holder: str = "another process") -> Iterator[None]:
    """An advisory `flock` on `path` for as long as the block runs, with this PID written in the file so a refused
    process can say who holds it. The kernel drops the lock when the holder dies: a killed holder never blocks.
    `wait=False` raises LockedError at once when it is held; `wait=True` blocks until it is free."""
    path = Path(path)
    make_dir(path.parent)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise_if_unwritable(path, err)
        raise
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise LockedError(f"{path}: {holder} (pid {pid}) holds this lock") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


def file_hash(path: str | os.PathLike, algorithm: str = "sha256"):
    """The `hashlib` object of the file's content (read in 1 MiB blocks)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_csv(path: str | os.PathLike, frame) -> None:
    """Write a pandas DataFrame without its index, atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def _not_utf8(path: Path, what: str, offset: int, line: int) -> str:
    return f"{path}: {what} is not UTF-8 text (an undecodable byte at offset {offset}, line {line}): save it as UTF-8"


def _first_bad_byte(path: Path) -> tuple[int, int]:
    """(byte offset, line) of the first byte of `path` that is not UTF-8, read in blocks (the error path only)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, line = 0, 1
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            pending = decoder.getstate()[0]
            try:
                decoder.decode(block)
            except UnicodeDecodeError as err:
                at = offset - len(pending) + err.start
                return at, line + (pending + block)[:err.start].count(b"\n")
            line += block.count(b"\n")
            offset += len(block)
    pending = decoder.getstate()[0]
    return offset - len(pending), line


def _readable(path: Path, what: str, error: type) -> None:
    if path.is_dir():
        raise error(f"{path}: {what} is a folder, not a file")
    if not path.is_file():
        raise error(f"{path}: {what} not found")


def read_user_text(path: str | os.PathLike, what: str = "file", error: type = LayoutError) -> str:
    """The text of a file a user gave (a config, a spec, a layout file), read as UTF-8 with universal newlines as
    `Path.read_text` does; one `error` line naming the file (and the first bad byte's offset and line) when it is
    not UTF-8, is a folder or is missing."""
    path = Path(path)
    _readable(path, what, error)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise error(_not_utf8(path, what, err.start, data.count(b"\n", 0, err.start) + 1)) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def user_text_lines(path: str | os.PathLike, what: str = "file", newline: str | None = None,
                    error: type = LayoutError) -> Iterator[str]:
    """The lines of a (possibly large) UTF-8 file a user gave, streamed; one `error` line naming the file and the
    first undecodable byte instead of a UnicodeDecodeError part way through."""
    path = Path(path)
    _readable(path, what, error)
    try:
        with open(path, encoding="utf-8", newline=newline) as f:
            yield from f
    except UnicodeDecodeError:
        raise error(_not_utf8(path, what, *_first_bad_byte(path))) from None
