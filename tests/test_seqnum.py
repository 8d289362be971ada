"""pipeline/core/seqnum.py: wrap-safe sequence arithmetic, at and around the wrap point."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeline.core.seqnum import HALF, MASK, seq_add, seq_diff, seq_lt


def test_at_the_wrap_point() -> None:
    assert seq_add(MASK, 1) == 0
    assert seq_add(0, -1) == MASK
    assert seq_diff(0, MASK) == 1
    assert seq_diff(MASK, 0) == -1
    assert seq_lt(MASK, 0) and not seq_lt(0, MASK)
    assert seq_diff(5, 5) == 0 and not seq_lt(5, 5)


def test_half_range_boundary() -> None:
    assert seq_diff(HALF - 1, 0) == HALF - 1
    assert seq_diff(HALF, 0) == -HALF  # exactly half way is "before": the range is [-2**63, 2**63)
    assert seq_diff(0, HALF) == -HALF


@given(a=st.integers(0, MASK), n=st.integers(-(HALF - 1), HALF - 1))
def test_add_then_diff_round_trips(a: int, n: int) -> None:
    b = seq_add(a, n)
    assert 0 <= b <= MASK
    assert seq_diff(b, a) == n
    assert seq_lt(a, b) == (n > 0)
