"""relay/bans.py: ban matching by address, network and name, with expiry."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.bans import Ban, BanList, parse_network


def test_an_address_ban_keeps_out_that_address_only() -> None:
    bans = BanList([Ban(1, address="10.0.0.5")])
    assert bans.match("10.0.0.5", None, 0.0) is not None
    assert bans.match("10.0.0.5", "anyone", 0.0) is not None
    assert bans.match("10.0.0.6", "anyone", 0.0) is None
    assert bans.match("::1", "anyone", 0.0) is None


def test_a_network_ban_covers_its_addresses() -> None:
    bans = BanList([Ban(1, address="10.1.0.0/16")])
    assert bans.match("10.1.200.3", None, 0.0) is not None
    assert bans.match("10.2.0.1", None, 0.0) is None


def test_a_name_ban_matches_look_alikes_but_waits_for_the_name() -> None:
    bans = BanList([Ban(1, name="alice")])
    assert bans.match("1.2.3.4", None, 0.0) is None  # at connect: the name is not known yet
    assert bans.match("1.2.3.4", "alice", 0.0) is not None
    assert bans.match("1.2.3.4", " \u0430lice ", 0.0) is not None  # Cyrillic a
    assert bans.match("1.2.3.4", "bob", 0.0) is None


def test_a_ban_on_address_and_name_needs_both() -> None:
    bans = BanList([Ban(1, address="10.0.0.1", name="alice")])
    assert bans.match("10.0.0.1", "alice", 0.0) is not None
    assert bans.match("10.0.0.1", "bob", 0.0) is None
    assert bans.match("10.0.0.2", "alice", 0.0) is None


def test_an_expired_ban_lets_them_in() -> None:
    bans = BanList([Ban(1, address="10.0.0.1", expires=100.0), Ban(2, name="x")])
    assert bans.match("10.0.0.1", None, 99.9) is not None
    assert bans.match("10.0.0.1", None, 100.0) is None
    assert [b.id for b in bans.expired(100.0)] == [1]
    assert bans.remove(1) is not None and bans.remove(1) is None and len(bans) == 1


@pytest.mark.parametrize("address", ["", "10.0.0.300", "host.example"])
def test_a_ban_must_name_something_real(address: str) -> None:
    with pytest.raises(ValueError):
        Ban(1, address=address)


@given(st.text(max_size=60))
def test_fuzz_parse_network_gives_a_network_or_value_error(text: str) -> None:
    with contextlib.suppress(ValueError):
        parse_network(text)


@given(st.text(max_size=40), st.one_of(st.none(), st.text(max_size=40)))
def test_fuzz_match_never_raises(address: str, name: str | None) -> None:
    bans = BanList([Ban(1, address="10.0.0.0/8"), Ban(2, name="alice"), Ban(3, "::1", "bob")])
    bans.match(address, name, 0.0)
