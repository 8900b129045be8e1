"""Training step throughput of engine.trainer (the whole train.py pipeline: memory-mapped cache, DataLoader,
dihedral augmentation, normalisation, accumulation, logging) vs a bare PyTorch loop over a batch already on the
device, with the same model, batch size and device, in the same process. The ratio is the pipeline's overhead.

Each round measures the bare loop and then the engine, and their ratio; the medians over rounds are printed with
the spread. Two clocks (CPU device): wall-clock images/s, what a user sees, and CPU-time images/s (seconds the
process spent computing, children included), which another program sharing the cores barely moves: on a busy
machine the wall-clock ratio swings with the neighbours' load between the two halves of a round, the CPU ratio
does not. Steady state on the CPU clock is the training thread's time over the epochs after the first (the
background checkpoint writer runs on another thread and is counted in the whole-call figure).

    .venv/bin/python -m bench.train_overhead [--device cpu|cuda:0] [--images 768] [--rounds 3] ...
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from fold0123.common import rundir
from fold0123.common.config import load_config
from fold0123.common.schema import RunConfig
from fold0123.engine.setup import resolve_device

ROOT = Path(__file__).resolve().parents[1]


def make_data(base: Path, n: int) -> Path:
    from fold0123.data.folds import write_folds
    from tests.conftest import make_dataroot

    dataroot = make_dataroot(base / "data", n_train=n, n_test=16, size=64)
    write_folds(dataroot, k=3, batch_size=None, seed=0)
    return dataroot


def run_arguments(doc: str) -> argparse.ArgumentParser:
    """The arguments of the training run a benchmark times (bench_config reads them)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--device", default=None)
    parser.add_argument("--images", type=int, default=768, help="train images of the synthetic dataroot")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--stem", default="imagenet", help="torchvision ResNets: imagenet | small | strided")
    parser.add_argument("--width", type=int, default=64, help="torchvision ResNets: layer1's channels")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--amp", default="bf16")
    return parser


def bench_config(args, dataroot: Path, runs: Path) -> RunConfig:
    return load_config(ROOT / "parameters" / "base.yml", [
        f"dataroot={dataroot}", f"checkpoints_dir={runs}", "task=target", f"backbone={args.backbone}",
        f"stem={args.stem}", f"width={args.width}",
        f"image_size={args.image_size}", f"batch_size={args.batch_size}", f"effective_batch_size={args.batch_size}",
        f"epochs={args.epochs}", "log_every=1", "transfer_from=null", "augment=dihedral",
        f"num_workers={args.workers}", f"threads={args.threads}", f"amp={args.amp}", "warmup_epochs=0"],
        schema=RunConfig)


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the image cache's decoding pool)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def engine_throughput(cfg: RunConfig, device: str) -> dict:
    """images/s of train(): `steady` (wall: median of the loss.log windows after the first epoch; cpu: the
    training thread's time over those epochs) and `whole` (the whole call), each on both clocks."""
    from fold0123.engine import trainer

    epoch_cpu, train_epoch = {}, trainer.train_epoch

    def timed_epoch(*args, **kwargs):  # the training thread's CPU time per epoch
        start = time.thread_time()
        out = train_epoch(*args, **kwargs)
        epoch_cpu[args[4]] = time.thread_time() - start
        return out

    trainer.train_epoch = timed_epoch
    try:
        wall, cpu = time.perf_counter(), cpu_seconds()
        run = trainer.train(cfg, "all", device=device, progress=False)
        wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    finally:
        trainer.train_epoch = train_epoch
    rows = [line.split() for line in rundir.loss_log_path(run).read_text().splitlines()[1:]]
    steady = [float(r[4]) for r in rows if int(r[0]) > 1][1:]  # skip the window holding the checkpoint save
    n_images = sum(1 for _ in open(Path(cfg.dataroot) / "all_train.csv")) - 1
    later = [seconds for epoch, seconds in epoch_cpu.items() if epoch > 1]
    return {"steady_wall": statistics.median(steady), "whole_wall": n_images * cfg.epochs / wall,
            "steady_cpu": n_images * len(later) / sum(later), "whole_cpu": n_images * cfg.epochs / cpu}


def bare_throughput(cfg: RunConfig, device_name: str, steps: int) -> dict:
    """The same model and optimiser stepping on one fixed batch that already sits on the device: median images/s
    of single steps on the wall clock (the engine's number is the median of its single-step loss.log windows,
    log_every=1), and all steps' images over this thread's CPU time (as the engine's CPU number: whole epochs)."""
    from fold0123.models.network import build_model
    from fold0123.models.tasks import get_task

    device = resolve_device(device_name)
    model = build_model(cfg, get_task("target")).to(device).train()
    channels_last = device.type == "cuda" and cfg.channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp) if device.type == "cuda" else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    size, batch = int(cfg.image_size), int(cfg.batch_size)
    x = torch.randn(batch, 3, size, size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randn(batch, 1, device=device)

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = torch.nn.functional.mse_loss(model(x).float(), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    rates, cpu = [], time.thread_time()
    for _ in range(steps):  # per-step rates, summarised by their median like the engine's loss.log windows
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates.append(batch / (time.perf_counter() - start))
    return {"wall": statistics.median(rates), "cpu": batch * steps / (time.thread_time() - cpu)}


def main() -> None:
    parser = run_arguments(__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="alternating (bare, engine) rounds; medians reported")
    args = parser.parse_args()
    device = str(resolve_device(args.device))
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        dataroot = make_data(base, args.images)
        steps = max(10, args.images // args.batch_size)
        for r in range(args.rounds):  # alternate, so load from other processes hits both sides alike
            cfg = bench_config(args, dataroot, base / f"runs{r}")
            bare = bare_throughput(cfg, device, steps)
            engine = engine_throughput(cfg, device)
            rounds.append({"bare_wall": bare["wall"], "bare_cpu": bare["cpu"], **engine})
    print(f"device {device}, {args.backbone} {args.image_size}px, batch {args.batch_size}, "
          f"{args.images} images x {args.epochs} epochs, {torch.get_num_threads()} thread(s), "
          f"median of {args.rounds} rounds (min-max); load average {os.getloadavg()[0]:.1f}")
    for clock in ("wall", "cpu"):
        if clock == "cpu" and not device.startswith("cpu"):
            break  # on a GPU the CPU clock says nothing about the device's work
        bares = [r[f"bare_{clock}"] for r in rounds]
        print(f"{clock:4s} {'bare PyTorch loop':22s} {statistics.median(bares):8.1f} images/s")
        for name, label in (("steady", "engine, steady state"), ("whole", "engine, whole train()")):
            rates = [r[f"{name}_{clock}"] for r in rounds]
            ratios = [r[f"{name}_{clock}"] / r[f"bare_{clock}"] for r in rounds]
            print(f"{clock:4s} {label:22s} {statistics.median(rates):8.1f} images/s  "
                  f"ratio {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})")
    print("whole train() includes the image cache build, model set-up and the checkpoint writes")


if __name__ == "__main__":
    main()
