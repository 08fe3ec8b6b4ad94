"""Counting the turns the event loop gives other tasks while a call works."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass


@dataclass
class Turns:
    """How many times another task ran since :attr:`count` was last set to 0."""

    count: int = 0


@contextlib.asynccontextmanager
async def counting_turns() -> AsyncIterator[Turns]:
    """A task that counts its turns, each a yield of the event loop, until the block ends."""
    turns = Turns()
    working = True

    async def other_task() -> None:
        while working:
            turns.count += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(other_task())
    await asyncio.sleep(0)
    try:
        yield turns
    finally:
        working = False
        await ticker
