"""Backbones (and their stages), heads (linear, sub-center ArcFace, CLIP's towers), the task table, transfer/freezing and model soups. Imports `data`, never the scripts."""
