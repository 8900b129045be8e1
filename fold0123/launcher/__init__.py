"""Lay the fold0123 rows out (tmux, tmuxinator, Slurm) and watch them: see launcher.fold0123.

`from fold0123.launcher import launch_fold0123, LaunchOptions` works; the attributes load lazily so that the pane
programs (`python -m fold0123.launcher.monitor`, `python -m fold0123.launcher.status`) start without importing the
planner.
"""
from __future__ import annotations

__all__ = ["launch_fold0123", "LaunchOptions", "LaunchResult", "RunOutcome", "LaunchError", "plan_fold0123"]


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module 'launcher' has no attribute {name!r}")
    from fold0123.launcher import fold0123  # which holds layout's LaunchError and plan_fold0123 too
    return getattr(fold0123, name)
