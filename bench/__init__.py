"""Benchmarks (results and commands in BENCHMARKS.md); not timed tests."""
