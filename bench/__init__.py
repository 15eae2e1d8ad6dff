"""Benchmark harness: what the gateway and its accounting cost per request (not tests)."""
