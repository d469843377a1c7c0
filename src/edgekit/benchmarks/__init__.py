"""Benchmarks: accuracy, latency, memory and cost of every exported artifact, here or over SSH, and the reports; edge select."""
