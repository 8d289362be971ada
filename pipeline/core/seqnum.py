"""Wrap-safe arithmetic on the u64 sequence numbers and timestamps of SPEC.md.

u64 will not wrap in practice, but a stream may start anywhere (a sender may pick a
random first sequence number), so every comparison goes through these, which give
the right answer across the wrap as long as the two values are less than 2**63 apart.
"""

from __future__ import annotations

BITS = 64
MOD = 1 << BITS
MASK = MOD - 1
HALF = 1 << (BITS - 1)


def seq_diff(a: int, b: int) -> int:
    """``a - b`` as a signed distance, in [-2**63, 2**63): positive when a is after b."""
    return ((a - b + HALF) & MASK) - HALF


def seq_lt(a: int, b: int) -> bool:
    """True when a comes before b."""
    return seq_diff(a, b) < 0


def seq_add(a: int, n: int) -> int:
    """The sequence number ``n`` steps after ``a`` (n may be negative)."""
    return (a + n) & MASK
