"""The project's one base error, so a command line can tell a user's mistake from a bug.

Every error a user can fix (a config key, a dataroot file, a checkpoint, a launch, a run directory) subclasses
`Fold0123Error` and carries a one-line message naming the file or key. The CLIs catch this base only and print
`error: <message>`; anything else (a KeyError from a typo in our code, a shape mismatch) is a bug and keeps its
traceback. It is a ValueError so that code written against the old ValueError subclasses keeps working.
"""
from __future__ import annotations

import functools
import sys
from typing import Callable


class Fold0123Error(ValueError):
    """A condition the user can fix; the message is one line naming the file, key or argument (whitespace a
    value brought in, such as a newline inside a `--set`, is folded here, so every message stays one line)."""

    def __init__(self, message: object = "") -> None:
        super().__init__(" ".join(str(message).split()))


class LayoutError(Fold0123Error):
    """A dataroot or run-directory file that does not follow its layout; one line naming file and column/row.

    It lives here, not in data.layout (which re-exports it), so common.rundir can raise it without importing
    the data room."""


class UsageError(Fold0123Error):
    """A command-line argument that cannot work here (a device, a part name, a soup size, a vector size)."""


def error_line(err: BaseException) -> str:
    """`error: <message>` on one line, whatever whitespace the message carries (what the CLIs print)."""
    return "error: " + " ".join(str(err).split())


def cli_main(main: Callable) -> Callable:
    """The one error wrapper of every command line's `main`: a Fold0123Error (what a user can fix) ends the
    process with `error: <message>` on one line on stderr and exit status 1; anything else is a bug and keeps its
    traceback."""
    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except Fold0123Error as err:
            sys.exit(error_line(err))
    return wrapped
