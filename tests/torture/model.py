"""The model the campaign checks histories against: what each key may hold, and when.

A campaign cycle records every call as an :class:`Op` (its arguments, the time it started
and ended, and how it ended). At the cycle's quiescent point, when no call is in flight and
the faults are gone, :meth:`Model.check_cycle` judges every read of the cycle against the
writes of the cycle, then :meth:`Model.rebase` takes what the server holds as the new
starting state. Judging at the end, not inline, lets the cycle's lossy events (a failover
nobody asked for, found only at the quiescent point) widen what the model allows before
any read is judged.

What a read may return (values are unique tokens ``<key>|<op id>|...``, so a token names
the write that wrote it):

* ``value``: a token written *to this key* by a write that was not refused (a ``Failure``
  with ``maybe_applied=False`` is a promise that nothing was written, so its token must never
  be read back), that started before the read ended;
* not **stale**: no *barrier* (an acknowledged overwrite: set of another token, delete,
  flush, matching delete_pattern) started after the token's write ended and ended before
  the read started. A barrier acknowledged close to a lossy event (a failover; replication
  is asynchronous, so the new primary may not have it) binds no read after that event;
* not **expired**: a token written with a ttl is not read after its expiry (unless an
  ``expire`` touched the key since);
* ``None`` only if some op could have removed the key: a delete, flush, delete_pattern or
  expire that may have been applied, a ttl, a write still unknown, a wipe (a SIGKILLed
  server without persistence) or a lossy event;
* through a near cache (:attr:`Op.instance` says which of two instances made the call), a
  write made by the *other* instance binds a read only once this instance processed an
  invalidation of the key after that write ended: the near cache is coherent once it has
  been told, never before, and never after it was told.

Counters (keys ``c:*``) are judged by range: an increment's reply minus its own amount, or a
read, lies between the base (what the last quiescent point read) plus every acknowledged
delta and every delta that may have applied (a refused delta never counts). A refused
increment that was applied anyway shows up as a value above the range.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Final, Literal

Outcome = Literal["ok", "refused", "maybe", "cancelled", "raised", "pending"]
"""How a call ended: ``ok`` (a Success), ``refused`` (a Failure with maybe_applied=False),
``maybe`` (a Failure with maybe_applied=True), ``cancelled`` (the caller's cancellation
took effect: applied or not, unknown), ``raised`` (a violation in itself)."""

EXPIRY_SLACK: Final = 0.02
"""Redis expires in milliseconds and checks expiry with its own clock: a token may be seen
this long after its ttl, and may be gone this long before it."""
LOSS_WINDOW: Final = 1.0
"""How far before a lossy event (failover) an acknowledged write may still be lost: the
replica may lag its primary this long (asynchronous replication)."""

UNKNOWN_END: Final = math.inf
SHRINK_BUDGET: Final = 400
"""Trials of the model the search for a violation's shortest history may take."""


@dataclass(slots=True, eq=False)
class Op:
    """One call, as the campaign saw it."""

    id: int
    instance: int
    method: str
    start: float
    end: float = UNKNOWN_END
    outcome: Outcome = "pending"
    # writes: key -> token written (None: deleted); counters: key -> delta
    writes: dict[str, str | None] = field(default_factory=dict)
    deltas: dict[str, int] = field(default_factory=dict)
    ttl: int | None = None
    pattern: str | None = None  # delete_pattern's glob, flush: "*"
    expire_seconds: int | None = None
    expire_key: str | None = None
    key: str | None = None  # the key of a one-key call (for the record)
    # reads: key -> what came back (a token, None, True/False for exists)
    reads: dict[str, Any] = field(default_factory=dict)
    counter_reply: int | None = None
    error: str | None = None
    note: str = ""

    @property
    def acked(self) -> bool:
        return self.outcome == "ok"

    @property
    def may_have_applied(self) -> bool:
        return self.outcome in ("ok", "maybe", "cancelled", "pending", "raised")

    def describe(self) -> str:
        args: list[str] = []
        if self.writes:
            args.append(", ".join(f"{k}={_short(v)}" for k, v in self.writes.items()))
        if self.deltas:
            args.append(", ".join(f"{k}{d:+d}" for k, d in self.deltas.items()))
        if self.pattern:
            args.append(f"pattern={self.pattern!r}")
        if self.expire_seconds is not None:
            args.append(f"seconds={self.expire_seconds}")
        if self.ttl is not None:
            args.append(f"ttl={self.ttl}")
        got = ""
        if self.reads:
            got = " -> " + ", ".join(f"{k}={_short(v)}" for k, v in self.reads.items())
        if self.counter_reply is not None:
            got = f" -> {self.counter_reply}"
        if self.key is not None and not self.writes and not self.deltas:
            args.insert(0, self.key)
        err = f" [{self.error}]" if self.error else ""
        err += f" ({self.note})" if self.note else ""
        return (
            f"#{self.id} i{self.instance} {self.method}({'; '.join(args)}) "
            f"[{self.start:.3f}, {self.end:.3f}] {self.outcome}{got}{err}"
        )


def ident(value: str) -> str:
    """What the model keeps of a value: its token ``<key>|<op id>|`` (the rest is padding)."""
    key, sep, rest = value.partition("|")
    op_id, sep2, _ = rest.partition("|")
    return f"{key}|{op_id}|" if sep and sep2 else value


def _short(value: object) -> str:
    if isinstance(value, str) and len(value) > 40:
        return repr(value[:40] + f"...({len(value)})")
    return repr(value)


@dataclass(frozen=True, slots=True)
class Event:
    """Something done to the deployment that may lose data.

    ``wipe``: everything written before ``start`` is gone after ``end`` (a SIGKILLed server
    without persistence, an acknowledged flush). ``lossy``: writes acknowledged from
    ``start - LOSS_WINDOW`` to ``end`` may be lost, and what they overwrote may be back
    (a failover). ``maybe_wipe``: a wipe that may or may not have happened (a flush that
    failed with maybe_applied).
    """

    kind: Literal["wipe", "lossy", "maybe_wipe"]
    start: float
    end: float
    why: str


@dataclass(frozen=True, slots=True)
class Violation:
    invariant: str
    detail: str
    history: tuple[str, ...] = ()
    excess: float = 0.0
    """For a timing invariant (deadline, heal): seconds beyond what it allows."""

    def render(self) -> str:
        lines = [f"[{self.invariant}] {self.detail}"]
        lines += [f"    {line}" for line in self.history]
        return "\n".join(lines)


@dataclass
class KeyState:
    """What the last quiescent point read for a key: a token (or None), or a counter."""

    token: str | None = None
    counter: int = 0
    expires_at: float | None = None
    """When the key's ttl (read at the quiescent point) runs out, if it has one."""


@dataclass
class _Index:
    """One key's ops of the cycle, arranged so each read is judged in O(log n)."""

    by_token: dict[str | None, list[Op]] = field(default_factory=lambda: defaultdict(list))
    # acknowledged writes and removals, by instance (None: every instance), sorted by end,
    # with the latest start among those ending up to each position
    ends: dict[int | None, list[float]] = field(default_factory=dict)
    latest_start: dict[int | None, list[float]] = field(default_factory=dict)
    first_value_start: float = math.inf  # the earliest start of a write of a value
    # acknowledged writes of a value (not removals), arranged like ``ends``/``latest_start``
    value_ends: dict[int | None, list[float]] = field(default_factory=dict)
    value_latest_start: dict[int | None, list[float]] = field(default_factory=dict)
    expire_ends: list[float] = field(default_factory=list)
    # what may have removed the key: (earliest, latest) moment of each removal, sorted by
    # earliest, with the latest "latest" up to each position
    removal_starts: list[float] = field(default_factory=list)
    removal_latest_end: list[float] = field(default_factory=list)


@dataclass
class _Counters:
    """One counter's deltas of the cycle: running sums (total, negative part, positive
    part) in order of end (acknowledged ones) and of start (all that may have applied)."""

    acked_ends: list[float]
    acked_sums: list[tuple[int, int, int]]
    starts: list[float]
    all_sums: list[tuple[int, int, int]]
    reset_from: float


def _running_sums(deltas: list[int]) -> list[tuple[int, int, int]]:
    sums = [(0, 0, 0)]
    for d in deltas:
        total, neg, pos = sums[-1]
        sums.append((total + d, neg + min(0, d), pos + max(0, d)))
    return sums


def _prefix_max(values: list[float]) -> list[float]:
    out: list[float] = []
    best = -math.inf
    for value in values:
        best = max(best, value)
        out.append(best)
    return out


class Model:
    """The keys' state at the last quiescent point and the ops and events since."""

    def __init__(self, keys: Iterable[str], *, near_cache: bool = False) -> None:
        self.keys = list(keys)
        self.state: dict[str, KeyState] = {key: KeyState() for key in self.keys}
        self.near_cache = near_cache
        self.ops: list[Op] = []
        self.by_key: dict[str, list[Op]] = defaultdict(list)
        self.patterns: list[Op] = []  # delete_pattern and flush
        self.cycle_refused: dict[str, str] = {}
        self._index: dict[str, _Index] = {}
        self._counters: dict[str, _Counters] = {}
        self.events: list[Event] = []
        # instance -> key -> times it processed an invalidation of the key (None: all keys)
        self.invalidations: dict[int, dict[str | None, list[float]]] = defaultdict(
            lambda: defaultdict(list)
        )
        self.cycle_start = 0.0
        # tokens written (and how) over the whole run: a token may be read in a later cycle
        self.refused_tokens: dict[str, str] = {}

    # -- recording ---------------------------------------------------------------------

    def record(self, op: Op) -> None:
        """Keep a finished call. A refused one only leaves its tokens (it changed nothing);
        one that neither read nor may have written anything is forgotten."""
        if op.outcome == "refused":
            for token in op.writes.values():
                if token:
                    self.cycle_refused[token] = f"#{op.id} {op.method} [{op.error}]"
            return
        keys = {*op.writes, *op.reads, *op.deltas}
        if op.expire_key is not None:
            keys.add(op.expire_key)
        if not keys and op.pattern is None:
            return
        self.ops.append(op)
        for key in keys:
            self.by_key[key].append(op)
        if op.pattern is not None:
            self.patterns.append(op)

    def event(self, event: Event) -> None:
        self.events.append(event)

    def invalidated(self, instance: int, keys: Iterable[str] | None, at: float) -> None:
        if keys is None:
            self.invalidations[instance][None].append(at)
        else:
            for key in keys:
                self.invalidations[instance][key].append(at)

    # -- what touches a key ------------------------------------------------------------

    def _writes_to(self, key: str) -> Iterator[tuple[Op, str | None]]:
        """Every op that may set ``key``'s value: (op, token or None for a removal)."""
        for op in self.by_key.get(key, ()):
            if key in op.writes:
                yield op, op.writes[key]
        for op in self.patterns:
            if fnmatchcase(key, op.pattern or ""):
                yield op, None

    def _about(self, key: str) -> list[Op]:
        """The ops that name ``key`` or may remove it by a pattern, in call order."""
        ops = {op.id: op for op in (*self.by_key.get(key, ()), *self._matching(key))}
        return [ops[i] for i in sorted(ops)]

    def _matching(self, key: str) -> list[Op]:
        return [op for op in self.patterns if fnmatchcase(key, op.pattern or "")]

    def _maybe_lost(self, op: Op) -> bool:
        """Acknowledged close to a failover: the new primary may never have had it. (Such a
        write binds no read of the cycle, before the failover either: simpler, and lenient
        only for reads that raced the failover.)"""
        return any(
            e.kind == "lossy" and e.start - LOSS_WINDOW <= op.end <= e.end for e in self.events
        )

    def _binds(self, barrier: Op, read: Op, key: str) -> bool:
        """Whether an acknowledged write binds ``read`` (it must see it or something newer):
        through a near cache, another instance's write binds once this instance processed
        an invalidation of the key after that write ended."""
        if not barrier.acked or barrier.end >= read.start or self._maybe_lost(barrier):
            return False
        return barrier.instance == read.instance or self._told(read, key, barrier.end)

    # -- judging -----------------------------------------------------------------------

    def _indexed(self, key: str) -> _Index:
        index = self._index.get(key)
        if index is not None:
            return index
        index = self._index[key] = _Index()
        barriers: dict[int | None, list[Op]] = defaultdict(list)
        removals: list[tuple[float, float]] = []  # when each removal may have happened
        for op, token in self._writes_to(key):
            if not op.may_have_applied:
                continue
            index.by_token[token].append(op)
            landed_by = op.end if op.acked else math.inf  # unacknowledged: any time later
            if token is None:
                removals.append((op.start, landed_by))
            else:
                index.first_value_start = min(index.first_value_start, op.start)
                if op.ttl is not None:
                    removals.append((op.start + op.ttl - EXPIRY_SLACK,
                                     landed_by + op.ttl + EXPIRY_SLACK))  # fmt: skip
            if op.acked and not self._maybe_lost(op):
                barriers[None].append(op)
                barriers[op.instance].append(op)
        for op in self.by_key.get(key, ()):
            if op.expire_key == key and op.may_have_applied:
                index.expire_ends.append(op.end if op.acked else math.inf)
                seconds = op.expire_seconds or 0
                landed_by = op.end if op.acked else math.inf
                removals.append((op.start + seconds - EXPIRY_SLACK,
                                 landed_by + seconds + EXPIRY_SLACK))  # fmt: skip
        for event in self.events:
            removals.append((event.start, event.end))
        expires_at = self.state[key].expires_at
        if expires_at is not None:
            removals.append((expires_at - EXPIRY_SLACK, math.inf))
        removals.sort()
        index.removal_starts = [start for start, _ in removals]
        index.removal_latest_end = _prefix_max([end for _, end in removals])
        value_writes: dict[int | None, list[Op]] = defaultdict(list)
        for op, token in self._writes_to(key):
            if token is not None and op.acked and not self._maybe_lost(op):
                value_writes[None].append(op)
                value_writes[op.instance].append(op)
        for who, ops in value_writes.items():
            ops.sort(key=lambda op: op.end)
            index.value_ends[who] = [op.end for op in ops]
            index.value_latest_start[who] = _prefix_max([op.start for op in ops])
        for who, ops in barriers.items():
            ops.sort(key=lambda op: op.end)
            index.ends[who] = [op.end for op in ops]
            index.latest_start[who] = _prefix_max([op.start for op in ops])
        return index

    def _latest_barrier_start(self, key: str, who: int | None, cutoff: float, *,
                              inclusive: bool = False, values: bool = False) -> float:  # fmt: skip
        """The latest start among acknowledged writes of ``who`` that ended before
        ``cutoff`` (or at it, ``inclusive``)."""
        index = self._indexed(key)
        ends = (index.value_ends if values else index.ends).get(who)
        if not ends:
            return -math.inf
        latest = (index.value_latest_start if values else index.latest_start)[who]
        n = (bisect_right if inclusive else bisect_left)(ends, cutoff)
        return latest[n - 1] if n else -math.inf

    def _told_at(self, instance: int, key: str, before: float) -> float:
        """The last time ``instance`` processed an invalidation of ``key`` before ``before``."""
        per_key = self.invalidations[instance]
        last = -math.inf
        for times in (per_key.get(None, ()), per_key.get(key, ())):
            n = bisect_left(times, before)
            if n:
                last = max(last, times[n - 1])
        return last

    def _newest_binding_start(self, read: Op, key: str, *, values: bool = False) -> float:
        """The latest start of an acknowledged write (``values``: of a value, not a removal)
        that binds ``read``."""
        if not self.near_cache or read.instance < 0:
            return self._latest_barrier_start(key, None, read.start, values=values)
        best = self._latest_barrier_start(key, read.instance, read.start, values=values)
        told = self._told_at(read.instance, key, read.start)
        index = self._indexed(key)
        for other in index.value_ends if values else index.ends:
            if other is not None and other != read.instance:
                best = max(best, self._latest_barrier_start(
                    key, other, told, inclusive=True, values=values))  # fmt: skip
        return best

    def check_cycle(self) -> list[Violation]:
        self._index = {}
        self._counters = {}
        for per_key in self.invalidations.values():
            for times in per_key.values():
                times.sort()
        violations: list[Violation] = []
        for op in self.ops:
            for key in (*op.reads, *self._counted(op)):
                found = self._judge(op, key)
                if found:
                    violations.append(self._violation(found[0], found[1], key, op))
        return violations

    def _counted(self, op: Op) -> tuple[str, ...]:
        """The counter an acknowledged increment or decrement replied about."""
        if op.counter_reply is not None and op.outcome == "ok":
            return tuple(op.deltas)
        return ()

    def _judge(self, op: Op, key: str) -> tuple[str, str] | None:
        """What ``op`` broke about ``key`` (a read of it, or a counter's reply)."""
        if key in op.reads:
            return self._judge_read(op, key, op.reads[key])
        delta = op.deltas[key]
        assert op.counter_reply is not None
        return self._judge_counter(op, key, op.counter_reply - delta, own=op)

    def _violation(self, invariant: str, detail: str, key: str, culprit: Op) -> Violation:
        about = self._about(key)
        shortest = self.shortest_history(key, culprit, invariant)
        history = [op.describe() for op in shortest]
        history.append(
            f"(the shortest history found that still breaks the rule: {len(shortest)} of the "
            f"cycle's {len(about)} calls on {key!r}; replay the seed for them all)"
        )
        history += [f"event {e.kind} [{e.start:.3f}, {e.end:.3f}]: {e.why}" for e in self.events]
        state = self.state.get(key)
        if state is not None:
            history.insert(0, f"at cycle start ({self.cycle_start:.3f}): {state}")
        return Violation(invariant, f"key {key!r}: {detail}", tuple(history))

    def shortest_history(
        self, key: str, culprit: Op, invariant: str, budget: int = SHRINK_BUDGET
    ) -> list[Op]:
        """The fewest of the cycle's calls on ``key`` that, with ``culprit``, still break
        ``invariant`` (delta debugging: drop runs of calls, halving the run, while the model
        still finds the violation; at most ``budget`` trials). ``culprit`` comes last."""
        kept = [op for op in self._about(key) if op is not culprit]
        run = max(1, len(kept) // 2)
        while budget > 0:
            start, dropped = 0, False
            while start < len(kept) and budget > 0:
                budget -= 1
                trial = kept[:start] + kept[start + run :]
                if self._still_breaks(key, culprit, invariant, trial):
                    kept, dropped = trial, True
                else:
                    start += run
            if run == 1 and not dropped:
                break
            run = max(1, run // 2)
        return [*kept, culprit]

    def _still_breaks(self, key: str, culprit: Op, invariant: str, ops: list[Op]) -> bool:
        trial = Model([key], near_cache=self.near_cache)
        trial.state = {key: self.state[key]}
        trial.events = self.events
        trial.invalidations = self.invalidations
        trial.cycle_start = self.cycle_start
        trial.refused_tokens = self.refused_tokens
        trial.cycle_refused = self.cycle_refused
        for op in sorted((*ops, culprit), key=lambda o: o.id):
            trial.record(op)
        found = trial._judge(culprit, key)
        return found is not None and found[0] == invariant

    def _judge_read(self, read: Op, key: str, got: Any) -> tuple[str, str] | None:
        if key.startswith("c:"):
            if isinstance(got, bool) or self.near_cache:
                return None  # through a near cache a counter's read may lag (by design)
            try:
                value = 0 if got is None else int(got)
            except (TypeError, ValueError):
                return ("value", f"counter read {got!r}, not an integer")
            return self._judge_counter(read, key, value, own=None)
        if read.method == "exists":
            return self._judge_presence(read, key, bool(got))
        if got is None:
            return self._judge_presence(read, key, False)
        return self._judge_token(read, key, got)

    def _judge_token(self, read: Op, key: str, token: str) -> tuple[str, str] | None:
        if token and not token.startswith(f"{key}|"):
            return ("value", f"read {_short(token)}, a value written to another key")
        same: list[Op | None] = list(self._indexed(key).by_token.get(token, ()))
        if self.state[key].token == token:
            same.append(None)
        refused_by = self.cycle_refused.get(token) or self.refused_tokens.get(token)
        if token and refused_by is not None and not same:
            return (
                "refused_write_applied",
                f"read {_short(token)}, written by a call that failed with "
                f"maybe_applied=False ({refused_by})",
            )
        writers = [op for op in same if op is None or op.start < read.end]
        if not writers:
            return ("value", f"read {_short(token)}, which no call wrote to this key")
        # not stale: some writer of the token is not overwritten by a binding barrier
        problems: list[str] = []
        for writer in writers:
            why = self._overwritten(read, key, writer, token)
            if why is None:
                return None
            problems.append(why)
        return ("stale", f"read {_short(token)}: {problems[0]}")

    def _overwritten(self, read: Op, key: str, writer: Op | None, token: str) -> str | None:
        written_end = self.cycle_start if writer is None else writer.end
        if writer is not None and writer.acked and writer.ttl is not None and token:
            expired_at = writer.end + writer.ttl + EXPIRY_SLACK
            extended = any(t > writer.start for t in self._indexed(key).expire_ends)
            if not extended and read.start > expired_at and self._told(read, key, expired_at):
                return f"its ttl of {writer.ttl}s ended at {expired_at:.3f}"
        if writer is not None and not writer.acked:
            # not acknowledged: it may land any time until the quiescent point
            return None
        if self._newest_binding_start(read, key) <= written_end:
            return self._wiped(read, written_end)
        for op, _tok in self._writes_to(key):
            if op is writer or op.start <= written_end:
                continue
            if self._binds(op, read, key):
                return f"overwritten by #{op.id} ({op.method}, acknowledged at {op.end:.3f})"
        return self._wiped(read, written_end)

    def _wiped(self, read: Op, written_end: float) -> str | None:
        for event in self.events:
            if event.kind == "wipe" and event.start > written_end and event.end < read.start:
                return f"wiped by {event.why} at {event.start:.3f}"
        return None

    def _told(self, read: Op, key: str, after: float) -> bool:
        """Whether ``read``'s instance can be expected to know of a change at ``after``: at
        once without a near cache, else once it processed an invalidation of the key since."""
        if not self.near_cache or read.instance < 0:
            return True
        return self._told_at(read.instance, key, read.start) >= after

    def _judge_presence(self, read: Op, key: str, present: bool) -> tuple[str, str] | None:
        index = self._indexed(key)
        if present:
            if self.state[key].token is not None or index.first_value_start < read.end:
                return None
            return ("value", "reported present, but nothing could have written it")
        # absent: some removal (delete, pattern, expire, ttl, wipe, failover) may have come
        # after every acknowledged write of a value that binds this read
        newest = self._newest_binding_start(read, key, values=True)
        n = bisect_left(index.removal_starts, read.end)
        latest_removal = index.removal_latest_end[n - 1] if n else -math.inf
        if newest == -math.inf:
            if self.state[key].token is None or latest_removal > -math.inf:
                return None
            if self.near_cache and read.instance >= 0:
                return None  # the near cache may hold a miss from before the cycle
            return ("lost", f"absent, but it held {_short(self.state[key].token)} at the "
                    "cycle's start and nothing removed it")  # fmt: skip
        if latest_removal > newest:
            return None
        return ("lost", f"absent, but an acknowledged write that started at {newest:.3f} "
                "binds this read and nothing may have removed the key after it")  # fmt: skip

    def _counter_index(self, key: str) -> _Counters:
        found = self._counters.get(key)
        if found is not None:
            return found
        ops = [op for op in self.by_key.get(key, ()) if key in op.deltas and op.may_have_applied]
        acked = sorted((op for op in ops if op.acked), key=lambda op: op.end)
        ops.sort(key=lambda op: op.start)
        resets = [op.start for op in self._matching(key) if op.may_have_applied]
        found = self._counters[key] = _Counters(
            acked_ends=[op.end for op in acked],
            acked_sums=_running_sums([op.deltas[key] for op in acked]),
            starts=[op.start for op in ops],
            all_sums=_running_sums([op.deltas[key] for op in ops]),
            reset_from=min(resets, default=math.inf),
        )
        return found

    def _judge_counter(
        self, read: Op, key: str, value: int, *, own: Op | None
    ) -> tuple[str, str] | None:
        c = self._counter_index(key)
        # deltas acknowledged before the read started: certainly in
        n_def = bisect_left(c.acked_ends, read.start)
        sure, sure_neg, sure_pos = c.acked_sums[n_def]
        # deltas started before the read ended: perhaps in (refused ones never are)
        n_all = bisect_left(c.starts, read.end)
        _, negatives, positives = c.all_sums[n_all]
        if own is not None:
            negatives -= min(0, own.deltas[key])
            positives -= max(0, own.deltas[key])
        base = self.state[key].counter
        low = base + sure + (negatives - sure_neg)
        high = base + sure + (positives - sure_pos)
        uncertain = c.reset_from < read.end or any(e.start < read.end for e in self.events)
        if uncertain:
            # a flush, wipe or failover may have reset it (from 0, any subset of the deltas),
            # and a failover may have lost acknowledged deltas (from base, any subset)
            low = min(low, negatives, base + negatives)
            high = max(high, positives, base + positives)
        if low <= value <= high:
            return None
        what = "read" if own is None else f"before its own {own.deltas[key]:+d}"
        return (
            "counter",
            f"{what}: {value}, outside [{low}, {high}] (start {self.state[key].counter}, "
            "acknowledged deltas, and deltas that may have applied; refused ones never)",
        )

    # -- the next cycle ----------------------------------------------------------------

    def rebase(self, observed: dict[str, tuple[Any, float | None]], at: float) -> None:
        """Start a new cycle from what the server holds (read at the quiescent point):
        per key, its value (token, counter or None) and its remaining ttl in seconds."""
        self.refused_tokens.update(self.cycle_refused)
        self.cycle_refused = {}
        for key, (value, ttl) in observed.items():
            state = self.state[key]
            state.expires_at = None if ttl is None else at + ttl
            if key.startswith("c:"):
                state.counter = int(value) if value is not None else 0
            else:
                state.token = value
        self.ops = []
        self.by_key.clear()
        self.patterns = []
        self.events = []
        self.invalidations.clear()
        self.cycle_start = at
