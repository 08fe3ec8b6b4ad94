"""A batch longer than the backend takes is refused before any layer works on its keys.

The campaign (tests/torture) found it: a ``get_many`` of 100,000 keys held the event loop
57 ms in the compression layer (30 ms with encryption; 6 ms in the metrics layer) before the
backend refused it; a concurrent call overran its deadline by that much.
"""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from resilient_cache import (
    CompressionLayer,
    EncryptionLayer,
    ErrorCode,
    Failure,
    MemoryCache,
    MetricsLayer,
    Success,
)
from resilient_cache.domain.defaults import BATCH_SLICE, BATCH_SLICE_BYTES
from resilient_cache.domain.validation import Limits
from tests.loop_turns import counting_turns

LIMITS = Limits(max_batch_keys=3)
TOO_MANY: list[Any] = ["a", "b", "c", 42]  # one key of the wrong type, past the limit


def layers() -> list[Any]:
    return [
        CompressionLayer(MemoryCache(limits=LIMITS)),
        MetricsLayer(MemoryCache(limits=LIMITS), cache_name="t", registry=CollectorRegistry()),
    ]


@pytest.mark.parametrize("layer", layers(), ids=lambda layer: type(layer).__name__)
async def test_a_batch_past_the_limit_is_refused_for_its_size_not_for_a_key(layer: Any) -> None:
    """Before: the layer checked every key first and answered about the bad one."""
    result = await layer.get_many(TOO_MANY)
    assert isinstance(result, Failure)
    assert result.error.code is ErrorCode.VALIDATION
    assert "max_batch_keys" in result.error.message, result.error.message
    mapping = dict.fromkeys(("a", "b", "c", "d"), "v")
    written = await layer.set_many(mapping)
    assert isinstance(written, Failure) and "max_batch_keys" in written.error.message
    assert (await layer.get("a")).unwrap() is None  # nothing of it written


async def test_the_metrics_layer_counts_no_lookup_for_a_refused_batch() -> None:
    registry = CollectorRegistry()
    layer = MetricsLayer(MemoryCache(limits=LIMITS), cache_name="t", registry=registry)
    await layer.get_many(["a", "b", "c", "d"])
    for name in ("resilient_cache_hits_total", "resilient_cache_misses_total"):
        assert not registry.get_sample_value(name, {"cache": "t"})


async def test_a_set_many_past_max_batch_bytes_is_encoded_only_until_it_must_be_refused() -> None:
    """Before: every value was compressed (200 values of 100 KB: ~40 ms of the event loop)
    before the backend refused the batch for its size."""
    layer = CompressionLayer(MemoryCache(limits=Limits(max_batch_bytes=2_000)), threshold=10)
    encoded: list[str] = []
    write = layer._write

    def counting(key: str, value: str, raw: bytes) -> str:
        encoded.append(key)
        return write(key, value, raw)

    layer._write = counting  # type: ignore[method-assign]
    noise = "".join(chr(33 + (i * 7919) % 90) for i in range(500))  # barely compressible
    result = await layer.set_many({f"k{i}": noise + str(i) for i in range(100)})
    assert isinstance(result, Failure) and "max_batch_bytes" in result.error.message
    assert len(encoded) < 20, len(encoded)
    assert (await layer.get("k0")).unwrap() is None


class Untouchable(list[str]):
    """A batch whose keys must not be looked at (iterating it fails the test)."""

    def __iter__(self) -> Any:
        raise AssertionError("the keys of a refused batch were iterated")


@pytest.mark.parametrize("layer", layers(), ids=lambda layer: type(layer).__name__)
async def test_no_layer_iterates_the_keys_of_a_batch_the_backend_refuses(layer: Any) -> None:
    """Before: the compression layer encoded every key and the metrics layer counted them (a
    set of 100,000 keys: 6 ms of the event loop) although the backend refused the batch."""
    result = await layer.get_many(Untouchable(["a", "b", "c", "d"]))
    assert isinstance(result, Failure) and "max_batch_keys" in result.error.message


# -- a batch within the limits takes turns with the other tasks ------------------------------


def codec_layers() -> list[Any]:
    return [
        CompressionLayer(MemoryCache(), threshold=10),
        EncryptionLayer(MemoryCache(), keys={"k1": bytes(range(32))}, current="k1"),
    ]


@pytest.mark.parametrize("layer", codec_layers(), ids=lambda layer: type(layer).__name__)
async def test_a_codec_layer_gives_the_event_loop_turns_within_a_big_batch(layer: Any) -> None:
    """Compressing or sealing 10,000 values is ~50 ms of work: done in one go, it held every
    other task back that long (the campaign: a call whose caller cancelled it at 2 ms came
    back after 57 ms). The layer gives the loop a turn every BATCH_SLICE values."""
    count = 2_000
    mapping = {f"k{i}": f"value {i} " * 4 for i in range(count)}
    async with counting_turns() as turns:
        for call in (lambda: layer.set_many(mapping), lambda: layer.get_many(list(mapping))):
            turns.count = 0
            assert isinstance(await call(), Success)
            assert turns.count >= count // BATCH_SLICE - 1, turns
    assert (await layer.get_many(["k7"])).unwrap() == {"k7": mapping["k7"]}


@pytest.mark.parametrize("layer", codec_layers(), ids=lambda layer: type(layer).__name__)
async def test_a_codec_layer_gives_turns_within_a_batch_of_large_values(layer: Any) -> None:
    """Large values take turns sooner: 200 values of 100 KB, compressed in one go, held the
    loop 30-60 ms in the campaign (a call cancelled at 4 ms came back after 62 ms)."""
    count, size = 24, 100_000
    mapping = {f"k{i}": f"{i:06d}" + "x" * (size - 6) for i in range(count)}
    async with counting_turns() as turns:
        for call in (lambda: layer.set_many(mapping), lambda: layer.get_many(list(mapping))):
            turns.count = 0
            assert isinstance(await call(), Success)
            assert turns.count >= count * size // BATCH_SLICE_BYTES - 1, turns
