"""DDP's overhead where the cores are the limit: the same train.py run as 1 process x T threads and as T gloo ranks
x 1 thread (torchrun, `--device cpu`), on the same machine, images/s side by side and their ratio.

Both runs train the same global batch (`batch_size` is global: each of the T ranks takes batch_size / T images of
every micro-batch), so the work per step is the same; what differs is how it is split (T threads inside each op vs
T processes, each op on one thread, and a gradient all_reduce per optimiser step). The figure is the steady state
from loss.log (its images/s column is the global rate under DDP too): the median over the logging windows after
the first epoch, skipping the window that holds the checkpoint save. Rounds alternate the two runs, so a neighbour's
load moves both; the medians over rounds are printed with the spread, and the whole call's wall time (imports and
start-up included) beside them.

    .venv/bin/python -m bench.ddp_scaling [--threads 2] [--images 384] [--rounds 3] [--backbone resnet18] ...
    .venv/bin/python -m bench.ddp_scaling --variant grad_compression=bf16 --effective-batch-size 128

Each `--variant KEY=VALUE[,KEY=VALUE]` adds a DDP row with those train.py keys (the levers: gradient compression,
...), measured in the same rounds; `--effective-batch-size` above `--batch-size` accumulates micro-batches in both
runs, so DDP all-reduces once per step of several micro-batches.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fold0123.common import rundir

ROOT = Path(__file__).resolve().parents[1]


def make_data(base: Path, n: int, size: int) -> Path:
    from fold0123.data.folds import write_folds
    from tests.conftest import make_dataroot

    dataroot = make_dataroot(base / "data", n_train=n, n_test=16, size=size)
    write_folds(dataroot, k=3, batch_size=None, seed=0)
    return dataroot


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_args(args, dataroot: Path, runs: Path, exp: str, threads: int, extra: tuple[str, ...] = ()) -> list[str]:
    keys = [f"exp={exp}", f"dataroot={dataroot}", f"checkpoints_dir={runs}", "task=target",
            f"backbone={args.backbone}", f"image_size={args.image_size}", f"batch_size={args.batch_size}",
            f"effective_batch_size={args.effective_batch_size or args.batch_size}", f"epochs={args.epochs}",
            "log_every=1", "transfer_from=null", "augment=dihedral", f"num_workers={args.workers}",
            f"threads={threads}", "warmup_epochs=0", *extra]
    return ["train.py", "--conf", "parameters/base.yml", "--split", "all", "--device", "cpu", "--no-progress",
            *[arg for key in keys for arg in ("--set", key)]]


def steady_images_per_s(run: Path) -> float:
    rows = [line.split() for line in rundir.loss_log_path(run).read_text().splitlines()[1:]]
    later = [float(r[4]) for r in rows if int(r[0]) > 1][1:]  # skip the window holding epoch 1's checkpoint save
    return statistics.median(later)


def one_run(args, dataroot: Path, runs: Path, ranks: int, exp: str, extra: tuple[str, ...] = ()) -> dict:
    """train.py as 1 process x `args.threads` threads (ranks 1) or `ranks` gloo ranks x 1 thread each."""
    threads = args.threads if ranks == 1 else 1
    command = [sys.executable, *train_args(args, dataroot, runs, exp, threads, extra)]
    if ranks > 1:
        command[1:1] = ["-m", "torch.distributed.run", f"--nproc_per_node={ranks}", f"--master_port={free_port()}"]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"{' '.join(command[:6])} ... failed:\n{done.stderr[-2000:]}")
    run = runs / f"{exp}_all"
    last_loss = float(rundir.loss_log_path(run).read_text().splitlines()[-1].split()[2])
    return {"steady": steady_images_per_s(run), "wall": wall, "last_loss": last_loss}


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):8.1f}  [{min(values):.1f}, {max(values):.1f}]"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="threads of the 1-process run = ranks of the other")
    parser.add_argument("--images", type=int, default=384, help="train images (split all)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--batch-size", type=int, default=32, help="global micro-batch (a multiple of --threads)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers per process")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--effective-batch-size", type=int, default=None,
                        help="accumulate micro-batches up to this many images per step (default: --batch-size)")
    parser.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                        help="another DDP row with these train.py keys (repeatable)")
    args = parser.parse_args(argv)
    if args.batch_size % args.threads:
        parser.error(f"--batch-size {args.batch_size} does not split over {args.threads} ranks")
    rows = [("1 process", 1, ()), ("DDP", args.threads, ())]
    rows += [(f"DDP {variant}", args.threads, tuple(variant.split(","))) for variant in args.variant]
    results: dict[str, list[dict]] = {name: [] for name, _, _ in rows}
    with tempfile.TemporaryDirectory(prefix="ddp_scaling_") as tmp:
        base = Path(tmp)
        dataroot = make_data(base, args.images, args.image_size)
        for round_ in range(args.rounds):
            for number, (name, ranks, extra) in enumerate(rows):
                results[name].append(one_run(args, dataroot, base / f"runs{round_}", ranks, f"r{number}", extra))
    one = results["1 process"]
    print(f"{args.backbone} {args.image_size} px, {args.images} images, global batch {args.batch_size} "
          f"(step {args.effective_batch_size or args.batch_size}), {args.epochs} epochs, {args.rounds} rounds "
          f"(median [min, max]); DDP: {args.threads} gloo ranks x 1 thread, 1 process: {args.threads} threads")
    print(f"{'':36s} {'images/s (steady)':>28s} {'whole call (s)':>26s} {'ratio to 1 process':>30s} last loss")
    for name, _, _ in rows:
        runs = results[name]
        ratios = [b["steady"] / a["steady"] for a, b in zip(one, runs)]
        print(f"{name:36s} {spread([r['steady'] for r in runs]):>28s} {spread([r['wall'] for r in runs]):>26s} "
              f"{statistics.median(ratios):>10.3f} [{min(ratios):.3f}, {max(ratios):.3f}] {runs[-1]['last_loss']:.4f}")
    print("goal: DDP at least 0.85 of 1 process; BatchNorm statistics are per rank, so the losses are close, not equal")


if __name__ == "__main__":
    main()
