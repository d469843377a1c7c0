"""Benchmark harness (accuracy and latency of every artifact): arrives with its own issue."""
