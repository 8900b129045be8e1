"""Reading `competition.yml`, the dataroot's competition spec (its schema: common.schema.CompetitionSpec), kept in
common so that the launcher, which may not import data/, can ask a dataroot's kind (which runs its stack reads);
data.competition resolves the spec into classes and metrics.
"""
from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from fold0123.common.config import DuplicateKeyError, UniqueKeyLoader
from fold0123.common.errors import LayoutError
from fold0123.common.io import read_user_text
from fold0123.common.schema import CompetitionSpec

SPEC_FILE = "competition.yml"
CLASS_KINDS = ("ordinal", "classification")


def spec_path(dataroot: str | Path) -> Path:
    return Path(dataroot) / SPEC_FILE


def read_spec(dataroot: str | Path) -> CompetitionSpec:
    """The dataroot's spec; the atmaCup #11 defaults when it has no competition.yml."""
    path = spec_path(dataroot)
    if not path.exists() and not path.is_symlink():
        return CompetitionSpec()
    text = read_user_text(path, "competition spec")
    try:
        raw = yaml.load(text, Loader=UniqueKeyLoader)  # a key given twice is refused, not overwritten
    except DuplicateKeyError as err:
        raise LayoutError(f"{path}: {err}") from None
    except yaml.YAMLError as err:
        raise LayoutError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    if raw is None:
        raise LayoutError(f"{path}: the competition spec is empty (delete it for the atmaCup #11 defaults, or give "
                          f"at least its 'kind')")
    if not isinstance(raw, dict):
        raise LayoutError(f"{path}: top level must be a mapping of keys")
    try:
        spec = CompetitionSpec(**raw)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise LayoutError(f"{path}: key {key!r}: {first['msg']}") from None
    if spec.kind == "regression" and spec.metric != "rmse":
        raise LayoutError(f"{path}: key 'metric': {spec.metric} scores classes; a regression target is scored by rmse")
    if spec.kind == "ordinal" and spec.metric == "top5_accuracy":
        raise LayoutError(f"{path}: key 'metric': top5_accuracy needs kind: classification")
    if spec.classes is not None and len(set(spec.classes)) != len(spec.classes):
        raise LayoutError(f"{path}: key 'classes': duplicate class name")
    if spec.classes is not None and len(spec.classes) < 2 and spec.kind in CLASS_KINDS:
        raise LayoutError(f"{path}: key 'classes': a {spec.kind} target needs at least 2 classes")
    return spec
