"""The widths of the unsigned integers on the wire, shared by the datagram and the messages."""

from __future__ import annotations

U16_MAX = 0xFFFF
U32_MAX = 0xFFFFFFFF
U64_MAX = 0xFFFFFFFFFFFFFFFF
