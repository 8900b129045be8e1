"""Backbones (and their stages), heads (linear, sub-center ArcFace, CLIP's towers), the `Task` base (models.task)
and the task table (models.tasks), checkpoints, transfer/freezing, model soups and EMA. Imports `data`, never the
scripts."""
