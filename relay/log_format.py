"""How the relay's log lines look: one event per line, as text or as JSON.

Every record is one line (a message with a newline in it has it escaped), so a
log shipper never has to guess where an event ends. ``--log-format json``
writes one JSON object per line: ``time`` (UTC, ISO 8601 with milliseconds),
``level``, ``logger``, ``message`` and the event's fields, those of
:data:`FIELDS` that the call passed as ``extra``. The text format appends the
same fields as ``key=value``.

Connection and auth events carry the client's address, as :func:`address`
shows it: as is, or with ``--obfuscate-addresses`` a keyed hash (a random key
per process, as mumble-server's ``obfuscate``), the same for one address over
one run so its events can be followed, and useless to anyone who reads the log
afterwards. Nothing is logged per datagram.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from typing import Any

from relay.lograte import install as install_log_rate_limit

LOG_FORMATS = ("text", "json")
# The fields an event may carry (``extra=``), named once: the operator's log schema.
FIELDS = (
    "event",  # what happened: connect, auth, auth_refused, session_end, admin, reload
    "conn",  # the control connection's number
    "user_id",
    "user",  # the user's name ("name" is the logger's, in a LogRecord)
    "address",  # the client's address, as address() shows it
    "channel",
    "code",  # an error code sent (auth_refused), or why a session ended
    "action",  # the admin verb
    "detail",
)
_KEY = os.urandom(16)
_obfuscate = False


def address(ip: str) -> str:
    """``ip`` as the log shows it: as is, or a keyed hash if addresses are obfuscated."""
    if not _obfuscate:
        return ip
    return "h" + hashlib.blake2b(ip.encode(), key=_KEY, digest_size=6).hexdigest()


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: record.__dict__[k] for k in FIELDS if k in record.__dict__}


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...`` on one line."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = _fields(record)
        if extra:
            line += " " + " ".join(f"{k}={_text(v)}" for k, v in extra.items())
        return line.replace("\n", "\\n")


def _text(value: object) -> str:
    text = str(value)
    return repr(text) if not text or any(c in text for c in " =\"'\n") else text


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        t = time.gmtime(record.created)
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out |= _fields(record)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def configure_logging(level: str, fmt: str = "text", obfuscate: bool = False) -> None:
    """Log to stderr at ``level`` in ``fmt``, rate-limited (relay/lograte.py)."""
    global _obfuscate
    _obfuscate = obfuscate
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    install_log_rate_limit()  # under load, no log line per event


def set_level(level: str) -> None:
    """Change the level at run time (a reload)."""
    logging.getLogger().setLevel(level.upper())


def set_obfuscation(on: bool) -> None:
    global _obfuscate
    _obfuscate = on
