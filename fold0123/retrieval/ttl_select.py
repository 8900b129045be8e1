"""Choose the test-time-learning settings on the valid split: a grid of TtlConfig values, each scored by the
text->image MR of the valid texts against the valid gallery after learning from the valid split's cache.

    python -m fold0123.retrieval.ttl_select --run runs/demo/retrieval_train --cache datasets/emoji_muge_cache
        [--conf parameters/ttl.yml] --grid adapt=all,heads,text --grid lr=1e-4,1e-3 --steps 30,100,300
        [--split valid] [--out ttl_select.json]

Why a tool of its own: a setting picked by its test score is an optimistic test score. The answers here are the
split's own `{split}_texts.jsonl` in the dataroot (a run on `--split train` never trained on valid), so a split
whose answers are private (test) cannot be scored: its texts carry no image_ids and reading them fails. Each grid
point is one trajectory of `max(--steps)` steps, scored at every listed step count (the lr is constant, so the
first 30 steps of a 300-step trajectory are the 30-step setting). Prints one row per (setting, steps), best
first, and the `--set` arguments of the best; `--out` writes the rows as JSON.
"""
from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fold0123.common.config import add_config_args, apply_override, config_from_args, validate
from fold0123.common.errors import UsageError, cli_main
from fold0123.common.io import write_json
from fold0123.common.schema import TtlConfig
from fold0123.data.recall import first_positive_rank, recall_at
from fold0123.models.clip_task import gallery_positives
from fold0123.retrieval.predict import gallery, load_run_model
from fold0123.retrieval.ttl import DEFAULT_CONF, adapt, backbone_features, cache_pairs, moves_backbone


@torch.no_grad()
def image_embeddings(model, features: torch.Tensor) -> np.ndarray:
    """L2-normalised image embeddings of backbone `features` (the head's image tower)."""
    return F.normalize(model.head(features).float(), dim=-1).cpu().numpy()


class Gallery:
    """A split's answered texts and its gallery images, with the trained backbone's features kept, so a setting
    that leaves the backbone alone is scored with a head pass only."""

    def __init__(self, cfg, task, model, split: str):
        self.cfg, self.task = cfg, task
        texts, image_ids = gallery(cfg, split, answers=True)
        cache = task.image_cache(cfg)
        self.texts = [t.text for t in texts]
        self.positives = gallery_positives(texts, image_ids)
        self.pixels = torch.from_numpy(np.ascontiguousarray(cache.array[cache.rows([str(i) for i in image_ids])]))
        self.pixels = self.pixels.permute(0, 3, 1, 2)
        self.features = backbone_features(model, self.pixels)

    def images(self, model, backbone_moved: bool = False) -> np.ndarray:
        return image_embeddings(model, backbone_features(model, self.pixels) if backbone_moved else self.features)

    def score(self, model, backbone_moved: bool, queries: np.ndarray | None = None) -> dict:
        """Text->image recall of the texts (or of `queries`, one embedding per text) against the gallery."""
        queries = self.task.encode_texts(self.cfg, self.texts) if queries is None else queries
        return recall_at(first_positive_rank(queries @ self.images(model, backbone_moved).T, self.positives))


def grid_points(base: TtlConfig, grid: list[str]) -> list[TtlConfig]:
    """Every combination of `key=v1,v2` values over `base`, each validated as a TtlConfig."""
    axes = []
    for item in grid:
        key, sep, values = item.partition("=")
        if not sep or not values:
            raise UsageError(f"--grid {item!r}: expected key=value1,value2,...")
        axes.append([f"{key}={v}" for v in values.split(",")])
    points = []
    for combo in itertools.product(*axes):
        raw = base.model_dump(mode="json")
        for assignment in combo:
            apply_override(raw, assignment)
        points.append(validate(TtlConfig, raw, lambda loc, c=combo: f"--grid {' '.join(c)}"))
    return points


def select(run: str | Path, cache: str | Path, base: TtlConfig, grid: list[str], steps: list[int],
           split: str = "valid", epoch: str | int = "last", device: str | None = "cpu") -> list[dict]:
    """Rows {setting..., steps, r1, r5, r10, mr, gain} for every grid point and step count, best MR first; the
    first row is the unadapted model (steps 0)."""
    if split == "test":
        raise UsageError("--split test: settings are chosen on a split whose answers are public (valid)")
    cfg, task, model = load_run_model(run, epoch, device)
    gallery = Gallery(cfg, task, model, split)
    plain = gallery.score(model, False)
    images, texts = cache_pairs(cache, split, cfg.image_size)
    row_of: dict[str, int] = {}
    for i, text in enumerate(texts):
        row_of.setdefault(text, i)
    have = [j for j, text in enumerate(gallery.texts) if text in row_of]
    if have:  # for scale: the cached image itself as the query, without its text and without learning
        cached = backbone_features(model, torch.from_numpy(images[[row_of[gallery.texts[j]] for j in have]])
                                   .permute(0, 3, 1, 2))
        queries = image_embeddings(model, cached)
        positives = [gallery.positives[j] for j in have]
        found = recall_at(first_positive_rank(queries @ gallery.images(model).T, positives))
        print(f"  the cached image as the query instead of the text ({len(have)} of {len(gallery.texts)} texts, "
              f"no learning): MR {100 * found['mr']:.2f}", flush=True)
    rows = [{**base.model_dump(mode="json"), "steps": 0, **plain, "gain": 0.0}]
    wanted = set(steps)
    for point in grid_points(base, grid):
        point = point.model_copy(update={"steps": max(steps)})
        moved = moves_backbone(point.adapt)

        def on_step(step, adapted, point=point, moved=moved):
            if step in wanted:
                result = gallery.score(adapted, moved)
                rows.append({**point.model_dump(mode="json"), "steps": step, **result,
                             "gain": result["mr"] / plain["mr"] - 1})

        adapt(model, task, cfg, images, texts, point, seed=cfg.seed, on_step=on_step)
        print(f"  {describe(point)}: " + ", ".join(f"{r['steps']} steps MR {100 * r['mr']:.2f}"
                                                  for r in rows if r["steps"] and _same(r, point)), flush=True)
    task.head = model.head
    return [rows[0]] + sorted(rows[1:], key=lambda r: -r["mr"])


def _same(row: dict, point: TtlConfig) -> bool:
    return all(row[k] == v for k, v in point.model_dump(mode="json").items() if k != "steps")


def describe(point: TtlConfig | dict) -> str:
    data = point.model_dump(mode="json") if isinstance(point, TtlConfig) else point
    return (f"{data['adapt']} lr={data['lr']:g} batch={data['batch_size'] or 'all'}"
            + (f" temperature={data['temperature']:g}" if data["temperature"] is not None else "")
            + (f" weight_decay={data['weight_decay']:g}" if data["weight_decay"] else ""))


@cli_main
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--cache", required=True)
    add_config_args(parser, required=False)
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                        help="a TtlConfig key and the values to try; repeatable (the grid is their product)")
    parser.add_argument("--steps", default="30,100,300", help="step counts scored along each trajectory")
    parser.add_argument("--split", default="valid")
    parser.add_argument("--epoch", default="last")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    args.conf = args.conf or DEFAULT_CONF
    try:
        steps = sorted({int(s) for s in args.steps.split(",")})
    except ValueError:
        steps = []
    if not steps or steps[0] < 1:
        raise UsageError(f"--steps {args.steps}: expected positive step counts, e.g. 30,100,300")
    rows = select(args.run, args.cache, config_from_args(args, TtlConfig), args.grid, steps, args.split, args.epoch,
                  args.device)
    print(f"\n{args.split} text->image after test-time learning on {args.cache} (run {args.run})")
    print(f"{'setting':<44}{'steps':>6}{'R@1':>8}{'R@5':>8}{'R@10':>8}{'MR':>8}{'gain':>8}")
    for row in rows:
        name = describe(row) if row["steps"] else "no test-time learning"
        print(f"{name:<44}{row['steps']:>6}{100 * row['r1']:>8.2f}{100 * row['r5']:>8.2f}"
              f"{100 * row['r10']:>8.2f}{100 * row['mr']:>8.2f}{100 * row['gain']:>7.1f}%")
    if len(rows) > 1:
        best = rows[1]
        print("best: " + " ".join(f"--set {k}={'null' if best[k] is None else best[k]}"
                                  for k in ("steps", "adapt", "lr", "batch_size", "temperature", "weight_decay")))
    if args.out:
        write_json(args.out, rows)


if __name__ == "__main__":
    main()
