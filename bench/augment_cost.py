"""What each training option of the recipe issue costs: the engine's steady-state training throughput with an
option on, against the bare trainer (the same config with every option off), in the same process, alternating
per round (bench.train_overhead's measurement, on the CPU-time clock, which neighbours sharing the cores barely
move, and on the wall clock). The ratio is option / bare: 1.0 is free, 0.5 halves the images per second.

    .venv/bin/python -m bench.augment_cost [--device cpu|cuda:0] [--rounds 3] [--image-size 32] [--only NAME] ...
"""
from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path

import torch

from bench.train_overhead import bench_config, engine_throughput, make_data, run_arguments
from fold0123.engine.setup import resolve_device

OPTIONS = {
    "crop [0.35, 1]": {"augmentation": {"crop_scale": (0.35, 1.0)}},
    "trivialaugment": {"augmentation": {"policy": "trivialaugment"}},
    "randaugment 9": {"augmentation": {"policy": "randaugment"}},
    "color jitter 0.4": {"augmentation": {"color_jitter": 0.4}},
    "erasing 0.25": {"augmentation": {"erasing": 0.25}},
    "mixup 0.2 + cutmix 1": {"mixup": {"mixup_alpha": 0.2, "cutmix_alpha": 1.0}},
    "ema 0.998": {"ema": {"decay": 0.998}},
    "stem small, width 16": {"stem": "small", "width": 16},
    "cpu_extras (bf16, NHWC)": {"cpu_extras": True},  # the CPU's bf16 autocast and channels-last (CUDA: no-op)
    "cpu_extras: channels_last": {"cpu_extras": "channels_last"},  # the layout alone, float32 (CUDA: no-op)
}


def main() -> None:
    parser = run_arguments(__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", action="append", choices=list(OPTIONS), help="time these options alone")
    args = parser.parse_args()
    options = {name: OPTIONS[name] for name in args.only or OPTIONS}
    device = str(resolve_device(args.device))
    torch.set_num_threads(args.threads)
    clocks = ("steady_cpu", "steady_wall") if device.startswith("cpu") else ("steady_wall",)
    ratios = {name: {clock: [] for clock in clocks} for name in options}
    with tempfile.TemporaryDirectory() as tmp:
        dataroot = make_data(Path(tmp), args.images)
        for r in range(args.rounds):
            bare_cfg = bench_config(args, dataroot, Path(tmp) / f"bare{r}")
            bare = engine_throughput(bare_cfg, device)
            for i, (name, changes) in enumerate(options.items()):
                cfg = bench_config(args, dataroot, Path(tmp) / f"opt{r}_{i}").model_copy(update={
                    key: (getattr(bare_cfg, key).model_copy(update=value) if isinstance(value, dict) else value)
                    for key, value in changes.items()})
                timed = engine_throughput(cfg, device)
                for clock in clocks:
                    ratios[name][clock].append(timed[clock] / bare[clock])
    print(f"device {device}, {args.backbone} ({args.stem} stem, width {args.width}) {args.image_size}px, "
          f"batch {args.batch_size}, {args.images} images x {args.epochs} epochs, {torch.get_num_threads()} "
          f"thread(s), median of {args.rounds} rounds (min-max) of option / bare images/s; "
          f"load average {os.getloadavg()[0]:.1f}")
    for name, by_clock in ratios.items():
        cells = "  ".join(f"{clock.split('_')[1]} {statistics.median(v):.3f} ({min(v):.3f}-{max(v):.3f})"
                          for clock, v in by_clock.items())
        print(f"{name:24s} {cells}")


if __name__ == "__main__":
    main()
