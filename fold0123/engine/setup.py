"""What training and evaluation set up the same way: the device, torch's knobs and the model wrapper. Kept apart
so the evaluator runs models exactly as training did (the images come from the task: models.task).
"""
from __future__ import annotations

import torch

from fold0123.common.schema import RunConfig
from fold0123.common.errors import UsageError


def resolve_device(name: str | None) -> torch.device:
    """`cuda:N`, `cuda` (every visible GPU, DataParallel when several) or `cpu`; default cuda when available."""
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


def wrap_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DataParallel over every visible GPU for a bare `cuda` device; the plain model otherwise."""
    if device.type == "cuda" and device.index is None and torch.cuda.device_count() > 1:
        return torch.nn.DataParallel(model)
    return model

