"""relay/names.py: name rules, the TR39 skeleton, chat cleaning, the name book."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.names import (
    BAD_NAME,
    MAX_MARKS,
    NameBook,
    NameRefused,
    clean_chat,
    normalize_name,
    skeleton,
)
from relay.protocol.errors import ProtocolError
from relay.protocol.messages import MAX_NAME

CYRILLIC_A = "\u0430"
GREEK_OMICRON = "\u03bf"


def test_plain_names_pass_unchanged() -> None:
    for name in ("alice", "Bob Smith", "Zoë", "李小龍", "محمد", "Ñandú-2", "a" * MAX_NAME):
        assert normalize_name(name) == name


def test_nfc_and_spaces() -> None:
    assert normalize_name("Zoe\u0308") == "Zoë"  # a combining diaeresis composes
    assert normalize_name("  bob   smith ") == "bob smith"
    assert normalize_name("bob\u00a0\u3000smith") == "bob smith"  # any space is one U+0020


@pytest.mark.parametrize(
    "name",
    [
        "alice\u200b",  # zero width space
        "\ufeffalice",  # BOM
        "al\u202eecila",  # right-to-left override
        "al\u2066ice\u2069",  # isolates
        "alice\u200e",  # left-to-right mark
        "ali\u200dce",  # zero width joiner
        "ali\u00adce",  # soft hyphen
        "alice\x07",
        "alice\t",
        "al\nice",
        "alice\x7f",
        "alice\x85",  # C1 control
        "alice\u2028",  # line separator
        "alice\ue000",  # private use
        "alice\U000e0041",  # tag character
        "alice\u3164",  # Hangul filler: draws nothing
        "alice\ufe0f",  # variation selector
        "alice\u2800",  # blank braille pattern
        "a" + "\u0334" * (MAX_MARKS + 1),  # "Zalgo" (a mark NFC cannot compose away)
    ],
)
def test_refused_characters(name: str) -> None:
    with pytest.raises(NameRefused) as err:
        normalize_name(name)
    assert err.value.code == BAD_NAME


def test_empty_and_too_long_after_normalising() -> None:
    for name in ("", "   ", "\u3000"):
        with pytest.raises(NameRefused, match="empty"):
            normalize_name(name)
    # U+0958 has no composed form: NFC makes it two code points, 32 of them 64.
    with pytest.raises(NameRefused, match="at most"):
        normalize_name("\u0958" * MAX_NAME)


def test_skeleton_catches_look_alikes() -> None:
    alice = skeleton("alice")
    assert skeleton(CYRILLIC_A + "lice") == alice
    assert skeleton("aIice") == alice  # capital I for l
    assert skeleton("a1ice") == alice
    assert skeleton("b" + GREEK_OMICRON + "b") == skeleton("bob")
    assert skeleton("rn") == skeleton("m")
    assert skeleton("Zoe\u0308") == skeleton("Zoë")
    assert skeleton("Alice") != alice  # case is not confusable in TR39
    assert skeleton("alice2") != alice


def test_skeleton_is_idempotent_on_its_table() -> None:
    for ch in map(chr, range(0x20, 0x3000)):
        once = skeleton(ch)
        assert skeleton(once) == once


def test_name_book_suffixes_look_alikes() -> None:
    book = NameBook()
    assert book.claim("alice") == "alice"
    assert book.claim(CYRILLIC_A + "lice") == CYRILLIC_A + "lice-2"
    assert book.claim("alice") == "alice-3"
    assert "aIice" in book and "carol" not in book
    with pytest.raises(NameRefused):
        book.claim("alice\u200b")
    book.release("alice")
    assert book.claim("alice") == "alice"  # free again
    book.release("nobody")  # a name not held: nothing happens
    assert book.names() == {"alice", CYRILLIC_A + "lice-2", "alice-3"}


def test_name_book_cuts_long_names_for_the_suffix() -> None:
    book = NameBook()
    long = "x" * MAX_NAME
    assert book.claim(long) == long
    assert book.claim(long) == "x" * (MAX_NAME - 2) + "-2"


def test_release_of_a_look_alike_keeps_the_original() -> None:
    book = NameBook()
    book.claim("alice")
    book.release(CYRILLIC_A + "lice")  # never granted: must not free "alice"
    assert "alice" in book


def test_chat_loses_overrides_and_invisibles_keeps_text() -> None:
    assert clean_chat("hello\u202e dlrow") == "hello dlrow"
    assert clean_chat("\ufeffhi\u200b there\x85\u2028") == "hi there"
    assert clean_chat("line one\n\tline two") == "line one\n\tline two"
    assert clean_chat("\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645") == (
        "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"  # Persian needs its ZWNJ
    )
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    assert clean_chat(family) == family  # emoji sequences keep their joiners
    assert clean_chat("cafe\u0301") == "café"


@given(st.text(max_size=64))
def test_fuzz_any_string_is_a_valid_name_or_our_error(raw: str) -> None:
    try:
        name = normalize_name(raw)
    except ProtocolError as exc:
        assert isinstance(exc, NameRefused) and exc.code == BAD_NAME
        return
    assert 0 < len(name) <= MAX_NAME and name == name.strip()
    assert unicodedata.is_normalized("NFC", name)
    assert not any(unicodedata.category(c) in ("Cc", "Cf") for c in name)
    assert normalize_name(name) == name  # a granted name is stable


@given(st.lists(st.text(min_size=1, max_size=40), max_size=20))
def test_fuzz_name_book_never_grants_two_look_alikes(raws: list[str]) -> None:
    book = NameBook()
    granted = []
    for raw in raws:
        try:
            granted.append(book.claim(raw))
        except NameRefused:
            continue
    assert len({skeleton(n) for n in granted}) == len(granted)
    assert all(len(n) <= MAX_NAME for n in granted)


@given(st.text(max_size=200))
def test_fuzz_chat_keeps_no_format_or_control_but_tab_newline(text: str) -> None:
    out = clean_chat(text)
    for c in out:
        cat = unicodedata.category(c)
        assert c in "\t\n\u200c\u200d" or cat not in ("Cc", "Cf", "Zl", "Zp")
    assert clean_chat(out) == out
