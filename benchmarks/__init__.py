"""Benchmarks: resilient-cache's RedisAdapter against raw redis-py, in one run (`make bench`)."""
