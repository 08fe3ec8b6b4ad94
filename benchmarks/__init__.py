"""Benchmarks: resilient-cache against raw redis-py and its peers, in one interleaved run.

Run them with ``make bench`` (or ``python -m benchmarks``; ``--quick`` for a smoke run).
The method, the targets and the latest figures are in docs/performance.md.
"""
