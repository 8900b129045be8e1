"""One config mechanism for every script: a YAML file in `parameters/` plus `--set key=value` overrides.

A config may name a `base:` file (relative to itself) whose keys it overrides, so the CPU presets in
`parameters/demo/` say only how they differ from the GPU ones. Overrides use dotted keys (`--set jigsaw.grid=3`)
and YAML-parsed values (`--set lr=3e-4`, `--set freeze=null`). Overriding a key that no file defines is an error,
because a typo that silently does nothing costs a whole run.
"""
from __future__ import annotations

import argparse
import copy
import re
from pathlib import Path
from typing import Iterable

import yaml

from fold0123.common.errors import Fold0123Error


class ConfigError(Fold0123Error):
    pass


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads `1e-3` as a float (YAML 1.2), not the string PyYAML's YAML 1.1 rules give."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?[eE][-+]?[0-9]+$|^[-+]?[0-9][0-9_]*\.[0-9_]*$|"
               r"^[-+]?\.[0-9_]+$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."))


def parse_value(text: str):
    return yaml.load(text, Loader=_Loader)


def _merge(base: dict, top: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: circular 'base:' chain")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = parse_value(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys")
    base = raw.pop("base", None)
    if base is None:
        return raw
    return _merge(_read_yaml(path.parent / base, seen + (path,)), raw)


def apply_override(cfg: dict, assignment: str, source: str = "--set") -> None:
    """Apply one `dotted.key=value` assignment in place; the key must already exist."""
    if "=" not in assignment:
        raise ConfigError(f"{source} {assignment!r}: expected key=value")
    key, text = assignment.split("=", 1)
    parts = key.strip().split(".")
    node = cfg
    for i, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"{source} {assignment!r}: unknown key {'.'.join(parts[: i + 1])!r}")
        if i == len(parts) - 1:
            node[part] = parse_value(text) if text != "" else ""
        else:
            node = node[part]


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> dict:
    """Resolve a config file, its `base:` chain and the overrides into one plain dict.

    `exp` (the experiment name, which names run directories) defaults to the file's stem.
    """
    path = Path(path)
    cfg = _read_yaml(path)
    cfg.setdefault("exp", path.stem)
    for assignment in overrides:
        apply_override(cfg, assignment)
    return cfg


def add_config_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--conf", required=required, help="YAML config in parameters/")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (dotted for nested keys); repeatable")


def config_from_args(args: argparse.Namespace) -> dict:
    return load_config(args.conf, args.overrides)


def dump_config(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)
