"""relay/lograte.py: the rate-limiting log filter, driven by the records' own timestamps."""

from __future__ import annotations

import logging

from relay.lograte import MAX_KINDS, RateLimitFilter, install


def record(
    msg: str, t: float, name: str = "relay", args: tuple[object, ...] = ()
) -> logging.LogRecord:
    r = logging.LogRecord(name, logging.WARNING, __file__, 1, msg, args, None)
    r.created = t
    return r


def test_a_flood_of_one_kind_passes_a_burst_per_window() -> None:
    f = RateLimitFilter(burst=3, interval=10.0)
    passed = [f.filter(record("conn %d dropped", 0.01 * i, args=(i,))) for i in range(1000)]
    assert sum(passed) == 3 and passed[:3] == [True] * 3
    assert f.held == 997
    # The next window lets some through again, and says how many were held back.
    r = record("conn %d dropped", 10.5, args=(7,))
    assert f.filter(r)
    assert r.getMessage() == "conn 7 dropped [997 more like this in the last window]"


def test_kinds_are_apart() -> None:
    f = RateLimitFilter(burst=1, interval=10.0)
    assert f.filter(record("a", 0.0)) and not f.filter(record("a", 0.1))
    assert f.filter(record("b", 0.1))  # another message
    assert f.filter(record("a", 0.1, name="asyncio"))  # another logger


def test_messages_with_percent_signs_still_format() -> None:
    f = RateLimitFilter(burst=1, interval=1.0)
    f.filter(record("%d%% busy", 0.0, args=(100,)))
    f.filter(record("%d%% busy", 0.1, args=(100,)))
    r = record("%d%% busy", 2.0, args=(100,))
    assert f.filter(r) and r.getMessage() == "100% busy [1 more like this in the last window]"


def test_memory_is_bounded() -> None:
    f = RateLimitFilter(burst=1, interval=10.0)
    for i in range(3 * MAX_KINDS):
        f.filter(record(f"unique {i}", 0.0))
    assert len(f._windows) <= MAX_KINDS


def test_install_covers_every_logger() -> None:
    root = logging.getLogger()
    handler = logging.NullHandler()
    root.addHandler(handler)
    try:
        flt = install(burst=2)
        assert flt in handler.filters
    finally:
        root.removeHandler(handler)
