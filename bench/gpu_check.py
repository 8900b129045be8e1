"""The GPU check (issue 18; `make gpu-check`, bench/gpu_check.sh): one epoch of the GPU preset (parameters/target.yml:
ResNet34 at 224 px, amp bf16, channels_last, batch 64 per GPU) on 1 GPU, then DDP over every visible GPU with
torchrun (global batch 64 x N, so each GPU keeps its 64), on a synthetic dataroot (bench.train_overhead's
make_data: tests.conftest's drawn photos, cached at 224 px). Prints images/s per GPU (the steady state from
loss.log: the median of its per-step windows after the first fifth), the DDP scaling ratio (per-GPU images/s
under DDP over 1 GPU's) and each rank's peak memory (torch.cuda.max_memory_allocated), beside published anchors.

    .venv/bin/python -m bench.gpu_check [--images 8192] [--workers 8]    (refused in one line without CUDA)
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PER_GPU_BATCH = 64
ANCHORS = ("timm (published): ResNet34, 224 px, AMP + channels-last, RTX 3090: about 2,000 img/s training",
           "NVIDIA (published): ResNet50, AMP, A100: about 2,500 img/s training")


def overrides(args, dataroot: Path, runs: Path, exp: str, gpus: int) -> list[str]:
    batch = PER_GPU_BATCH * gpus
    return [f"exp={exp}", f"dataroot={dataroot}", f"checkpoints_dir={runs}", "transfer_from=null", "epochs=1",
            "log_every=1", f"batch_size={batch}", f"effective_batch_size={batch}", f"num_workers={args.workers}",
            "amp=bf16", "channels_last=true"]


def worker(args) -> None:
    """One trainer process (one rank under torchrun): train.py's train() on the preset, then its peak memory."""
    import torch

    from fold0123.common.config import load_config
    from fold0123.common.schema import RunConfig
    from fold0123.engine.distributed import read_env
    from fold0123.engine.trainer import train

    env = read_env()
    cfg = load_config(ROOT / "parameters" / "target.yml", args.set, schema=RunConfig)
    train(cfg, "all", device="cuda" if env.distributed else "cuda:0", progress=False)
    peak = torch.cuda.max_memory_allocated() / 2**30
    Path(args.out, f"peak{env.rank}.json").write_text(json.dumps({"rank": env.rank, "peak_gib": peak}))


def steady_images_per_s(run: Path) -> float:
    rows = [line.split() for line in (run / "loss.log").read_text().splitlines()[1:]]
    rates = [float(r[4]) for r in rows]
    return statistics.median(rates[max(1, len(rates) // 5):])  # past cudnn's autotuning and the loaders' start


def one_run(args, dataroot: Path, runs: Path, gpus: int, ddp: bool) -> dict:
    exp, out = f"gpus{gpus}", runs / f"peaks{gpus}"
    out.mkdir(parents=True)
    sets = [a for key in overrides(args, dataroot, runs, exp, gpus) for a in ("--set", key)]
    command = [sys.executable, "-m", "bench.gpu_check", "worker", "--out", str(out), *sets]
    if ddp:
        command[1:1] = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}"]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"gpu_check: {'torchrun over ' + str(gpus) + ' GPUs' if ddp else '1 GPU'} failed:\n"
                 f"{done.stderr[-3000:]}")
    peaks = [json.loads(p.read_text())["peak_gib"] for p in sorted(out.glob("peak*.json"))]
    total = steady_images_per_s(runs / f"{exp}_all")
    return {"gpus": gpus, "total": total, "per_gpu": total / gpus, "peak": max(peaks),
            "wall": time.perf_counter() - start}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    inner = sub.add_parser("worker", help="(internal) one trainer process")
    inner.add_argument("--out", required=True)
    inner.add_argument("--set", action="append", default=[])
    parser.add_argument("--images", type=int, default=0, help="training images (default: 48 steps of the DDP run)")
    parser.add_argument("--workers", type=int, default=8, help="DataLoader workers per process")
    args = parser.parse_args(argv)
    if args.command == "worker":
        worker(args)
        return
    import torch

    if not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device here (torch.cuda.is_available() is False): run it on a GPU machine")
    gpus, name = torch.cuda.device_count(), torch.cuda.get_device_name(0)
    images = args.images or 48 * PER_GPU_BATCH * gpus
    from bench.train_overhead import make_data

    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        dataroot = make_data(Path(tmp), images)
        runs = Path(tmp) / "runs"
        print(f"{name} x {gpus}; ResNet34 224 px, bf16 autocast, channels_last, batch {PER_GPU_BATCH} per GPU, "
              f"{images} images, 1 epoch, {args.workers} loader workers per process", flush=True)
        one = one_run(args, dataroot, runs, 1, ddp=False)
        every = one_run(args, dataroot, runs, gpus, ddp=True)
    for r in (one, every):
        how = "1 GPU" if r is one else f"DDP, {r['gpus']} GPU{'s' if r['gpus'] > 1 else ''} (torchrun)"
        print(f"  {how:24s} {r['per_gpu']:8.0f} img/s per GPU  ({r['total']:.0f} in all)  "
              f"peak memory {r['peak']:.2f} GiB  (whole call {r['wall']:.0f} s)")
    print(f"  DDP scaling: {every['per_gpu'] / one['per_gpu']:.2f} of 1 GPU's images/s per GPU")
    for anchor in ANCHORS:
        print(f"  anchor: {anchor}")


if __name__ == "__main__":
    main()
