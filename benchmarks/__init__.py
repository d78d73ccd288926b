"""Benchmarks: they measure speed and print tables; tests check behaviour."""
