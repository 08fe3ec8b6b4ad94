"""The README's quick start: run it with REDIS_URL pointing at a Redis server."""

import asyncio
import os

from resilient_cache import Failure, RedisAdapter, Success


async def main() -> None:
    async with RedisAdapter.from_url(os.environ["REDIS_URL"], namespace="demo") as cache:
        await cache.set("greeting", "hello", ttl=60)
        match await cache.get("greeting"):
            case Success(None):
                print("miss: compute the value and cache it")
            case Success(value):
                print(f"hit: {value}")
            case Failure(error):
                print(f"cache unavailable ({error.code}): serve from the source of truth")


asyncio.run(main())
