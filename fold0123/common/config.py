"""One config mechanism for every script: a YAML file in `parameters/` plus `--set key=value` overrides, checked
against the script's schema (fold0123.common.schema) and handed to the code as a frozen, typed object.

A config may name a `base:` file (relative to itself), or a list of them merged in order (as mmengine's `_base_`),
whose keys it overrides, so the CPU presets in `parameters/demo/` say only how they differ from the GPU ones
(`base: [../target.yml, task.yml]`: the GPU experiment, then the keys the demo's CPU presets share). Overrides
use dotted keys (`--set jigsaw.grid=3`) and YAML-parsed values (`--set lr=3e-4`, `--set transfer_from=null`). A
key the schema does not know or a value of the wrong type is an error naming where it came from (the file that
set it, or the `--set`), because a typo that silently does nothing costs a whole run.
"""
from __future__ import annotations

import argparse
import copy
import re
from pathlib import Path
from typing import Iterable, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from fold0123.common.errors import Fold0123Error
from fold0123.common.io import read_user_text

Config = TypeVar("Config", bound=BaseModel)


class ConfigError(Fold0123Error):
    pass


class DuplicateKeyError(yaml.YAMLError):
    """A mapping that gives one key twice (PyYAML would keep the last value silently)."""


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (`lr:` twice), naming the key and both lines:
    every YAML file a user writes (configs, competition.yml) is read with it or with _Loader."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            lines: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    earlier = lines.get(key)
                except TypeError:  # an unhashable key: the base class says so
                    continue
                if earlier is not None:
                    raise DuplicateKeyError(f"key {key!r} given twice (lines {earlier} and "
                                            f"{key_node.start_mark.line + 1}): remove one")
                lines[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


class _Loader(UniqueKeyLoader):
    """UniqueKeyLoader that reads `1e-3` as a float (YAML 1.2), not the string PyYAML's YAML 1.1 rules give."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?[eE][-+]?[0-9]+$|^[-+]?[0-9][0-9_]*\.[0-9_]*$|"
               r"^[-+]?\.[0-9_]+$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."))


def parse_value(text: str):
    return yaml.load(text, Loader=_Loader)


def _mapping(text: str, source, empty=None) -> dict:
    """The YAML mapping `text` holds (`empty` for an empty text); ConfigError naming `source` otherwise."""
    try:
        raw = parse_value(text)
    except DuplicateKeyError as err:
        raise ConfigError(f"{source}: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML ({str(err).splitlines()[0]})") from None
    raw = empty if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping of keys")
    return raw


DELETE_KEY = "_delete_"


def _replacing(value):
    """`value` without its `_delete_: true` markers (mmengine's convention), at every depth."""
    if not isinstance(value, dict):
        return copy.deepcopy(value)
    return {key: _replacing(item) for key, item in value.items() if key != DELETE_KEY}


def _merge(base: dict, top: dict, origin: dict, source: str, prefix: tuple = ()) -> dict:
    """`top` over `base`, recording in `origin` which file set each leaf key (for error messages). A mapping that
    says `_delete_: true` replaces the base's mapping instead of merging into it (mmengine's convention), so a
    preset can drop a key its base sets, e.g. a stack reading fewer runs than parameters/stack.yml."""
    out = copy.deepcopy(base)
    for key, value in top.items():
        path = prefix + (key,)
        replace = isinstance(value, dict) and value.get(DELETE_KEY, False)
        if replace not in (True, False):
            raise ConfigError(f"{source}: key {'.'.join(map(str, path + (DELETE_KEY,)))}: expected true or false "
                              f"(got {replace!r})")
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not replace:
            out[key] = _merge(out[key], _replacing(value), origin, source, path)  # `_delete_: false` merges
        else:
            out[key] = _replacing(value)
            origin[path] = source
            for leaf in [p for p in origin if p[:len(path)] == path and len(p) > len(path)]:
                origin[leaf] = source
    return out


def _read_yaml(path: Path, origin: dict, seen: tuple[Path, ...] = (), below: dict | None = None) -> dict:
    """The file's keys merged over `below` (what the configs before it in a `base:` list resolved to), after its
    own bases in order."""
    shown = path
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{shown}: circular 'base:' chain")
    raw = _mapping(read_user_text(shown, "config file", ConfigError), shown, empty={})
    given = raw.pop("base", None)
    bases = [given] if isinstance(given, str) else [] if given is None else given
    if not isinstance(bases, list) or not all(isinstance(base, str) for base in bases):
        raise ConfigError(f"{shown}: key 'base': expected the path of another config file or a list of them "
                          f"(got {given!r})")
    below = below or {}
    for base in bases:
        if not (shown.parent / base).is_file():
            raise ConfigError(f"{shown}: key 'base': config file {shown.parent / base} not found")
        below = _read_yaml(shown.parent / base, origin, seen + (path,), below)
    return _merge(below, raw, origin, str(shown))


def apply_override(raw: dict, assignment: str) -> tuple[str, ...]:
    """Apply one `dotted.key=value` assignment to the raw mapping in place; returns the key path. Whether the key
    exists and the value fits is the schema's call."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected key=value")
    key, text = assignment.split("=", 1)
    parts = tuple(part.strip() for part in key.strip().split("."))
    if not all(parts):
        raise ConfigError(f"--set {assignment!r}: empty key")
    try:
        value = parse_value(text) if text != "" else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {assignment!r}: not a YAML value ({str(err).splitlines()[0]})") from None
    node = raw
    for part in parts[:-1]:
        if not isinstance(node.get(part, {}), dict):
            raise ConfigError(f"--set {assignment!r}: {part!r} is not a group of keys")
        node = node.setdefault(part, {})
    node[parts[-1]] = _replacing(value)  # a mapping given here replaces the file's whole: `_delete_` is implied
    return parts


def _key(loc: tuple) -> str:
    """The config's key path of an error location: pydantic appends union members and validator tags to it."""
    return ".".join(str(p) for p in loc if not str(p).startswith(("literal[", "function-", "constrained-"))
                    and str(p) not in ("int", "str", "float", "bool", "list", "dict", "none"))


def _describe(err: ValidationError, where) -> str:
    """The first problem of a ValidationError as `SOURCE: key 'a.b': what was expected (got X)`; a key that
    accepts several types (a union) lists what each would have needed."""
    errors = err.errors()
    first = errors[0]
    key, source = _key(first["loc"]), where(tuple(str(p) for p in first["loc"]))
    if first["type"] == "extra_forbidden":
        return f"{source}: unknown key {key!r}"
    if first["type"] == "missing":
        return f"{source}: key {key!r} is required"
    expected = list(dict.fromkeys(e["msg"] for e in errors if _key(e["loc"]) == key))
    return f"{source}: key {key!r}: {'; or '.join(expected)} (got {first.get('input')!r})"


def validate(schema: type[Config], raw: dict, where=lambda loc: "config") -> Config:
    try:
        return schema.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_describe(err, where)) from None


def _by_prefix(mapping: dict, loc: tuple):
    """The value of the longest prefix of the key path `loc` in `mapping`; None when there is none."""
    return next((mapping[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in mapping), None)


def load_config(path: str | Path, overrides: Iterable[str] = (), *, schema: type[Config]) -> Config:
    """Resolve a config file, its `base:` chain and the overrides into one validated `schema` object.

    `exp` (the experiment name, which names run directories) defaults to the file's stem.
    """
    path = Path(path)
    origin: dict[tuple, str] = {}
    raw = _read_yaml(path, origin)
    raw.setdefault("exp", path.stem)

    def file_of(loc: tuple) -> str:
        return _by_prefix(origin, loc) or str(path)

    cfg = validate(schema, raw, file_of)  # a bad file is reported as the file's fault, before any override
    overrides = list(overrides)
    if not overrides:
        return cfg
    set_by = {apply_override(raw, assignment): assignment for assignment in overrides}

    def override_of(loc: tuple) -> str:
        # the --set of the key or of a group above it; else a group's own check (e.g. arcface's margin_min <=
        # margin_max) failing after a --set of a key in it
        under = [assignment for key, assignment in set_by.items() if key[:len(loc)] == loc]
        found = _by_prefix(set_by, loc) or (under[-1] if under and loc else None)
        return f"--set {found}" if found else file_of(loc)

    return validate(schema, raw, override_of)


def add_config_args(parser: argparse.ArgumentParser, required: bool = True, redo_stale: str | None = None) -> None:
    """--conf and repeatable --set; with `redo_stale` (what is redone, e.g. "runs") also --redo-stale, the flag of
    every command whose outputs carry a fingerprint (common.fingerprint)."""
    parser.add_argument("--conf", required=required, help="YAML config in parameters/")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (dotted for nested keys); repeatable")
    if redo_stale:
        parser.add_argument("--redo-stale", action="store_true", help=f"redo {redo_stale} made by another config or "
                            "from other inputs (default: stop, naming what differs)")


def key_values(mapping: dict) -> list[str]:
    """A mapping of overrides (a preset's `recipe_set`) as the `key=value` strings load_config takes."""
    return [f"{k}={v}" for k, v in mapping.items()]


def set_args(overrides: Iterable[str]) -> list[str]:
    """`key=value` overrides as the --set arguments of another CLI."""
    return [a for o in overrides for a in ("--set", o)]


def config_from_args(args: argparse.Namespace, schema: type[Config]) -> Config:
    return load_config(args.conf, args.overrides, schema=schema)


def dump_config(cfg: BaseModel) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def read_config_text(text: str, schema: type[Config], source: str) -> Config:
    """A resolved config as written by `dump_config` (a run's config.yml), validated."""
    return validate(schema, _mapping(text, source), lambda loc: source)
