"""The activity ring the console charts: samples per interval, kept for the configured span,
latency percentiles from a bounded reservoir, circuits counted when they open."""

from __future__ import annotations

import random

import grpc
import pytest

from cortex.plugins.console.activity import RESERVOIR, Activity

from ..conftest import FakeClock

OK, NOT_FOUND = grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND


def clock_at(seconds: float) -> FakeClock:
    clock = FakeClock()
    clock.now = seconds
    return clock


def test_calls_land_in_the_sample_of_their_interval():
    clock = clock_at(1000.0)
    activity = Activity(interval=10, keep_seconds=60, clock=clock)
    activity.observe("s/M", "p", OK, True, 0.010)
    activity.observe("s/M", "p", NOT_FOUND, True, 0.030)
    activity.observe("s/M", "", OK, False, 0.001)
    clock.advance(10)
    activity.observe("s/N", "q", OK, True, 0.002)
    first, second = activity.since(0)
    assert (first.start, first.calls, first.allowed, first.denied, first.errors) == (1000, 3, 2, 1, 1)
    assert first.by_method[("s/M", "p")].errors == 1 and first.by_method[("s/M", "")].denied == 1
    assert first.percentile(0.5) == pytest.approx(10) and first.percentile(0.99) == pytest.approx(30)
    assert (second.start, second.calls) == (1010, 1)


def test_only_the_configured_span_is_kept_and_minutes_select_the_newest():
    clock = clock_at(0.0)
    activity = Activity(interval=10, keep_seconds=60, clock=clock)
    for _ in range(20):
        activity.observe("s/M", "p", OK, True, 0.001)
        clock.advance(10)
    kept = activity.since(0)
    assert len(kept) == 7 and kept[0].start == 140 and kept[-1].start == 200  # 60 s of samples and the one now open
    assert [s.start for s in activity.since(1)] == [140, 150, 160, 170, 180, 190, 200]  # those within the last minute
    with pytest.raises(ValueError, match="interval must be > 0"):
        Activity(interval=0)


def test_latency_percentiles_stay_fair_past_the_reservoir():
    activity = Activity(interval=10, keep_seconds=60, clock=clock_at(0.0), rng=random.Random(7))
    for i in range(RESERVOIR * 5):  # 0..10239 ms, uniformly
        activity.observe("s/M", "p", OK, True, i / 1000)
    sample = activity.since(0)[-1]
    assert len(sample.latencies_ms) == RESERVOIR and sample.calls == RESERVOIR * 5
    assert sample.percentile(0.5) == pytest.approx(RESERVOIR * 2.5, rel=0.08)
    assert sample.percentile(0.99) == pytest.approx(RESERVOIR * 5 * 0.99, rel=0.03)


def test_a_circuit_counts_once_when_it_opens_and_the_memory_count_carries_on():
    clock = clock_at(0.0)
    activity = Activity(interval=10, keep_seconds=60, clock=clock)
    activity.circuits({("svc", "a"): False, ("svc", "b"): False})
    activity.circuits({("svc", "a"): True, ("svc", "b"): False})
    activity.circuits({("svc", "a"): True, ("svc", "b"): True})  # a still open: not again
    activity.memory_count(42)
    clock.advance(10)
    activity.circuits({("svc", "a"): False, ("svc", "b"): True})
    activity.circuits({("svc", "a"): True, ("svc", "b"): True})  # a opened again
    first, second = activity.since(0)
    assert (first.circuit_openings, second.circuit_openings) == (2, 1)
    assert (first.memories, second.memories) == (42, 42)


def test_calls_shed_land_in_the_sample_they_were_polled_in():
    clock = clock_at(0.0)
    activity = Activity(interval=10, keep_seconds=60, clock=clock)
    activity.shed_total(7)  # shed before the console's first poll: not this hour's to chart
    activity.shed_total(10)
    clock.advance(10)
    activity.shed_total(10)
    activity.shed_total(25)
    clock.advance(10)
    activity.shed_total(4)  # the kernel restarted: its count began again
    assert [s.shed for s in activity.since(0)] == [3, 15, 4]
