"""What training and evaluation set up the same way: the device, torch's knobs, AMP and channels-last, and the
model wrapper. Kept apart so the evaluator runs models exactly as training did (the images come from the task:
models.task).

AMP and channels-last are the base config's GPU settings (`amp: bf16`, `channels_last: true`), so on the CPU they
apply only as `cpu_extras` says: with the default `false` every CPU run computes in float32 and NCHW as it always
did; `channels_last` lays out the CPU tensors channels-last, still in float32; `true` adds `amp: bf16` under
`torch.autocast("cpu", torch.bfloat16)` (fp16 autocast on the CPU is refused: it needs a gradient scaler and is slow
there). `auto` reads the CPU: `true` where it has AMX tiles, where the demo's ResNet trains 1.6-2x more images per
second in bf16; `channels_last` elsewhere, where float32 channels-last trains 1.2x more than NCHW and bf16 does not
pay (AVX512-BF16 alone 0.95-1.00x, emulated and slower without it; BENCHMARKS.md). A preset that says `auto` runs
as fast as each machine allows.
"""
from __future__ import annotations

import warnings

import torch

from fold0123.common.config import ConfigError
from fold0123.common.schema import RunConfig
from fold0123.common.errors import UsageError
from fold0123.engine.distributed import SINGLE, DistEnv


def resolve_device(name: str | None) -> torch.device:
    """`cuda:N`, `cuda` (the current GPU; several GPUs are several torchrun ranks) or `cpu`; default cuda when
    available."""
    if name is None or name == "":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise UsageError(f"--device {name}: not a device (cuda:N, cuda or cpu)") from None
    if device.type not in ("cuda", "cpu", "mps"):
        raise UsageError(f"--device {name}: not a device this trainer runs on (cuda:N, cuda or cpu)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UsageError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) visible")
    return device


def rank_device(env: DistEnv, name: str | None) -> torch.device:
    """The device this rank trains on: `--device` as engine.setup.resolve_device reads it for one process; under a
    multi-rank launch `cuda` (or nothing, with CUDA available) means cuda:LOCAL_RANK and `cpu` the CPU."""
    device = resolve_device(name)
    if not env.distributed:
        return device
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise UsageError(f"--device {name}: a multi-rank launch trains on CUDA (NCCL) or the CPU (gloo)")
    if device.index is not None and name not in (None, ""):
        raise UsageError(f"--device {name}: under torchrun each rank trains on cuda:LOCAL_RANK; pass --device cuda "
                         f"(or none) and choose the GPUs with CUDA_VISIBLE_DEVICES")
    if env.local_rank >= torch.cuda.device_count():
        raise UsageError(f"LOCAL_RANK {env.local_rank}: only {torch.cuda.device_count()} GPU(s) visible on this "
                         f"node (more ranks per node than GPUs?)")
    return torch.device("cuda", env.local_rank)


def configure_torch(cfg: RunConfig, device: torch.device) -> None:
    threads = cfg.threads
    if threads > 0:
        torch.set_num_threads(threads)
    deterministic = cfg.deterministic
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
        if device.index is not None:
            torch.cuda.set_device(device)


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles, where bf16 pays (torch's own probe; False where this torch has none)."""
    return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def cpu_extras_read(cfg: RunConfig) -> bool | str:
    """`cfg.cpu_extras` with `auto` read on this machine: true (bf16 and channels-last) where the CPU has AMX tiles,
    `channels_last` elsewhere."""
    if cfg.cpu_extras == "auto":
        return True if cpu_has_amx() else "channels_last"
    return cfg.cpu_extras


def amp_dtype(cfg: RunConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of `cfg.amp` on `device` (None: float32): CUDA always, the CPU with `cpu_extras` true."""
    if device.type == "cuda" or (device.type == "cpu" and cpu_extras_read(cfg) is True):
        if device.type == "cpu" and cfg.amp == "fp16":
            raise ConfigError(f"amp: fp16 on the CPU (cpu_extras: {str(cfg.cpu_extras).lower()}) is not supported: "
                              f"use amp: bf16 or none")
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
    return None


def uses_channels_last(cfg: RunConfig, device: torch.device) -> bool:
    """`cfg.channels_last` on `device`: CUDA always, the CPU with `cpu_extras` true or `channels_last`."""
    return cfg.channels_last and (device.type == "cuda" or (device.type == "cpu" and bool(cpu_extras_read(cfg))))


def wrap_model(model: torch.nn.Module, device: torch.device, env: DistEnv = SINGLE,
               compression: str = "none") -> torch.nn.Module:
    """What batches go through: DistributedDataParallel over the ranks of a multi-rank launch (engine.distributed;
    gradients averaged over the ranks in backward), the plain model in one process. DataParallel is gone: several
    GPUs are several ranks (`torchrun --nproc_per_node=N train.py ...`). `compression` (`grad_compression`): the
    gradients all-reduced as fp16 or bf16 (torch's compress hooks), half the bytes where the link is the limit.
    The gradients are views of DDP's buckets (gradient_as_bucket_view): no copy in and out of them each step."""
    if not env.distributed:
        return model
    # a depthwise conv's [C, 1, k, k] gradient can come with other (equivalent) strides than its bucket view: DDP
    # copies it and warns, once per backward, about a cost that is nil for a size-1 dimension
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    device_ids = [device.index] if device.type == "cuda" else None
    wrapped = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids, gradient_as_bucket_view=True)
    if compression != "none":
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

        wrapped.register_comm_hook(None, default_hooks.fp16_compress_hook if compression == "fp16"
                                   else default_hooks.bf16_compress_hook)
    return wrapped


def sync_batchnorm(model: torch.nn.Module, device: torch.device, env: DistEnv = SINGLE) -> torch.nn.Module:
    """BatchNorm layers as SyncBatchNorm (statistics over the whole global batch) for a multi-rank launch; the model
    as it is for one process. The parameters and buffers stay the same objects under the same names, so the
    optimiser, the EMA and the checkpoints are unaffected. torch's DDP runs SyncBatchNorm on CUDA only."""
    if not env.distributed:
        return model
    if device.type != "cuda":
        raise ConfigError("sync_bn: torch runs SyncBatchNorm on CUDA only (DDP refuses it on the CPU): set "
                          "sync_bn=false, or train a GroupNorm/LayerNorm backbone (convnext, vit) on CPU ranks")
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
