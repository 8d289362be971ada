"""relay/log_format.py: one event per line, as text or JSON, addresses shown or hashed."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay import log_format
from relay.log_format import JsonFormatter, TextFormatter


def record(msg: str, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("relay.control_server", logging.INFO, __file__, 1, msg, None, None)
    rec.__dict__.update(extra)
    return rec


def test_json_is_one_object_per_line_with_the_event_fields() -> None:
    line = JsonFormatter().format(record("auth conn=3", event="auth", user_id=7, address="h1"))
    assert "\n" not in line
    out = json.loads(line)
    assert out["level"] == "info" and out["logger"] == "relay.control_server"
    assert out["message"] == "auth conn=3" and out["event"] == "auth" and out["user_id"] == 7
    assert out["time"].endswith("Z") and "T" in out["time"]


def test_text_appends_the_fields_and_never_breaks_a_line() -> None:
    line = TextFormatter().format(record("two\nlines", event="auth", user="a b"))
    assert "\n" not in line and "two\\nlines" in line
    assert line.endswith("event=auth user='a b'")


@given(st.text(max_size=50), st.text(max_size=20))
def test_fuzz_any_message_is_one_line_in_both_formats(msg: str, name: str) -> None:
    rec = record(msg.replace("%", "%%"), user=name)
    assert "\n" not in JsonFormatter().format(rec)
    assert "\n" not in TextFormatter().format(rec).replace("\\n", "")


@pytest.fixture
def obfuscated() -> Iterator[None]:
    log_format.set_obfuscation(True)
    yield None
    log_format.set_obfuscation(False)


def test_addresses_are_shown_or_hashed_consistently(obfuscated: None) -> None:
    a = log_format.address("10.0.0.1")
    assert a != "10.0.0.1" and a == log_format.address("10.0.0.1")
    assert a != log_format.address("10.0.0.2") and "10.0.0" not in a
    log_format.set_obfuscation(False)
    assert log_format.address("10.0.0.1") == "10.0.0.1"
