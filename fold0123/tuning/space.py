"""A study's search space: the trial's values of run-config keys, as the `--set` overrides its runs take.

A key is checked before anything trains, by resolving the run config with each end of its range and each of its
choices, so an unknown key, a value the run schema refuses, or a space key the recipe would override is one line
naming the key (the study config's own shape, e.g. an empty range, is refused by its schema).
"""
from __future__ import annotations

from typing import Any

import yaml

from fold0123.common.config import ConfigError, load_config
from fold0123.common.errors import Fold0123Error
from fold0123.common.schema import RunConfig, SearchRange


class SpaceError(Fold0123Error):
    """A key of the search space the run config cannot take; one line naming the key."""


def as_set(key: str, value: Any) -> str:
    """`key=value` as `--set` reads it back (YAML flow: null, true, 0.001, head)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return f"{key}={text.removesuffix('...').strip()}"


def trial_sets(params: dict[str, Any]) -> list[str]:
    return [as_set(key, value) for key, value in params.items()]


def probe_values(r: SearchRange) -> list[Any]:
    return list(r.choices) if r.choices is not None else [r.low, r.high]


def check_space(run_conf: str, space: dict[str, SearchRange], before: list[str], after: list[str]) -> None:
    """Each value a key can take resolves the run config (`before` the trial's sets, `after` them: the recipe's);
    a key the recipe's overrides set would be silently ignored, so it is refused too."""
    moved = {item.split("=", 1)[0] for item in after}
    for key, r in space.items():
        if key in moved:
            raise SpaceError(f"space key {key!r}: the recipe sets it for every run ({', '.join(sorted(moved))})")
        for value in probe_values(r):
            try:
                load_config(run_conf, [*before, as_set(key, value), *after], schema=RunConfig)
            except ConfigError as err:
                raise SpaceError(f"space key {key!r} = {value!r}: {err}") from None
