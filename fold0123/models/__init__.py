"""Backbones (and their stages), heads (linear, sub-center ArcFace, CLIP's towers), the `Task` base (models.task)
and the task table (models.tasks), checkpoints, transfer/freezing and model soups. Imports `data`, never the
scripts."""
