"""pipeline/core/pins.py: trust on first use of relay certificates."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.core.pins import (
    PinFile,
    PinsUnreadable,
    Trust,
    default_pins_path,
    pin_key,
    verdict,
)


def test_the_verdicts() -> None:
    pins = {"h:1": "AA"}
    assert verdict(pins, "h:2", "BB").trust is Trust.NEW
    assert verdict(pins, "h:1", "AA").trust is Trust.PINNED
    changed = verdict(pins, "h:1", "BB")
    assert changed.trust is Trust.CHANGED and changed.pinned == "AA"
    text = changed.message("h:1", "BB")
    assert "AA" in text and "BB" in text and "h:1" in text


def test_first_use_pins_then_a_change_is_refused_until_accepted(tmp_path: Path) -> None:
    f = PinFile(tmp_path / "sub" / "pins.json")
    assert f.check("h:1", "AA").trust is Trust.NEW
    assert (os.stat(f.path).st_mode & 0o777) == 0o600
    assert f.check("h:1", "AA").trust is Trust.PINNED
    assert f.check("h:1", "BB").trust is Trust.CHANGED
    assert f.load() == {"h:1": "AA"}  # refusing does not re-pin
    assert f.check("h:1", "BB", accept_changed=True).trust is Trust.CHANGED
    assert f.check("h:1", "BB").trust is Trust.PINNED


def test_a_broken_file_fails_closed_and_is_never_written_over(tmp_path: Path) -> None:
    p = tmp_path / "pins.json"
    assert PinFile(p).load() == {}  # no file yet: no pins, the first use pins
    for data in (b'{"h:1": "AA",', b"[1, 2]", b'{"h:1": 5}', b"\xff\xfe", b""):
        p.write_bytes(data)
        f = PinFile(p)
        for attempt in (f.load, lambda f=f: f.check("h:1", "EVE"), lambda f=f: f.vouch("h:2", "X")):
            with pytest.raises(PinsUnreadable, match="cannot be read") as exc:
                attempt()
            assert str(p) in str(exc.value) and "fix or remove" in str(exc.value)
        assert p.read_bytes() == data  # the user's pins are still there to mend


def test_the_default_path_follows_xdg(tmp_path: Path) -> None:
    os.environ["XDG_CONFIG_HOME"], old = str(tmp_path), os.environ.get("XDG_CONFIG_HOME", "")
    try:
        assert default_pins_path() == tmp_path / "voicechat" / "known_relays.json"
    finally:
        os.environ["XDG_CONFIG_HOME"] = old


def test_a_vouched_fingerprint_is_pinned_but_never_replaces_a_pin(tmp_path: Path) -> None:
    f = PinFile(tmp_path / "pins.json")
    assert f.vouch("b:1", "BB").trust is Trust.NEW
    assert f.load() == {"b:1": "BB"}
    assert f.check("b:1", "BB").trust is Trust.PINNED  # reached later: as if seen before
    assert f.check("b:1", "EE").trust is Trust.CHANGED  # and a stranger there is refused
    f.pin("c:1", "CC")
    v = f.vouch("c:1", "XX")
    assert v.trust is Trust.CHANGED and v.pinned == "CC"
    assert f.load() == {"b:1": "BB", "c:1": "CC"}  # the user's pin is kept
    assert f.vouch("c:1", "CC").trust is Trust.PINNED


def test_the_pin_key_of_an_ipv6_relay_has_no_brackets() -> None:
    assert pin_key("::1", 8080) == "::1:8080" and pin_key("h", 1) == "h:1"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode())))
def test_fuzz_any_file_gives_pins_of_strings_or_says_it_cannot_be_read(
    tmp_path: Path, data: bytes
) -> None:
    p = tmp_path / "pins.json"
    p.write_bytes(data)
    try:
        pins = PinFile(p).load()
    except PinsUnreadable:
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in pins.items())
