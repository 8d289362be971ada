"""relay/__main__.py: reading the server password and the cluster secret from their files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.__main__ import read_password, read_secret
from relay.protocol.messages import MAX_PASSWORD


def test_the_first_line_is_the_password(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    longest = "x" * MAX_PASSWORD
    for text, password in (("s3cret\n", "s3cret"), ("two words\r\nnext", "two words"),
                           ("é ü 密码", "é ü 密码"), (longest, longest)):  # fmt: skip
        f.write_text(text, encoding="utf-8")
        assert read_password(str(f)) == password


def test_a_password_no_client_could_send_is_refused_with_a_reason(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    for data, words in ((b"", "first line is empty"), (b"\nlater", "first line is empty"),
                        (b"\xff\xfe pw", "not UTF-8"), (b"x" * (MAX_PASSWORD + 1), "cannot send"),
                        (b"bell\x07", "cannot send"), (b"esc\x1b[0m", "cannot send")):  # fmt: skip
        f.write_bytes(data)
        with pytest.raises(ValueError, match=words):
            read_password(str(f))
    with pytest.raises(ValueError, match="password file"):
        read_password(str(tmp_path / "missing"))


def test_the_cluster_secret_is_only_a_first_line(tmp_path: Path) -> None:
    f = tmp_path / "secret"
    f.write_bytes(b"y" * 1000 + b"\x07")  # not a client's password: no such limits
    assert read_secret(str(f), "cluster secret file") == "y" * 1000 + "\x07"


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=600))
def test_fuzz_any_file_gives_a_sendable_password_or_a_value_error(
    tmp_path: Path, data: bytes
) -> None:
    f = tmp_path / "pw"
    f.write_bytes(data)
    try:
        password = read_password(str(f))
    except ValueError as exc:
        assert str(exc).startswith("password file")
    else:
        assert password and len(password) <= MAX_PASSWORD and "\n" not in password


def test_the_relay_does_not_start_with_a_password_no_client_could_send(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("x" * (MAX_PASSWORD + 1))
    p = subprocess.run(
        [sys.executable, "-m", "relay", "--port", "0", "--data-dir", str(tmp_path),
         "--password-file", str(tmp_path / "pw")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert p.returncode == 2 and "a client cannot send this password" in p.stderr, p.stderr
