"""Backbones, heads, the task table, transfer/freezing and model soups. Imports `data`, never the scripts."""
