"""Benchmark harness for Turnout; run on demand (see bench/README.md), never in CI."""
