"""Benchmarks: programs that drive the real bot and print numbers (never timed assertions)."""
