"""The documentation still matches the tree: README.md and docs/*.md.

- every command in a fenced code block (a line starting with `make `, `.venv/bin/python `, `python `,
  `tmuxinator `, `torchrun `, `bash `, after leading `VAR=value`s and `time`; indented lines continue it; a
  comment's `# or: <command>` is a command too), and every inline code span that is such a command or starts with
  a script (`stack.py pseudo --round 1`), names a `make` target of the Makefile, a script or module (`foo.py`,
  `-m fold0123.x.y`) that exists, config files under `parameters/` that exist, and only flags that the script's
  argument parser lists in its `--help` (its sub-command's, when the command names one);
- README.md has at most 200 lines, and its layout table has a row for every package and module under fold0123/;
- every relative link points at a file that exists and, for `file.md#anchor`, at a heading of that file.

The `--help` texts come from one helper process that runs every script in turn (runpy, `--help`), so torch and
the package are imported once: a few seconds in all.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pytest

from tests.conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 200

PREFIXES = ("make ", ".venv/bin/python ", "python ", "tmuxinator ", "torchrun ", "bash ")
ENV_OR_TIME = re.compile(r"^(?:(?:[A-Z_][A-Z0-9_]*=\S*|time)\s+)+")
FLAG = re.compile(r"(?<![\w-])--[A-Za-z][\w-]*")
CONFIG_PATH = re.compile(r"^(?:parameters|tmuxinator|scripts)/[\w./-]+\.(?:ya?ml|sh)$")
FENCE = re.compile(r"^\s*(```|~~~)")
PLACEHOLDER = re.compile(r"[<>{}*]|\.\.\.")


# --------------------------------------------------------------------------- reading the docs


@dataclass(frozen=True)
class Command:
    doc: str      # path relative to the repository
    line: int     # 1-based
    text: str     # the command, continuation lines joined, comment removed

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: {self.text}"


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _split_fenced(text: str) -> tuple[list[tuple[int, str]], str]:
    """(the fenced blocks' lines with their numbers, the text outside them with fenced lines blanked)."""
    fenced, outside, inside = [], [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            inside = not inside
            outside.append("")
            continue
        if inside:
            fenced.append((number, line))
            outside.append("")
        else:
            outside.append(line)
    return fenced, "\n".join(outside)


def _strip_env(text: str) -> str:
    return ENV_OR_TIME.sub("", text.strip())


def _is_command(text: str) -> bool:
    return _strip_env(text).startswith(PREFIXES)


def _split_comment(line: str) -> tuple[str, str]:
    match = re.search(r"(?:^|\s)#(?:\s|$)", line)
    return (line[:match.start()], line[match.end():]) if match else (line, "")


def _fenced_commands(doc: Path) -> list[Command]:
    fenced, _ = _split_fenced(doc.read_text(encoding="utf-8"))
    commands: list[Command] = []
    current: list | None = None  # [line number, text]
    previous = None
    for number, raw in fenced:
        if previous is not None and number != previous + 1:  # a new block
            current = None
        previous = number
        code, comment = _split_comment(raw)
        stripped = code.strip()
        if stripped and _is_command(stripped):
            current = [number, _strip_env(stripped)]
            commands.append(current)
        elif stripped and current is not None and raw[:1].isspace():
            current[1] += " " + stripped  # an indented continuation line
        else:
            current = None
        if current is not None and current[1].endswith("\\"):
            current[1] = current[1][:-1].rstrip()
        alternative = re.search(r"\bor:\s+(.*)$", comment)
        if alternative and _is_command(alternative.group(1)):
            commands.append([number, _strip_env(alternative.group(1))])
    return [Command(_rel(doc), number, text.strip()) for number, text in commands]


def _inline_commands(doc: Path) -> list[Command]:
    _, outside = _split_fenced(doc.read_text(encoding="utf-8"))
    commands = []
    for match in re.finditer(r"(?<!`)`([^`]+)`(?!`)", outside):
        span = " ".join(match.group(1).split())
        span = _strip_env(span)
        if not span.startswith(PREFIXES):
            first = span.split(" ")[0]
            if not (first.endswith(".py") and (ROOT / first).is_file() and "/" not in first):
                continue
            span = "python " + span
        line = outside.count("\n", 0, match.start()) + 1
        commands.append(Command(_rel(doc), line, span))
    return commands


def _commands() -> list[Command]:
    return [command for doc in DOCS for command in (*_fenced_commands(doc), *_inline_commands(doc))]


COMMANDS = _commands()


# --------------------------------------------------------------------------- what a command names


@dataclass(frozen=True)
class Target:
    kind: str                # "script" | "module"
    name: str                # "train.py" | "fold0123.retrieval.ttl"
    args: tuple[str, ...]    # what follows it

    @property
    def local(self) -> bool:
        if self.kind == "script":
            return True
        return self.name.split(".")[0] in {p.name for p in ROOT.iterdir() if p.is_dir()}

    def exists(self) -> bool:
        if self.kind == "script":
            return (ROOT / self.name).is_file()
        if not self.local:
            return importlib.util.find_spec(self.name) is not None
        path = ROOT / Path(*self.name.split("."))
        return path.with_suffix(".py").is_file() or (path / "__main__.py").is_file()


def _tokens(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


def _python_target(tokens: list[str], launcher: bool = False) -> Target | None:
    """The script or module a `python ...` (or `torchrun ...`) command line runs: the first token after the
    interpreter's (or the launcher's) own options."""
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token == "-m" and i + 1 < len(tokens):
            return Target("module", tokens[i + 1], tuple(tokens[i + 2:]))
        if not token.startswith("-"):
            return Target("script", token, tuple(tokens[i + 1:]))
        takes_value = token in {"-X", "-W"} or (launcher and token.startswith("--") and "=" not in token)
        i += 2 if takes_value else 1
    return None


def _target(command: Command) -> Target | None:
    tokens = _tokens(command.text)
    if tokens[0].endswith("python"):
        return _python_target(tokens[1:])
    if tokens[0] == "torchrun":
        return _python_target(tokens[1:], launcher=True)
    return None


def _clean(token: str) -> str:
    return token.strip("[]()|,;")


def _config_paths(command: Command) -> list[str]:
    paths = []
    for token in _tokens(command.text):
        for part in re.split(r"[=\[\]|]", token):
            part = _clean(part)
            if CONFIG_PATH.match(part) and not PLACEHOLDER.search(part):
                paths.append(part)
    return paths


@lru_cache(maxsize=None)
def _make_targets() -> frozenset[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return frozenset(m.group(1) for m in re.finditer(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, re.M))


def _problems(command: Command) -> list[str]:
    """What the command names that is not there (flags apart: test_command_flags_are_accepted)."""
    tokens = _tokens(command.text)
    problems = [f"{p} does not exist" for p in _config_paths(command) if not (ROOT / p).exists()]
    head = tokens[0]
    if head == "make":
        for token in tokens[1:]:
            if "=" in token or token.startswith("-") or PLACEHOLDER.search(token):
                continue
            if token not in _make_targets():
                problems.append(f"no make target {token!r} in the Makefile")
    elif head == "bash":
        script = next((t for t in tokens[1:] if not t.startswith("-")), None)
        if script and not (ROOT / script).is_file():
            problems.append(f"{script} does not exist")
    elif head == "tmuxinator":
        if "-p" in tokens:
            path = tokens[tokens.index("-p") + 1]
            if not (ROOT / path).is_file():
                problems.append(f"{path} does not exist")
        elif len(tokens) > 2 and tokens[1] in {"start", "s", "debug"}:
            if not (ROOT / "tmuxinator" / f"{tokens[2]}.yml").is_file():
                problems.append(f"tmuxinator/{tokens[2]}.yml does not exist")
    else:
        target = _target(command)
        if target is None:
            problems.append("no script or module found in the command")
        elif not PLACEHOLDER.search(target.name) and not target.exists():
            what = "module" if target.kind == "module" else "script"
            problems.append(f"{what} {target.name} does not exist")
    return problems


@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_command_names_what_exists(command: Command):
    assert not _problems(command), f"{command}\n  " + "\n  ".join(_problems(command))


# --------------------------------------------------------------------------- flags against --help

HELPER = r'''
import contextlib, io, json, os, re, runpy, signal, sys
jobs = json.loads(sys.argv[1])
real_out = os.fdopen(os.dup(1), "w")

def timeout(signum, frame):
    raise TimeoutError("--help took over 60 s")

signal.signal(signal.SIGALRM, timeout)

def run(kind, name, argv):
    buf = io.StringIO()
    saved = sys.argv[:]
    sys.argv = [name, *argv]
    code = None
    signal.alarm(60)
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            if kind == "module":
                runpy.run_module(name, run_name="__main__", alter_sys=True)
            else:
                runpy.run_path(name, run_name="__main__")
    except SystemExit as exc:
        code = exc.code
    except BaseException as exc:
        code = f"{type(exc).__name__}: {exc}"
    finally:
        signal.alarm(0)
        sys.argv = saved
    return code, buf.getvalue()

def subcommands(text):
    section = re.search(r"^positional arguments:\n((?:[ \t].*\n?)*)", text, re.M)
    if not section:
        return []
    found = re.search(r"^\s+\{([\w,-]+)\}", section.group(1), re.M)
    return found.group(1).split(",") if found else []

for kind, name in jobs:
    code, top = run(kind, name, ["--help"])
    result = {"kind": kind, "name": name, "code": code, "top": top, "subs": {}}
    if code in (0, None):
        for sub in subcommands(top):
            result["subs"][sub] = run(kind, name, [sub, "--help"])
    real_out.write(json.dumps(result) + "\n")
    real_out.flush()
'''


def _flag_targets() -> list[Target]:
    targets = {}
    for command in COMMANDS:
        target = _target(command)
        if target is not None and target.local and FLAG.search(" ".join(target.args)):
            targets.setdefault((target.kind, target.name), target)
    return list(targets.values())


@pytest.fixture(scope="module")
def helps() -> dict[tuple[str, str], dict]:
    """(kind, name) -> {"code", "top": the --help text, "subs": {sub-command: [code, text]}}, for each script or
    module the docs pass flags to. One helper process runs them all; if it dies, the rest go to a new one."""
    jobs = sorted({(t.kind, t.name) for t in _flag_targets() if t.exists()})
    results: dict[tuple[str, str], dict] = {}
    while jobs:
        done = subprocess.run([sys.executable, "-c", HELPER, json.dumps(jobs)], cwd=ROOT, capture_output=True,
                              text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
        for line in done.stdout.splitlines():
            if line.startswith("{"):
                result = json.loads(line)
                results[(result["kind"], result["name"])] = result
        remaining = [job for job in jobs if tuple(job) not in results]
        if remaining and len(remaining) == len(jobs):  # the first job killed the helper: record it, go on
            kind, name = remaining[0]
            results[(kind, name)] = {"kind": kind, "name": name, "code": f"helper died: {done.stderr[-500:]}",
                                     "top": "", "subs": {}}
            remaining = remaining[1:]
        jobs = remaining
    return results


def _accepted(help_: dict, args: tuple[str, ...]) -> tuple[set[str], str]:
    """The flags the parser lists for this command line, and which help that was (for the message)."""
    flags = set(FLAG.findall(help_["top"])) | {"-h", "--help"}
    subs = help_["subs"]
    first = args[0] if args and not args[0].startswith("-") else None
    if first in subs:
        return flags | set(FLAG.findall(subs[first][1])), f"{first} --help"
    for _code, text in subs.values():  # no sub-command named (a default one, as stack.py's): any of theirs
        flags |= set(FLAG.findall(text))
    return flags, "--help" + (" and its sub-commands'" if subs else "")


FLAG_COMMANDS = [c for c in COMMANDS if (t := _target(c)) is not None and t.local and FLAG.search(" ".join(t.args))]


@pytest.mark.parametrize("command", FLAG_COMMANDS, ids=str)
def test_command_flags_are_accepted(command: Command, helps):
    target = _target(command)
    if not target.exists():
        pytest.skip(f"{target.name} does not exist (test_command_names_what_exists reports it)")
    help_ = helps[(target.kind, target.name)]
    assert help_["code"] in (0, None) and help_["top"].strip(), (
        f"{command}\n  `{target.name} --help` failed ({help_['code']}): {help_['top'][-800:]}")
    accepted, which = _accepted(help_, target.args)
    passed = {_clean(f) for f in FLAG.findall(" ".join(target.args))}
    missing = sorted(passed - accepted)
    assert not missing, f"{command}\n  not in `{target.name} {which}`: {', '.join(missing)}"


# --------------------------------------------------------------------------- the README's length, the links


def test_readme_is_at_most_200_lines():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"


def test_the_layout_table_names_every_room():
    """Each package and top-level module under fold0123/ has a row in the README's layout table (the one under the
    HTML comment)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    marker = "<!-- layout table: keep in sync with pyproject's importlinter contracts -->"
    assert marker in text, "README.md lost the layout table's comment"
    table = []
    for line in text.split(marker, 1)[1].lstrip("\n").splitlines():
        if not line.startswith("|"):
            break
        table.append(line)
    first_column = " ".join(row.split("|")[1] for row in table[2:])
    package = ROOT / "fold0123"
    rooms = sorted([f"{p.name}/" for p in package.iterdir() if (p / "__init__.py").is_file()]
                   + [p.name for p in package.glob("*.py") if p.name != "__init__.py"])
    missing = [room for room in rooms if f"fold0123/{room}`" not in first_column and f"`{room}`" not in first_column]
    assert not missing, f"README.md's layout table has no row for: {', '.join(missing)}"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: links to their text, lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@lru_cache(maxsize=None)
def _anchors(path: Path) -> frozenset[str]:
    _, outside = _split_fenced(path.read_text(encoding="utf-8"))
    anchors, seen = set(), {}
    for match in re.finditer(r"^#{1,6}\s+(.*?)\s*#*\s*$", outside, re.M):
        slug = _slug(match.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    anchors |= set(re.findall(r"<a\s+(?:name|id)=\"([^\"]+)\"", outside))
    return frozenset(anchors)


def _links(doc: Path) -> list[tuple[int, str]]:
    _, outside = _split_fenced(doc.read_text(encoding="utf-8"))
    outside = re.sub(r"`[^`\n]*`", lambda m: " " * len(m.group(0)), outside)  # no links inside code spans
    links = []
    for match in re.finditer(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", outside):
        link = match.group(1)
        if re.match(r"^[a-z][a-z0-9+.-]*:", link, re.I):  # http:, https:, mailto:
            continue
        links.append((outside.count("\n", 0, match.start()) + 1, link))
    return links


LINKS = [(doc, line, link) for doc in DOCS for line, link in _links(doc)]


@pytest.mark.parametrize("doc,line,link", LINKS, ids=[f"{_rel(d)}:{n}:{k}" for d, n, k in LINKS])
def test_relative_link_points_at_what_exists(doc: Path, line: int, link: str):
    path, _, anchor = link.partition("#")
    target = (doc.parent / path).resolve() if path else doc
    assert target.exists(), f"{_rel(doc)}:{line}: {link}: {path} does not exist"
    assert ROOT in target.parents or target == ROOT, f"{_rel(doc)}:{line}: {link} points outside the repository"
    if anchor and target.suffix == ".md":
        assert anchor in _anchors(target), (
            f"{_rel(doc)}:{line}: {link}: no heading #{anchor} in {_rel(target)} "
            f"(headings: {', '.join(sorted(_anchors(target)))})")


def test_the_docs_have_commands_and_links():
    """The extraction itself works: a README without commands or links would pass the tests above vacuously."""
    readme = [c for c in COMMANDS if c.doc == "README.md"]
    assert any(c.text.startswith("make demo") for c in readme)
    assert any(c.text.startswith(".venv/bin/python recipe.py") for c in readme)
    assert len(FLAG_COMMANDS) >= 10 and len(LINKS) >= 10


def test_the_conda_environment_pins_what_requirements_txt_pins():
    """environment.yml (docs/setup.md) builds what `make env` builds: the same pins, then the project, editable."""
    import yaml

    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in environment["dependencies"] if isinstance(d, dict))
    pins = [line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert [p for p in pip if p != "-e ."] == pins and pip[-1] == "-e ."
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9A-Za-z.+]*", p) for p in pins)  # every pin exact
