"""Benchmarks: each prints a table and writes JSON (``python -m bench.<name> --json PATH``)."""
