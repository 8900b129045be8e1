"""Scale in data (issue 23): what n images and K classes cost in time, peak memory and disk, on synthetic
16 px photos with random labels (this measures costs, not accuracy), each step a real process of its own:

  cache      build the decoded uint8 image cache (fold0123.data.images) for n photos
  train      train.py, one epoch of a narrow ResNet18 (width 8: the harness, not the net, is measured) on
             3fold0's train rows (K = 1,000)
  eval       evaluate.py on that epoch (oof + test rows, 8 views), as eval.views: mean in float16 (the scalable
             form) and, where it fits, eval.views: all in float32 (today's default)
  ensemble   stack.py ensemble of two runs (synthetic eval files: 3 folds + all), ensemble.probabilities: npy;
             beside it, at K = 100, the same files read whole (today's way: every npz loaded, the views averaged,
             the runs stacked in float64) in a process of its own

Peak memory is the step's own peak resident set (VmHWM, read as it exits); bytes are what it left on disk. The
exponent of each cost in n is the slope of a least-squares line through (log n, log cost).

    .venv/bin/python -m bench.scale [--sizes 10000 50000 200000] [--classes 100 1000 5000] [--work DIR]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TRAIN_K = 1000
SIZE = 16


# Runs a step and writes its own peak resident set (VmHWM of its own address space) at exit: a child's
# ru_maxrss starts at its parent's peak (Linux keeps the pre-exec high-water mark), so it cannot be used here.
PEAK = """
import atexit, runpy, sys
out, target = sys.argv[1], sys.argv[2:]
def report():
    with open('/proc/self/status') as status:
        peak = next(line.split()[1] for line in status if line.startswith('VmHWM'))
    with open(out, 'w') as f:
        f.write(peak)
atexit.register(report)
if target[0] == '-c':
    sys.argv = ['-c', *target[2:]]
    exec(compile(target[1], '<step>', 'exec'), {'__name__': '__main__'})
else:
    sys.argv = target
    runpy.run_path(target[0], run_name='__main__')
"""


def measured(args: list[str], log: Path) -> dict:
    """Run `args` (a script of this repository, or `-c CODE ...`) in a process of its own: wall seconds, its
    peak RSS in MB."""
    peak = log.with_name("peak.txt")
    peak.unlink(missing_ok=True)
    start = time.perf_counter()
    with open(log, "a") as out:
        code = subprocess.call([sys.executable, "-c", PEAK, str(peak), *args], cwd=ROOT, stdout=out,
                               stderr=subprocess.STDOUT)
    if code:
        raise SystemExit(f"bench.scale: {' '.join(args[:3])} ... exited {code}: see {log}")
    return {"seconds": round(time.perf_counter() - start, 2), "peak_mb": round(int(peak.read_text()) / 1024, 1)}


def folder_bytes(path: Path, pattern: str = "**/*") -> int:
    return sum(p.stat().st_size for p in Path(path).glob(pattern) if p.is_file())


def make_photos(folder: Path, n: int, seed: int = 0) -> list[str]:
    """n random 16 px JPEGs (made once per n)."""
    ids = [f"p{i:07d}" for i in range(n)]
    done = folder / ".complete"
    if not done.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        for object_id in ids:
            pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{object_id}.jpg", quality=90)
        done.write_text("")
    return ids


def make_dataroot(work: Path, n: int, k: int, kind: str = "classification") -> Path:
    """A classification competition of n photos (half train, half test) with k classes at random, or (`kind`
    regression, k unused) a regression one with a random target, and folds."""
    from fold0123.data.folds import write_folds

    root = work / (f"n{n}_k{k}" if kind == "classification" else f"n{n}_{kind}")
    if (root / "3fold2_test.csv").is_file():
        return root
    ids = make_photos(work / f"photos_n{n}", n)
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "photos").exists():
        (root / "photos").symlink_to(work / f"photos_n{n}")
    rng = np.random.default_rng(k)
    half = n // 2
    target = rng.integers(0, k, half) if kind == "classification" else rng.normal(size=half).round(4)
    pd.DataFrame({"object_id": ids[:half], "target": target}).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"object_id": ids[half:]}).to_csv(root / "test.csv", index=False)
    if kind == "classification":
        classes = ", ".join(f"c{c}" for c in range(k))
        (root / "competition.yml").write_text(f"name: scale{k}\nkind: classification\nmetric: accuracy\n"
                                              f"classes: [{classes}]\ngroup_column: null\ncolumns: []\n")
    else:
        (root / "competition.yml").write_text("name: scale\nkind: regression\nmetric: rmse\ngroup_column: null\n"
                                              "columns: []\n")
    write_folds(root, k=3, batch_size=None, seed=0)
    return root


def run_sets(dataroot: Path, runs: Path, exp: str) -> list[str]:
    sets = [f"dataroot={dataroot}", f"checkpoints_dir={runs}", f"exp={exp}", "task=classify", "backbone=resnet18",
            f"image_size={SIZE}", "width=8", "epochs=1", "batch_size=512", "effective_batch_size=512",
            "warmup_epochs=0", "transfer_from=null", "num_workers=0", "threads=2", "log_every=50",
            "eval.batch_size=512"]
    return [a for s in sets for a in ("--set", s)]


def cache_step(dataroot: Path, runs: Path, n: int, log: Path) -> dict:
    code = ("import sys; from fold0123.data.images import build_image_cache; from fold0123.data.layout import "
            "read_test, read_train; d = sys.argv[1]; ids = list(read_train(d)['object_id']) + "
            "list(read_test(d)['object_id']); build_image_cache(d, ids, int(sys.argv[2]), sys.argv[3], workers=2)")
    cost = measured(["-c", code, str(dataroot), str(SIZE), str(runs / "cache")], log)
    from fold0123.common.costs import cache_bytes
    built = folder_bytes(runs / "cache", "images_*.npy")
    return {**cost, "bytes": built, "estimate_bytes": cache_bytes(n, SIZE)}


def train_and_eval(dataroot: Path, runs: Path, k: int, log: Path, forms: list[tuple[str, str]]) -> dict:
    exp = f"k{k}"
    out = {"train": measured(["train.py", "--conf", "parameters/base.yml", *run_sets(dataroot, runs, exp),
                              "--split", "3fold0", "--device", "cpu", "--no-progress"], log)}
    run = runs / f"{exp}_3fold0"
    for form, dtype in forms:  # eval keys are volatile: changing them in config.yml leaves the run fresh
        shutil.rmtree(run / "eval", ignore_errors=True)
        config = yaml.safe_load((run / "config.yml").read_text())
        config["eval"] = {**config.get("eval", {}), "views": form, "dtype": dtype}
        (run / "config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        cost = measured(["evaluate.py", "--run", str(run), "--epoch", "1", "--device", "cpu"], log)
        out[f"eval {form} {dtype}"] = {**cost, "bytes": folder_bytes(run / "eval", "*.npz")}
    return out


def fake_runs(dataroot: Path, runs: Path, k: int, form: str, dtype: str, seed: int = 0, task: str = "classify") -> None:
    """Two experiments (a, b) on 3 folds + all whose eval files hold random class probabilities (task classify)
    or k random numbers (task target) in `form`, `dtype`, with the metrics, config and DONE the readers check."""
    from fold0123.common import rundir
    from fold0123.data.layout import read_split, read_test

    rng = np.random.default_rng(seed)
    views = rundir.VIEW_FORMS[form]
    test_ids = read_test(dataroot)["object_id"].to_numpy()
    for exp in ("a", "b"):
        for split in ("3fold0", "3fold1", "3fold2", "all"):
            run = runs / f"{exp}_{split}"
            (run / "eval").mkdir(parents=True, exist_ok=True)
            parts = {"test": test_ids}
            if split != "all":
                parts["oof"] = read_split(dataroot, split)[1]["object_id"].to_numpy()
            for part, ids in parts.items():
                if part == "test" and split != "all" and task == "classify":
                    continue  # the ensemble's test_features: all reads the `all` run's test rows only
                values = rng.random((len(ids), len(views), k), dtype=np.float32) + 1e-3
                if task == "classify":
                    values /= values.sum(axis=2, keepdims=True)
                with open(rundir.eval_npz_path(run, "epoch1", part), "wb") as f:
                    np.savez(f, ids=np.asarray(ids, str), outputs=values.astype(dtype), views=np.asarray(views))
                del values
            primary = "accuracy" if task == "classify" else "rmse"
            score = {primary: float(1 / k + rng.random() * 1e-3)} if split != "all" else {}
            metrics = {"epoch": 1, "task": task, "split": split, "n": len(parts.get("oof", [])),
                       "primary": primary, "lower_is_better": task != "classify",
                       "views": {"mean": score, "identity": score}}
            rundir.metrics_path(run, "epoch1").write_text(json.dumps(metrics))
            (run / "config.yml").write_text(f"exp: {exp}\nsplit: {split}\ntask: {task}\ndataroot: {dataroot}\n")
            (run / "DONE").write_text("")


WHOLE = """
import sys, numpy as np, pandas as pd
import fold0123.ensemble  # the same imports as stack.py's, so the two peaks start from the same base
from fold0123.data.layout import read_split, read_test, read_train
dataroot, runs = sys.argv[1], sys.argv[2]
train_ids = read_train(dataroot)['object_id']
mixed = {}
for part, splits in (('oof', ['3fold0', '3fold1', '3fold2']), ('test', ['all'])):
    means = []
    for exp in ('a', 'b'):
        frames = []
        for split in splits:
            with np.load(f'{runs}/{exp}_{split}/eval/epoch1_{part}.npz') as data:
                ids, outputs = data['ids'], data['outputs']
            frames.append(pd.DataFrame(outputs.astype(np.float32).mean(axis=1), index=ids))
        table = pd.concat(frames)
        means.append(table.loc[train_ids].to_numpy() if part == 'oof' else table.to_numpy())
    mixed[part] = np.tensordot(np.array([0.5, 0.5]), np.stack([m.astype(float) for m in means]), axes=1)
print({part: int(m.argmax(1).sum()) for part, m in mixed.items()})
"""


def ensemble_step(dataroot: Path, runs: Path, out: Path, log: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    sets = [f"dataroot={dataroot}", f"checkpoints_dir={runs}", f"out_dir={out}", "answers=null",
            "ensemble.runs={a: last, b: last}", "ensemble.probabilities=npy", "ensemble.factor=1"]
    cost = measured(["stack.py", "ensemble", "--conf", "parameters/stack.yml",
                     *[a for s in sets for a in ("--set", s)]], log)
    return {**cost, "bytes": folder_bytes(out)}


def stack_step(work: Path, n: int, log: Path, width: int = 1) -> dict:
    """stack.py (LightGBM on the mean, max, min and var of 8 views) over two target runs on a regression
    competition of n photos: the stack's time and peak, which hold its whole feature table."""
    dataroot = make_dataroot(work, n, 0, kind="regression")
    fake = work / f"fake_stack_n{n}"
    fake_runs(dataroot, fake, width, "all", "float32", task="target")
    out = work / "stack_out"
    shutil.rmtree(out, ignore_errors=True)
    sets = [f"dataroot={dataroot}", f"checkpoints_dir={fake}", f"out_dir={out}", "answers=null",
            "runs={a: last, b: last}", "infold=false", "blend_exp=null", "onehot_exp=null",
            "postprocess_keep=never", "lgbm.num_boost_round=200", "lgbm.early_stopping_rounds=20"]
    cost = measured(["stack.py", "--conf", "parameters/stack.yml", *[a for s in sets for a in ("--set", s)]], log)
    shutil.rmtree(fake)
    return {"n": n, "K": width, "stack all float32": cost}


def slope(xs, ys) -> float | None:
    pairs = [(x, y) for x, y in zip(xs, ys) if y]
    if len(pairs) < 2:
        return None
    x, y = np.log([p[0] for p in pairs]), np.log([p[1] for p in pairs])
    return round(float(np.polyfit(x, y, 1)[0]), 2)


def table(rows: list[dict]) -> str:
    """The markdown tables BENCHMARKS.md quotes, from scale.json's rows, with each cost's exponent in n."""
    def cell(step: dict | None, key: str, scale: float = 1.0, fmt: str = "{:.1f}") -> str:
        return fmt.format(step[key] / scale) if step and key in step else "-"

    main = [r for r in rows if r["K"] == TRAIN_K and "cache" in r]
    lines = ["| n | cache s | cache MB (estimate) | train epoch s | eval s | eval / train | eval MB, mean float16 "
             "| eval MB, all float32 | eval peak MB, mean f16 / all f32 |", "|" + "---|" * 9]
    for r in main:
        mean, full = r.get("eval mean float16"), r.get("eval all float32")
        lines.append(f"| {r['n']:,} | {cell(r['cache'], 'seconds')} | {cell(r['cache'], 'bytes', 1e6)} "
                     f"({cell(r['cache'], 'estimate_bytes', 1e6)}) | {cell(r['train'], 'seconds')} | "
                     f"{cell(mean, 'seconds')} | {mean['seconds'] / r['train']['seconds']:.2f} | "
                     f"{cell(mean, 'bytes', 1e6)} | {cell(full, 'bytes', 1e6)} | "
                     f"{cell(mean, 'peak_mb', 1, '{:.0f}')} / {cell(full, 'peak_mb', 1, '{:.0f}')} |")
    ns = [r["n"] for r in main]
    fits = {name: slope(ns, [get(r) for r in main]) for name, get in (
        ("cache s", lambda r: r["cache"]["seconds"]), ("cache bytes", lambda r: r["cache"]["bytes"]),
        ("train s", lambda r: r["train"]["seconds"]), ("eval s", lambda r: r["eval mean float16"]["seconds"]),
        ("eval bytes", lambda r: r["eval mean float16"]["bytes"]),
        ("eval peak", lambda r: r["eval mean float16"]["peak_mb"]))}
    lines += ["", "Exponent in n: " + ", ".join(f"{k} {v}" for k, v in fits.items()), ""]
    sweep = [r for r in rows if "train" in r and r["n"] == min(ns)]
    lines += ["| K (n = {:,}) | eval MB, mean float16 | eval MB, all float32 | ratio |".format(min(ns)),
              "|---|---|---|---|"]
    for r in sorted(sweep, key=lambda r: r["K"]):
        mean, full = r["eval mean float16"], r.get("eval all float32")
        ratio = f"{full['bytes'] / mean['bytes']:.1f}" if full else "-"
        lines.append(f"| {r['K']:,} | {mean['bytes'] / 1e6:.1f} | {cell(full, 'bytes', 1e6)} | {ratio} |")
    readers = ("ensemble", "stack")
    ensembles = [r for r in rows if any(k.startswith(readers) for k in r)]
    modes = sorted({k for r in ensembles for k in r if k.startswith(readers)})
    lines += ["", "| n | K | " + " | ".join(f"{m}: s, peak MB" for m in modes) + " |", "|" + "---|" * (2 + len(modes))]
    for r in ensembles:
        lines.append(f"| {r['n']:,} | {r['K']:,} | " + " | ".join(
            f"{r[m]['seconds']:.1f}, {r[m]['peak_mb']:.0f}" if m in r else "-" for m in modes) + " |")
    lines.append("")
    for k in sorted({r["K"] for r in ensembles}):
        for m in modes:
            pts = [(r["n"], r[m]["peak_mb"]) for r in ensembles if r["K"] == k and m in r]
            if len(pts) > 1:
                lines.append(f"- K {k:,}, {m}: peak {pts[-1][1] / pts[0][1]:.2f}x from n {pts[0][0]:,} to "
                             f"{pts[-1][0]:,} (exponent {slope(*zip(*pts))})")
    return "\n".join(lines)


def encoded_cache(dataroot: Path, sizes=(32, 64), batches: int = 40, batch: int = 256) -> list[dict]:
    """The PNG cache (image_cache: png) against the decoded one on real photos: build seconds, bytes on disk,
    and the rows per second a loader reads in random batches (the decoded memmap vs a PNG decode per row)."""
    from fold0123.data.encoded import build_encoded_cache
    from fold0123.data.images import build_image_cache
    from fold0123.data.layout import read_test, read_train

    ids = list(read_train(dataroot)["object_id"]) + list(read_test(dataroot)["object_id"])
    rows, rng = [], np.random.default_rng(0)
    for size in sizes:
        with tempfile.TemporaryDirectory() as cache_dir:
            entry = {"dataroot": str(dataroot), "photos": len(ids), "size": size}
            for name, build in (("decoded", build_image_cache), ("png", build_encoded_cache)):
                start = time.perf_counter()
                cache = build(dataroot, ids, size, cache_dir, workers=2)
                built = time.perf_counter() - start
                picks = [np.sort(rng.choice(len(ids), batch, replace=False)) for _ in range(batches)]
                start = time.perf_counter()
                for pick in picks:
                    np.asarray(cache.array[pick]).sum()
                entry[name] = {"build_s": round(built, 2), "bytes": cache.path.stat().st_size,
                               "rows_per_s": round(batches * batch / (time.perf_counter() - start))}
            rows.append(entry)
            print(json.dumps(entry), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 200_000])
    parser.add_argument("--classes", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--whole-max-values", type=float, default=3e9,
                        help="today's 8-view float32 files are written only up to this many values per run")
    parser.add_argument("--wide-max-values", type=float, default=2.6e8,
                        help="ensemble files (and training at K != 1,000) only up to n x K of this")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one, removed)")
    parser.add_argument("--out", default="results/scale/scale.json")
    parser.add_argument("--table", action="store_true", help="print the tables of --out's rows, measure nothing")
    parser.add_argument("--stack-only", action="store_true", help="only the stack's rows, added to --out's")
    parser.add_argument("--encoded", default=None, metavar="DATAROOT",
                        help="only measure the PNG cache against the decoded one on DATAROOT's photos")
    args = parser.parse_args()
    if args.stack_only:  # the stack's rows, added to --out's
        work = Path(args.work or tempfile.mkdtemp(prefix="fold0123_scale_"))
        work.mkdir(parents=True, exist_ok=True)
        out = Path(args.out)
        saved = json.loads(out.read_text()) if out.is_file() else {"rows": [], "command": ""}
        for n in args.sizes:
            row = stack_step(work, n, work / "steps.log")
            saved["rows"].append(row)
            print(json.dumps(row), flush=True)
        saved["command"] += " && " + " ".join(sys.argv)
        out.write_text(json.dumps(saved, indent=1))
        return
    if args.encoded:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"encoded": encoded_cache(Path(args.encoded)), "command": " ".join(sys.argv)},
                                  indent=1))
        return
    if args.table:
        print(table(json.loads(Path(args.out).read_text())["rows"]))
        return
    work = Path(args.work or tempfile.mkdtemp(prefix="fold0123_scale_"))
    log = work / "steps.log"
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for n in args.sizes:
            runs = work / f"runs_n{n}"
            dataroot = make_dataroot(work, n, TRAIN_K)
            row = {"n": n, "K": TRAIN_K, "cache": cache_step(dataroot, runs, n, log)}
            forms = [("mean", "float16")] + ([("all", "float32")] if n * 8 * TRAIN_K * 4 * 2 / 3 <= 1.5e9 else [])
            row.update(train_and_eval(dataroot, runs, TRAIN_K, log, forms))
            rows.append(row)
            print(json.dumps(row), flush=True)
            for k in args.classes if n == min(args.sizes) else []:  # eval bytes in K, at the smallest n
                if k != TRAIN_K:
                    entry = {"n": n, "K": k, **train_and_eval(make_dataroot(work, n, k), runs, k, log,
                                                              [("mean", "float16"), ("all", "float32")])}
                    rows.append(entry)
                    print(json.dumps(entry), flush=True)
            for k in args.classes:
                if n * k > args.wide_max_values:
                    continue
                data_k = make_dataroot(work, n, k)
                entry = {"n": n, "K": k}
                for form, dtype in [("mean", "float16")] + ([("all", "float32")] if k == min(args.classes) else []):
                    fake = work / f"fake_n{n}_k{k}_{form}"
                    fake_runs(data_k, fake, k, form, dtype)
                    entry[f"ensemble {form} {dtype}"] = ensemble_step(data_k, fake, work / "ens_out", log)
                    if form == "all":
                        entry["ensemble whole files (today)"] = measured(["-c", WHOLE, str(data_k), str(fake)], log)
                    shutil.rmtree(fake)
                rows.append(entry)
                print(json.dumps(entry), flush=True)
            shutil.rmtree(runs, ignore_errors=True)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "command": " ".join(sys.argv)}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
