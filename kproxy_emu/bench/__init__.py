"""Benchmark sweeps and their reports (``kproxy-emu bench``)."""

from .sweep import BenchSpec, run

__all__ = ["BenchSpec", "run"]
