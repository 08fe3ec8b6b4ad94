"""Long loops over a batch give the event loop a turn now and then.

Compressing, sealing, packing or reading thousands of values is tens of milliseconds of work
that never suspends by itself; done in one go it holds back every other task of the loop,
including a call whose caller has just cancelled it. A loop over a batch asks
:meth:`Turns.due` after each item and yields (``await asyncio.sleep(0)``) when told to:
every :data:`~resilient_cache.domain.defaults.BATCH_SLICE` items, or sooner when the items
are large (:data:`~resilient_cache.domain.defaults.BATCH_SLICE_BYTES`).
"""

from __future__ import annotations

from resilient_cache.domain.defaults import BATCH_SLICE, BATCH_SLICE_BYTES


class Turns:
    """Counts a loop's items and bytes since its last turn given to the event loop."""

    __slots__ = ("_bytes", "_items")

    def __init__(self) -> None:
        self._items = 0
        self._bytes = 0

    def due(self, size: int = 0) -> bool:
        """Count one item of ``size`` bytes; ``True`` when the loop should yield now."""
        self._items += 1
        self._bytes += size
        if self._items < BATCH_SLICE and self._bytes < BATCH_SLICE_BYTES:
            return False
        self._items = self._bytes = 0
        return True
