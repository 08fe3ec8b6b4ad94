"""The demo's accounting and its report, on a recorded timeline (a manual clock, no server)."""

from __future__ import annotations

import io
import re
from pathlib import Path

from resilient_cache.cli.demo.report import per_second, summarize, write_report
from resilient_cache.cli.demo.run import _Live, _verdict
from resilient_cache.cli.demo.workload import Recorder
from resilient_cache.testing import ManualClock


def requests(recorder: Recorder, clock: ManualClock, count: int, outcome: str) -> None:
    """``count`` requests 0.1 s apart, each a hit or a fallback."""
    for _ in range(count):
        bucket = recorder.now()
        setattr(bucket, outcome, getattr(bucket, outcome) + 1)
        bucket.requests += 1
        bucket.latencies.append(0.001)
        clock.advance(0.1)


def timeline() -> tuple[Recorder, ManualClock]:
    """healthy for 2.5 s (hits), then a fault from 2.5 s (fallbacks, the breaker opens at
    2.7 s), the run ending at 5.5 s."""
    clock = ManualClock(start=0.0)
    recorder = Recorder(clock=clock)
    recorder.start_phase("healthy")
    requests(recorder, clock, 25, "hits")
    recorder.start_phase("blackhole")
    for step in range(30):
        if step == 2:
            recorder.breaker_moved("open")
        bucket = recorder.now()
        bucket.fallbacks += 1
        bucket.requests += 1
        bucket.latencies.append(0.5 if step < 2 else 0.02)
        clock.advance(0.1)
    recorder.end()
    return recorder, clock


def test_each_request_counts_in_the_phase_it_was_made_in() -> None:
    """Before: the second the fault began in stayed "healthy", with its fallbacks and the
    breaker's opening ("healthy ... fallbacks 75 ... closed -> open")."""
    recorder, _ = timeline()
    healthy, fault = summarize(recorder, ["healthy", "blackhole"])
    assert (healthy.fallbacks, healthy.breaker_states, healthy.requests) == (0, "closed", 25)
    assert fault.fallbacks == 30 and fault.breaker_states.endswith("open")
    assert healthy.max_latency == 0.001 and abs(healthy.seconds - 2.5) < 1e-9
    assert abs(healthy.rps - 10.0) < 1e-9 and abs(fault.seconds - 3.0) < 1e-9


def test_the_charts_count_each_second_once_and_leave_out_the_partial_last_one() -> None:
    recorder, _ = timeline()
    seconds = per_second(recorder)
    assert [s.t for s in seconds] == [0, 1, 2, 3, 4]  # 5.0-5.5 s is partial
    assert seconds[2].requests == 10  # 5 healthy + 5 of the fault, one second


def test_the_report_labels_phases_axes_and_the_deadline(tmp_path: Path) -> None:
    recorder, _ = timeline()
    summaries = summarize(recorder, ["healthy", "blackhole"])
    path = tmp_path / "report.html"
    write_report(path, recorder, summaries, _verdict(summaries, 0.5), 0.5)
    page = path.read_text()
    labels = re.findall(r'<text class="phase-label"[^>]*>([^<]+)</text>', page)
    assert labels.count("healthy") == 3 and labels.count("blackhole") == 3  # on each chart
    assert re.search(r'<text class="x-tick"[^>]*>0 s</text>', page)
    assert re.search(r'<text class="y-tick"[^>]*>500 ms</text>', page)  # the latency chart
    assert re.search(r'<text class="y-tick"[^>]*>100%</text>', page)  # the hit ratio chart
    assert re.search(r'<text class="line-label"[^>]*>deadline 500 ms</text>', page)
    assert "the fail-open promise held in every phase" in page


def test_a_user_redis_that_never_answered_is_said_so() -> None:
    clock = ManualClock(start=0.0)
    recorder = Recorder(clock=clock)
    recorder.start_phase("your Redis")
    requests(recorder, clock, 10, "fallbacks")
    recorder.end()
    verdict = _verdict(summarize(recorder, ["your Redis"]), 0.5, user_redis=True)
    assert "never answered" in verdict.headline
    assert "in every phase" not in verdict.headline


def test_the_live_view_prints_each_second_once() -> None:
    """Before: off a terminal, a second was printed again when no new one had ended."""
    recorder, clock = timeline()
    out = io.StringIO()
    live = _Live(out, recorder)
    live._show(0.5)
    live._show(0.6)  # no new second meanwhile
    assert len(out.getvalue().splitlines()) == 1
    clock.advance(1.0)
    recorder.now()
    live._show(0.7)
    assert len(out.getvalue().splitlines()) == 2


def test_a_user_redis_that_answers_with_misses_is_not_called_dead() -> None:
    clock = ManualClock(start=0.0)
    recorder = Recorder(clock=clock)
    recorder.start_phase("your Redis")
    requests(recorder, clock, 10, "misses")  # a read-only replica: misses, writes refused
    recorder.end()
    verdict = _verdict(summarize(recorder, ["your Redis"]), 0.5, user_redis=True)
    assert "never answered" not in verdict.headline
