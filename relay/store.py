"""What the relay keeps across restarts, in SQLite: channels, bans, run-time settings.

One file (``database`` in the configuration), opened at start-up in write-ahead
logging mode. Opening it checks it (``PRAGMA quick_check``) and writes to it, so
a corrupt, foreign or unwritable file is a :class:`StoreError` at start-up, with
one line saying what to do, and never a surprise later. Every change is its own
transaction, committed before the caller goes on; the relay writes only on the
operator's actions, never per session or per datagram, so the loop's thread
does the writing itself.

Tables (schema version :data:`SCHEMA_VERSION`, kept in ``PRAGMA user_version``):

* ``channel(position, name, description, max_users)``: the channels the
  operator created at run time, in order (those of the configuration file are
  the file's, and are not stored);
* ``ban(id, address, name, reason, created, expires)``: times are Unix seconds,
  ``expires`` NULL for ever;
* ``setting(key, value)``: configuration keys set at run time, the value as JSON.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from relay.bans import Ban
from relay.protocol.messages import ChannelInfo

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS channel (
    position INTEGER NOT NULL,
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    max_users INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS ban (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    address TEXT NOT NULL DEFAULT '',
    name TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    expires REAL
);
CREATE TABLE IF NOT EXISTS setting (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


class StoreError(Exception):
    """The database cannot be used; ``str()`` is one line naming the file."""


class Store:
    """The relay's database at ``path``; a context manager, or call :meth:`close`."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open the database: {exc}") from None
        try:
            self._open()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StoreError(self._explain(exc)) from None

    def _open(self) -> None:
        db = self._db
        (check,) = db.execute("PRAGMA quick_check").fetchone()
        if check != "ok":
            raise sqlite3.DatabaseError(f"integrity check failed: {check}")
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"schema version {version} is newer than this relay's {SCHEMA_VERSION}"
            )
        (mode,) = db.execute("PRAGMA journal_mode=WAL").fetchone()
        if mode != "wal":
            raise sqlite3.DatabaseError(f"cannot use write-ahead logging (journal mode {mode})")
        db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at each checkpoint, never torn
        db.execute("PRAGMA foreign_keys=ON")
        db.executescript(_SCHEMA)  # IF NOT EXISTS: a no-op on a current database
        with self._tx():  # a write at start-up: an unwritable file fails here, not later
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _explain(self, exc: sqlite3.DatabaseError) -> str:
        text = str(exc)
        if "not a database" in text or "malformed" in text or "integrity" in text:
            return (
                f"{self.path}: not a relay database, or corrupt ({text}); "
                "restore a backup, or move it away to start with an empty one"
            )
        if "readonly" in text or "unable to open" in text or "disk I/O" in text:
            return f"{self.path}: cannot write the database ({text}); check its permissions"
        return f"{self.path}: {text}"

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        try:
            with self._tx():
                return self._db.execute(sql, args)
        except sqlite3.DatabaseError as exc:
            raise StoreError(self._explain(exc)) from None

    # --- channels ----------------------------------------------------------------------

    def channels(self) -> list[ChannelInfo]:
        rows = self._db.execute(
            "SELECT name, description, max_users FROM channel ORDER BY position, name"
        )
        return [ChannelInfo(name, desc, limit) for name, desc, limit in rows]

    def save_channels(self, channels: list[ChannelInfo]) -> None:
        """Make the stored channels exactly ``channels``, in that order, in one transaction."""
        try:
            with self._tx():
                self._db.execute("DELETE FROM channel")
                self._db.executemany(
                    "INSERT INTO channel (position, name, description, max_users) "
                    "VALUES (?, ?, ?, ?)",
                    [(i, c.name, c.description, c.max_users) for i, c in enumerate(channels)],
                )
        except sqlite3.DatabaseError as exc:
            raise StoreError(self._explain(exc)) from None

    # --- bans --------------------------------------------------------------------------

    def bans(self) -> list[Ban]:
        rows = self._db.execute(
            "SELECT id, address, name, reason, created, expires FROM ban ORDER BY id"
        )
        return [Ban(*row) for row in rows]

    def add_ban(
        self, address: str, name: str, reason: str, created: float, expires: float | None
    ) -> Ban:
        """Store a new ban; returns it with its id."""
        cur = self._write(
            "INSERT INTO ban (address, name, reason, created, expires) VALUES (?, ?, ?, ?, ?)",
            (address, name, reason, created, expires),
        )
        assert cur.lastrowid is not None
        return Ban(cur.lastrowid, address, name, reason, created, expires)

    def remove_ban(self, ban_id: int) -> bool:
        return self._write("DELETE FROM ban WHERE id = ?", (ban_id,)).rowcount > 0

    # --- settings ------------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self._db.execute("SELECT key, value FROM setting")}

    def set_setting(self, key: str, value: Any) -> None:
        self._write(
            "INSERT INTO setting (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, json.dumps(value)),
        )

    def clear_setting(self, key: str) -> bool:
        return self._write("DELETE FROM setting WHERE key = ?", (key,)).rowcount > 0


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` on an exception."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, *rest: object) -> None:
        self._db.execute("ROLLBACK" if kind is not None else "COMMIT")
