"""Benchmarks: resilient-cache against raw redis-py and its peers, in one interleaved run.

Run them with ``resilient-cache bench`` (or ``python -m resilient_cache.cli.bench``; ``make bench``
in a checkout; ``--quick`` for a smoke run). They need a ``redis-server`` binary; the cashews
and aiocache columns need the ``bench`` extra (``pip install 'resilient-cache[bench]'``). The
method, the targets and the latest figures are in docs/performance.md.

This module imports nothing: the ``resilient-cache`` command imports the package only for
``bench``.
"""
