"""Trust on first use for relay certificates, as SSH and Mumble do it.

The first time a client reaches a relay (``host:port``) it pins the SHA-256
fingerprint of the certificate the relay showed; later it accepts that relay only
with the same certificate. A changed certificate is refused with a message that
shows both fingerprints; the user replaces the pin on purpose (the UI asks,
the CLI takes ``--accept-new-certificate``).

A relay the client is connected to over a pinned certificate may vouch for the other
relays of its cluster (``welcome.relays``, SPEC.md "Several relays"): their fingerprints
are pinned as if they had been seen (:meth:`PinFile.vouch`), but a pin already there is
never replaced by one a relay vouched for.

The decision (:func:`verdict`) is a function of the pins and the fingerprint; the
file (:class:`PinFile`, JSON, written whole with mode 0600) is a thin adapter. A file
that is there but cannot be read as pins fails closed (:class:`PinsUnreadable`): taken
as no pins, it would trust any certificate as new and, on the first pin, be written
over with the user's other pins lost.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

PINS_FILE = "known_relays.json"
CERTIFICATE_CHANGED = "changed: pinned"  # in the refusal's message, for the UI to recognise


def default_pins_path() -> Path:
    """``$XDG_CONFIG_HOME/voicechat/known_relays.json`` (``~/.config/...``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "voicechat" / PINS_FILE


class Trust(enum.Enum):
    NEW = "new"  # never seen: pin it and go on
    PINNED = "pinned"  # the pinned certificate: go on
    CHANGED = "changed"  # another certificate than the pinned one: refuse


@dataclass(frozen=True, slots=True)
class Verdict:
    trust: Trust
    pinned: str | None  # the fingerprint pinned before, if any

    def message(self, server: str, shown: str) -> str:
        """What to tell the user about a CHANGED certificate."""
        return (
            f"the certificate of {server} {CERTIFICATE_CHANGED} {self.pinned}, now shown {shown}. "
            "Someone may be intercepting the connection, or the relay got a new "
            "certificate; accept the new one only if its operator confirms it"
        )


def pin_key(host: str, port: int) -> str:
    """The key a relay is pinned under: ``host:port`` (an IPv6 host without brackets)."""
    return f"{host}:{port}"


def verdict(pins: dict[str, str], server: str, shown: str) -> Verdict:
    """What to do with a relay ``server`` showing the certificate fingerprint ``shown``."""
    pinned = pins.get(server)
    if pinned is None:
        return Verdict(Trust.NEW, None)
    return Verdict(Trust.PINNED if pinned == shown else Trust.CHANGED, pinned)


class PinsUnreadable(ValueError):
    """The pins file exists but is not pins: no certificate can be checked until the
    user fixes or removes it (the message says which file and why)."""


class PinFile:
    """The pins kept in a JSON file: ``{"host:port": "AB:CD:..."}``."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else default_pins_path()

    def load(self) -> dict[str, str]:
        """The pins; none if the file does not exist. PinsUnreadable if it exists but
        cannot be read as a JSON object of strings (never taken as no pins)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:  # ValueError: not UTF-8
            raise self._unreadable(str(exc)) from None
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise self._unreadable(f"not JSON: {exc}") from None
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()
        ):
            raise self._unreadable("not an object of addresses and fingerprints")
        return data

    def _unreadable(self, why: str) -> PinsUnreadable:
        return PinsUnreadable(
            f"the pinned certificates in {self.path} cannot be read ({why}): fix or "
            "remove that file; until then no relay's certificate can be checked"
        )

    def pin(self, server: str, fingerprint: str) -> None:
        """Pin (or re-pin) ``server`` to ``fingerprint``, writing the file whole
        (PinsUnreadable, and nothing written, if the file there is not pins)."""
        pins = self.load()
        pins[server] = fingerprint
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".pins-")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(pins, f, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def vouch(self, server: str, fingerprint: str) -> Verdict:
        """Another relay vouched that ``server`` shows ``fingerprint``: pinned if ``server``
        has no pin yet (NEW); a pin there already is kept (PINNED, or CHANGED: the caller
        tells the user that the two disagree)."""
        v = verdict(self.load(), server, fingerprint)
        if v.trust is Trust.NEW:
            self.pin(server, fingerprint)
        return v

    def check(self, server: str, shown: str, accept_changed: bool = False) -> Verdict:
        """The verdict for ``server``; a NEW one is pinned now, and a CHANGED one too
        if ``accept_changed`` (the user said so)."""
        v = verdict(self.load(), server, shown)
        if v.trust is Trust.NEW or (v.trust is Trust.CHANGED and accept_changed):
            self.pin(server, shown)
        return v
