"""What training and evaluation set up the same way: the device, torch's knobs, the image cache, the model
wrapper and the task's saved state. Kept apart so the evaluator reads images and models exactly as training did.
"""
from __future__ import annotations

from pathlib import Path

import torch

from fold0123.common.schema import RunConfig
from fold0123.common.errors import UsageError
from fold0123.data.images import build_image_cache
from fold0123.data.layout import read_test, read_train


def resolve_device(name: str | None) -> torch.device:
    """`cuda:N`, `cuda` (every visible GPU, DataParallel when several) or `cpu`; default cuda when available."""
    if name is None or name == "":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
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


def model_state(model: torch.nn.Module) -> dict:
    model = model.module if isinstance(model, torch.nn.DataParallel) else model
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def task_state(task) -> dict:
    """The task's fitted state (e.g. the year standardisation: floats) as plain data for the checkpoint."""
    return {str(k): float(v) for k, v in (task.state or {}).items()}


def load_task_state(task, state: dict | None) -> None:
    if state:
        task.state = {str(k): float(v) for k, v in state.items()}


def cache_dir(cfg: RunConfig) -> Path:
    """One decoded-image cache per checkpoints_dir, shared by every run and by the evaluator."""
    return Path(cfg.checkpoints_dir) / "cache"


def build_cache(cfg: RunConfig, ids=None):
    """The uint8 cache at the config's size over every train and test photo of the dataroot, so training and
    evaluation of every split read the same memory-mapped file (built once, reused by the other runs)."""
    dataroot = cfg.dataroot
    train = read_train(dataroot)
    every_id = list(train["object_id"]) + list(read_test(dataroot, train)["object_id"])
    if ids is not None:
        known = set(every_id)
        every_id += [i for i in dict.fromkeys(ids) if i not in known]  # pseudo or extra rows, if any
    return build_image_cache(dataroot, every_id, cfg.image_size, cache_dir(cfg), fit=cfg.resize)
