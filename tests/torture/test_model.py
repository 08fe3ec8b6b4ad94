"""The campaign's model judges histories as it says: each rule, shown to catch what it must
and to let pass what it must (synthetic histories, no server)."""

from __future__ import annotations

from typing import Any

from tests.torture.model import Event, Model, Op

KEYS = ("s:0", "s:1", "c:0")


def model(near_cache: bool = False) -> Model:
    m = Model(KEYS, near_cache=near_cache)
    m.rebase(dict.fromkeys(KEYS, (None, None)), 0.0)
    return m


def op(m: Model, method: str, start: float, end: float, outcome: str = "ok", **kw: Any) -> Op:
    o = Op(len(m.ops) + 1, kw.pop("instance", 0), method, start, end, outcome)  # type: ignore[arg-type]
    for name, value in kw.items():
        setattr(o, name, value)
    m.record(o)
    return o


def invariants(m: Model) -> list[str]:
    return [v.invariant for v in m.check_cycle()]


def test_a_value_overwritten_by_an_acknowledged_write_is_stale() -> None:
    m = model()
    op(m, "set", 1, 2, writes={"s:0": "s:0|1|"})
    op(m, "set", 3, 4, writes={"s:0": "s:0|2|"})
    op(m, "get", 5, 6, reads={"s:0": "s:0|1|"})
    assert invariants(m) == ["stale"]


def test_a_concurrent_overwrite_does_not_make_a_value_stale() -> None:
    m = model()
    op(m, "set", 1, 2, writes={"s:0": "s:0|1|"})
    op(m, "set", 3, 6, writes={"s:0": "s:0|2|"})  # still under way when the read starts
    op(m, "get", 5, 7, reads={"s:0": "s:0|1|"})
    assert invariants(m) == []


def test_another_keys_value_and_an_unwritten_value_are_caught() -> None:
    m = model()
    op(m, "set", 1, 2, writes={"s:1": "s:1|1|"})
    op(m, "get", 3, 4, reads={"s:0": "s:1|1|"})
    op(m, "get", 3, 4, reads={"s:1": "s:1|9|"})
    assert invariants(m) == ["value", "value"]


def test_a_refused_write_must_never_be_read() -> None:
    m = model()
    op(m, "set", 1, 2, "refused", writes={"s:0": "s:0|1|"})
    op(m, "get", 3, 4, reads={"s:0": "s:0|1|"})
    assert invariants(m) == ["refused_write_applied"]
    m2 = model()
    op(m2, "set", 1, 2, "maybe", writes={"s:0": "s:0|1|"})
    op(m2, "get", 3, 4, reads={"s:0": "s:0|1|"})
    assert invariants(m2) == []


def test_an_acknowledged_value_cannot_vanish_but_a_ttl_or_a_delete_may_remove_it() -> None:
    m = model()
    op(m, "set", 1, 2, writes={"s:0": "s:0|1|"})
    op(m, "get", 3, 4, reads={"s:0": None})
    assert invariants(m) == ["lost"]
    m2 = model()
    op(m2, "set", 1, 2, writes={"s:0": "s:0|1|"}, ttl=1)
    op(m2, "get", 3, 4, reads={"s:0": None})
    op(m2, "delete", 5, 6, "maybe", writes={"s:1": None})
    op(m2, "get", 7, 8, reads={"s:1": None})
    assert invariants(m2) == []


def test_a_value_read_after_its_ttl_is_caught() -> None:
    m = model()
    op(m, "set", 1, 2, writes={"s:0": "s:0|1|"}, ttl=1)
    op(m, "get", 3.5, 4, reads={"s:0": "s:0|1|"})
    assert invariants(m) == ["stale"]


def test_a_failover_lets_recent_writes_be_lost_and_says_so() -> None:
    m = model()
    op(m, "set", 1, 2, writes={"s:0": "s:0|1|"})
    op(m, "set", 9.5, 9.6, writes={"s:0": "s:0|2|"})
    m.event(Event("lossy", 10, 12, "failover"))
    op(m, "get", 13, 14, reads={"s:0": "s:0|1|"})  # the new primary never had |2|
    assert invariants(m) == []
    m2 = model()
    op(m2, "set", 1, 2, writes={"s:0": "s:0|1|"})
    op(m2, "set", 3, 4, writes={"s:0": "s:0|2|"})  # long before the failover: replicated
    m2.event(Event("lossy", 10, 12, "failover"))
    op(m2, "get", 13, 14, reads={"s:0": "s:0|1|"})
    assert invariants(m2) == ["stale"]


def test_a_near_cache_may_lag_another_instance_until_it_processed_an_invalidation() -> None:
    m = model(near_cache=True)
    op(m, "set", 1, 2, writes={"s:0": "s:0|1|"}, instance=0)
    op(m, "set", 3, 4, writes={"s:0": "s:0|2|"}, instance=1)
    op(m, "get", 5, 6, reads={"s:0": "s:0|1|"}, instance=0)  # not told yet: allowed
    assert invariants(m) == []
    m.invalidated(0, ["s:0"], 4.5)
    assert invariants(m) == ["stale"]  # told at 4.5, served the old value at 5


def test_counter_ranges_catch_a_refused_increment_that_was_applied() -> None:
    m = model()
    op(m, "increment", 1, 2, deltas={"c:0": 5}, counter_reply=5)
    op(m, "increment", 3, 4, "refused", deltas={"c:0": 7})
    op(m, "get", 5, 6, reads={"c:0": "12"})
    assert invariants(m) == ["counter"]
    m2 = model()
    op(m2, "increment", 1, 2, deltas={"c:0": 5}, counter_reply=5)
    op(m2, "increment", 3, 4, "maybe", deltas={"c:0": 7})
    op(m2, "get", 5, 6, reads={"c:0": "12"})
    op(m2, "get", 7, 8, reads={"c:0": "5"})
    assert invariants(m2) == []


def test_an_increment_counted_twice_is_caught() -> None:
    m = model()
    op(m, "increment", 1, 2, deltas={"c:0": 5}, counter_reply=10)
    assert invariants(m) == ["counter"]


def test_an_expire_applied_after_a_ttl_write_extends_it() -> None:
    """expire(3) under way while set(ttl=1) runs: Redis may apply the expire last."""
    m = model()
    op(m, "expire", 0.9, 1.3, expire_key="s:0", expire_seconds=3)
    op(m, "set", 1.0, 1.2, writes={"s:0": "s:0|1|"}, ttl=1)
    op(m, "get", 2.5, 2.6, reads={"s:0": "s:0|1|"})
    assert invariants(m) == []


def test_a_failover_may_lose_an_acknowledged_delta() -> None:
    m = Model(KEYS)
    m.rebase({"s:0": (None, None), "s:1": (None, None), "c:0": ("100", None)}, 0.0)
    op(m, "decrement", 9.5, 9.6, deltas={"c:0": -5}, counter_reply=95)
    m.event(Event("lossy", 10, 12, "failover"))
    op(m, "get", 13, 14, reads={"c:0": "100"})
    assert invariants(m) == []


def test_absent_after_delete_then_an_acknowledged_set_is_lost() -> None:
    m = model()
    op(m, "delete", 1, 2, writes={"s:0": None})
    op(m, "set", 3, 4, writes={"s:0": "s:0|2|"})
    op(m, "get", 5, 6, reads={"s:0": None})
    assert invariants(m) == ["lost"]


def test_a_write_ending_as_the_read_starts_does_not_bind_it() -> None:
    m = model()
    op(m, "set", 1, 2, writes={"s:0": "s:0|1|"})
    op(m, "set", 3, 5, writes={"s:0": "s:0|2|"})
    op(m, "get", 5, 6, reads={"s:0": "s:0|1|"})
    assert invariants(m) == []


def test_a_matching_pattern_removes_and_a_wipe_forgets() -> None:
    m = model()
    op(m, "set", 1, 2, writes={"s:1": "s:1|1|"})
    op(m, "delete_pattern", 3, 4, pattern="s:1*")
    op(m, "get", 5, 6, reads={"s:1": "s:1|1|"})  # removed by the pattern: stale
    op(m, "get", 5, 6, reads={"s:0": None})
    assert invariants(m) == ["stale"]
    m2 = model()
    op(m2, "set", 1, 2, writes={"s:0": "s:0|1|"})
    m2.event(Event("wipe", 3, 4, "SIGKILL"))
    op(m2, "get", 5, 6, reads={"s:0": "s:0|1|"})
    assert invariants(m2) == ["stale"]


def test_a_violation_shows_the_shortest_history_that_still_breaks_the_rule() -> None:
    """Of 42 calls on the key, the stale read needs three: the write of the value it read,
    the acknowledged write it missed, and itself."""
    m = model()
    op(m, "set", 1, 2, writes={"s:0": "s:0|1|"})
    for i in range(20):  # reads of the first value while it was current, and other keys
        op(m, "get", 3 + i * 0.01, 3.005 + i * 0.01, reads={"s:0": "s:0|1|"})
        op(m, "set", 3 + i * 0.01, 3.005 + i * 0.01, writes={"s:1": f"s:1|{i}|"})
    op(m, "set", 4, 5, writes={"s:0": "s:0|2|"})
    for i in range(19):
        op(m, "get", 6 + i * 0.01, 6.005 + i * 0.01, reads={"s:0": "s:0|2|"})
    stale = op(m, "get", 7, 8, reads={"s:0": "s:0|1|"})
    (violation,) = m.check_cycle()
    assert violation.invariant == "stale"
    calls = [line for line in violation.history if line.startswith("#")]
    assert len(calls) == 3, violation.history
    assert "s:0|1|" in calls[0] and "s:0|2|" in calls[1] and calls[2].startswith(f"#{stale.id} ")
    assert "3 of the cycle's 42 calls" in violation.history[-1]
