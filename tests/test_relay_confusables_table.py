"""relay/confusables_table.py: the generated prototype table parses and is a fixed point."""

from __future__ import annotations

import unicodedata

from relay.confusables_table import PAIRS


def table() -> dict[str, str]:
    out = {}
    for item in "".join(PAIRS).split():
        src, proto = item.split("=")
        out[chr(int(src, 16))] = "".join(chr(int(c, 16)) for c in proto.split("."))
    return out


def test_well_formed_and_one_pass_is_enough() -> None:
    t = table()
    assert len(t) > 5000
    for src, proto in t.items():
        assert len(src) == 1 and proto and proto != src
        assert unicodedata.category(src) not in ("Cc", "Cf")
        assert unicodedata.is_normalized("NFD", proto)
        assert all(t.get(c, c) == c for c in proto)  # prototypes map to themselves


def test_known_prototypes() -> None:
    t = table()
    assert t["\u0430"] == "a"  # Cyrillic a
    assert t["\u03bf"] == "o"  # Greek omicron
    assert t["1"] == t["I"] == t["|"] == "l"
    assert t["0"] == "O"
    assert t["m"] == "rn"
    assert "a" not in t and "l" not in t
