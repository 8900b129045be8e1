"""Names that become parts of file names: experiment names, split names and object ids.

`{checkpoints_dir}/{exp}_{split}/`, `{dataroot}/{split}_train.csv` and `{dataroot}/photos/{object_id}.jpg` are
built by joining strings, so a name holding a path separator or `..` would read or write outside its folder
(`--split ../../x`, an object_id of `../../outside`). Such names are refused where they enter: the config
schema, the run and split paths, and the dataroot's CSV readers.
"""
from __future__ import annotations

from fold0123.common.errors import UsageError

FORBIDDEN = ("/", "\\", "\0")


def name_problem(name: str) -> str | None:
    """Why `name` cannot be part of a file name, or None when it can."""
    if not name.strip():
        return "is empty"
    if any(c in name for c in FORBIDDEN):
        return "holds a path separator"
    if name.strip(".") == "":
        return "is a relative folder name"
    return None


def check_name(name: str, what: str) -> str:
    """`name`, or UsageError naming `what` (e.g. "split name") and why it would escape its folder."""
    problem = name_problem(str(name))
    if problem:
        raise UsageError(f"{what} {name!r} {problem}: names become file names and must stay inside their folder")
    return name
