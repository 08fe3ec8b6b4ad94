"""Every default of the library, in one place: "a cache must give up fast".

The settings (``CacheSettings`` and its groups), the layers' constructors and the adapter's
options all read their defaults here, so that a default is changed once and documented
once (docs/configuration.md has the table).
"""

from __future__ import annotations

from typing import Final

# -- the whole call --------------------------------------------------------------------
DEADLINE: Final = 0.5
"""Bound on a whole call, retries and backoff included, seconds (Polly's total timeout)."""
BULK_DEADLINE: Final = 10.0
"""Bound on ``delete_pattern``/``flush``, which take one round trip per batch, seconds."""

# -- Limits: checked before anything is sent -----------------------------------------------
MAX_KEY_BYTES: Final = 1024
"""Longest key, in UTF-8 bytes, namespace excluded."""
MAX_VALUE_BYTES: Final = 1024 * 1024
"""Largest value, in UTF-8 bytes (memcached's limit)."""
MAX_BATCH_KEYS: Final = 10_000
"""Keys in one ``get_many``/``set_many``: a call must fit its deadline and never hold the
event loop long (100,000 keys of 1 KiB took 1.1 s and blocked the loop)."""
MAX_BATCH_BYTES: Final = 10 * 1024 * 1024
"""Keys and values of one ``set_many`` together, in UTF-8 bytes (200 values of 1 MiB took
2.2 s to pack and send, the loop blocked throughout)."""
BATCH_SLICE: Final = 256
"""Items of a batch worked through (encoded, compressed, sealed, packed, read) between two
turns given to the event loop: a batch at the limits never holds it more than a millisecond
or two at a time, whatever else runs beside it."""
BATCH_SLICE_BYTES: Final = 256 * 1024
"""Or this many bytes of values, if that comes first: 200 values of 100 KB, compressed in one
go, held the loop 30-60 ms."""

# -- the connection (RedisOptions) ------------------------------------------------------
CONNECT_TIMEOUT: Final = 0.5
"""Seconds to establish a connection, TLS included."""
MAX_CONNECTIONS: Final = 50
"""Connections in the adapter's pool; waiting for a free one is bounded by the deadline."""

# -- RetryLayer ------------------------------------------------------------------------
ATTEMPTS: Final = 2
"""Tries per call, the first included: one retry."""
BACKOFF_BASE: Final = 0.01
"""Full-jitter exponential backoff base, seconds."""
BACKOFF_MAX: Final = 0.1
"""Backoff cap, seconds."""
BUDGET_RATIO: Final = 0.2
"""Retries allowed per call (Finagle's retry budget)."""
BUDGET_MIN_PER_SECOND: Final = 10.0
"""Retries always allowed per second."""
BUDGET_WINDOW: Final = 10
"""The retry budget's window, seconds."""

# -- CircuitBreakerLayer -----------------------------------------------------------------
FAIL_MAX: Final = 5
"""Consecutive tripping failures that open the circuit."""
RESET_TIMEOUT: Final = 5.0
"""First open time, seconds; it doubles while probes fail."""
RESET_TIMEOUT_MAX: Final = 60.0
"""Cap of the doubling open time, seconds."""
SUCCESS_THRESHOLD: Final = 2
"""Successful probes that close the circuit."""
HALF_OPEN_PERMITS: Final = 1
"""Probes allowed at once while half-open."""
