"""`make demo-retrieval`: the retrieval job end to end on the bundled emoji set, on the CPU, and its table.

    build (datasets/emoji_muge, its private answers and its cache) -> pack (LMDB) -> the jigsaw pretext of
    `make demo` at the preset's stem and width (reused when its `transfer_from` run is DONE) -> train.py twice
    (image tower transferred from the pretext, and from scratch) -> predict the test split -> ensemble of the two
    saved matrices -> test-time learning on the cache (parameters/ttl.yml: the settings retrieval.ttl_select chose
    on the valid split's cache) -> score every submission against the private answers -> the table.

Every step reuses what an earlier run made (a complete build, a DONE run); the answers are read only to score.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from fold0123.common import muge, rundir
from fold0123.common.config import load_config
from fold0123.common.schema import RunConfig, TtlConfig
from fold0123.retrieval import ensemble, predict, score, ttl

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> None:
    print("$ " + " ".join(args), flush=True)
    subprocess.run([sys.executable, *args], check=True, cwd=ROOT)


def train_once(conf: str, exp: str, *overrides: str) -> Path:
    cfg = load_config(ROOT / conf, [f"exp={exp}", *overrides], schema=RunConfig)
    run = rundir.run_dir(cfg, "train")
    # train.py itself decides: a DONE run of this config is a no-op, an interrupted one resumes, one made by
    # another config or from other inputs (a changed preset) is trained again
    run_cli("train.py", "--conf", conf, "--split", "train", "--device", "cpu", "--no-progress", "--redo-stale",
            "--set", f"exp={exp}", *[a for o in overrides for a in ("--set", o)],
            *(["--resume"] if (ROOT / run).is_dir() else []))
    return ROOT / run


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conf", default="parameters/demo/retrieval.yml")
    parser.add_argument("--ttl-conf", default="parameters/ttl.yml", help="the test-time-learning settings")
    parser.add_argument("--ttl-set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a test-time-learning setting; repeatable")
    args = parser.parse_args(argv)
    cfg = load_config(ROOT / args.conf, schema=RunConfig)
    ttl_opts = load_config(ROOT / args.ttl_conf, args.ttl_set, schema=TtlConfig)
    data = Path(cfg.dataroot)
    private, cache = data.parent / f"{data.name}_private", data.parent / f"{data.name}_cache"
    run_cli("-m", "fold0123.preprocessing.muge_emoji", "--out", str(data))
    run_cli("-m", "fold0123.preprocessing.pack_lmdb", "--data-dir", str(data), "--splits", ",".join(muge.SPLITS))
    # the jigsaw pretext of `make demo` (on the atmaCup-layout emoji set) at the retrieval preset's own stem,
    # width and image size, as the run its `transfer_from` names (`{exp}_all`)
    jigsaw = ROOT / cfg.checkpoints_dir / cfg.transfer_from
    if not rundir.done_path(jigsaw).is_file():
        run_cli("-m", "fold0123.preprocessing.emoji", "--out", "datasets/emoji")
        if not (ROOT / "datasets/emoji/all_train.csv").is_file():
            run_cli("SGKFold.py", "--dataroot", "datasets/emoji", "--k", "3", "--batch-size", "64", "--seed", "0")
        shared = [a for key in ("stem", "width", "image_size")  # as YAML values: a [h, w] size stays a list
                  for a in ("--set", f"{key}={json.dumps(getattr(cfg, key))}")]
        run_cli("train.py", "--conf", "parameters/demo/jigsaw.yml", "--split", "all", "--device", "cpu",
                "--no-progress", "--set", f"exp={cfg.transfer_from.removesuffix('_all')}", *shared,
                *(["--resume"] if jigsaw.is_dir() else []))
    runs = {"transferred": train_once(args.conf, "retrieval"),
            "scratch": train_once(args.conf, "retrieval_scratch", "transfer_from=null")}
    answers = muge.texts_jsonl(private, "test")
    out = ROOT / cfg.checkpoints_dir / "retrieval_submissions"
    rows = {}
    for name, run in runs.items():
        paths = predict.predict(run, "test", out=out / name)
        rows[f"{name} image tower"] = score.score(paths["predictions"], answers)
    both = ensemble.ensemble([out / n / "test_similarity.npy" for n in runs], out / "ensemble")
    rows["ensemble of the two (saved .npy)"] = score.score(both["predictions"], answers)
    adapted = ttl.test_time_learning(runs["transferred"], cache, ttl_opts, out=out / "ttl")
    rows[f"transferred + test-time learning ({ttl_opts.steps} steps, {ttl_opts.adapt})"] = \
        score.score(adapted["predictions"], answers)
    gallery = sum(1 for _ in open(muge.images_tsv(data, "test")))
    chance = (1 + 5 + 10) / 3 / gallery
    print(f"\n=== retrieval, test split: {rows[next(iter(rows))]['n']} texts, gallery of {gallery} images "
          f"(chance MR {100 * chance:.2f}) ===")
    print(f"{'submission':<56}{'R@1':>8}{'R@5':>8}{'R@10':>8}{'MR':>8}{'x chance':>10}")
    for name, r in rows.items():
        print(f"{name:<56}{100 * r['r1']:>8.2f}{100 * r['r5']:>8.2f}{100 * r['r10']:>8.2f}{100 * r['mr']:>8.2f}"
              f"{r['mr'] / chance:>10.1f}")
    print(f"submissions in {out}")


if __name__ == "__main__":
    main()
