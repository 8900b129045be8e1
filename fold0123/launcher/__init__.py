"""Lay the fold0123 rows out (tmux, tmuxinator, Slurm) and watch them: see launcher.fold0123.

The package itself imports nothing, so that the pane programs (`python -m fold0123.launcher.monitor`,
`python -m fold0123.launcher.status`) start without importing the planner.
"""
