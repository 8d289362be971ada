"""What a user name and a chat text may hold, and when two names look the same: sans-I/O.

The wire schema already bounds a name (1..32 characters, no C0 control but tab
and newline); these are the rules on top of it, so that one user cannot pass
for another (issue 18: with ``alice`` present, ``alice\\u200b`` and
``\\u0430lice`` (a Cyrillic a) were both granted) and no text can reorder or
hide what the others' screens show (right-to-left overrides, the "Trojan
Source" trick).

Names:

* NFC-normalised, trimmed, and every run of spaces (any Unicode space) one
  U+0020;
* refused, with :data:`BAD_NAME`, if they hold a control (Cc, tab and newline
  included), a format character (Cf: zero-width space and joiners, BOM, bidi
  marks, embeddings, overrides and isolates), a line or paragraph separator, a
  surrogate, a private-use or an unassigned code point, an invisible filler
  (:data:`INVISIBLE`), more than :data:`MAX_MARKS` combining marks on one
  character, or are empty or over ``MAX_NAME`` characters once normalised;
* compared by their TR39 skeleton (:func:`skeleton`): a name whose skeleton is
  a present user's is taken, whatever its code points.

Chat: NFC, and controls but tab and newline, format characters but the zero
width (non-)joiner (Persian and Indic text and emoji sequences need them; they
cannot reorder text) and line or paragraph separators are removed; the rest
goes through as sent.
"""

from __future__ import annotations

import unicodedata

from relay.confusables_table import PAIRS
from relay.protocol.errors import ProtocolError
from relay.protocol.messages import MAX_NAME

BAD_NAME = "bad_name"  # the error code of every refused name
MAX_MARKS = 4  # combining marks on one character: enough for any script, not for "Zalgo"
REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# Default-ignorable or blank code points outside Cf: they draw nothing, so
# "alice" + one of them would look like "alice".
INVISIBLE = frozenset(
    {0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180B, 0x180C, 0x180D, 0x180F, 0x2800, 0x3164}
    | set(range(0xFE00, 0xFE10))  # variation selectors
    | {0xFFA0}
    | set(range(0xE0100, 0xE01F0))  # variation selectors supplement
)
CHAT_KEPT_FORMAT = frozenset({"\u200c", "\u200d"})  # zero width non-joiner, joiner

_PROTOTYPE: dict[str, str] = {}
for _item in "".join(PAIRS).split():
    _src, _proto = _item.split("=")
    _PROTOTYPE[chr(int(_src, 16))] = "".join(chr(int(c, 16)) for c in _proto.split("."))


class NameRefused(ProtocolError):
    """A name that breaks a rule above; the message says which character and why."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code=BAD_NAME)


def _describe(ch: str) -> str:
    return f"U+{ord(ch):04X} ({unicodedata.name(ch, 'unnamed')})"


def normalize_name(raw: str) -> str:
    """The name ``raw`` stands for, or :class:`NameRefused` saying why there is none."""
    name = unicodedata.normalize("NFC", raw)
    marks = 0
    for ch in name:
        cat = unicodedata.category(ch)
        if cat in REFUSED_CATEGORIES or ord(ch) in INVISIBLE:
            kind = "a control" if cat == "Cc" else "an invisible or formatting"
            raise NameRefused(f"name holds {_describe(ch)}: {kind} character is not allowed")
        marks = marks + 1 if cat[0] == "M" else 0
        if marks > MAX_MARKS:
            raise NameRefused(f"name stacks more than {MAX_MARKS} marks on one character")
    # Only spaces are whitespace by now: one U+0020 wherever there were any.
    name = " ".join(name.split())
    if not name:
        raise NameRefused("name is empty")
    if len(name) > MAX_NAME:
        raise NameRefused(f"name is {len(name)} characters once normalised; at most {MAX_NAME}")
    return name


def skeleton(name: str) -> str:
    """The TR39 skeleton: NFD, each code point replaced by its prototype, NFD again.

    Two names look alike exactly when their skeletons are equal (``\\u0430lice``,
    with a Cyrillic a, and ``alice``; ``rn`` and ``m``; ``I``, ``l`` and ``1``).
    Case is kept: ``Alice`` and ``alice`` are told apart, as TR39 does.
    """
    decomposed = unicodedata.normalize("NFD", name)
    return unicodedata.normalize("NFD", "".join([_PROTOTYPE.get(c, c) for c in decomposed]))


def clean_chat(text: str) -> str:
    """``text`` without the characters that hide or reorder what others see, in NFC.

    Removed first and normalised after: a character removed from between a letter
    and its accent lets the two compose, so the result is NFC and stable.
    """
    kept = "".join(
        [
            ch
            for ch in text
            if ch in "\t\n"
            or ch in CHAT_KEPT_FORMAT
            or unicodedata.category(ch) not in ("Cc", "Cf", "Zl", "Zp")
        ]
    )
    return unicodedata.normalize("NFC", kept)


class NameBook:
    """The names in use, by skeleton: what the session table asks before granting one."""

    def __init__(self) -> None:
        self._by_skeleton: dict[str, str] = {}

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and skeleton(name) in self._by_skeleton

    def names(self) -> set[str]:
        return set(self._by_skeleton.values())

    def claim(self, raw: str) -> str:
        """Normalise ``raw`` and take it, or its first free ``-2``, ``-3``... form.

        A name that looks like one in use is handled as an exact duplicate always
        was: the newcomer gets a suffix, so no two users ever look the same on
        screen, and nobody is turned away for a name that someone else holds.
        Raises :class:`NameRefused` for a name the rules refuse.
        """
        name = normalize_name(raw)
        n = 2
        candidate = name
        while skeleton(candidate) in self._by_skeleton:
            suffix = f"-{n}"
            candidate = name[: MAX_NAME - len(suffix)] + suffix
            n += 1
        self._by_skeleton[skeleton(candidate)] = candidate
        return candidate

    def release(self, name: str) -> None:
        """``name`` (as :meth:`claim` returned it) is free again."""
        key = skeleton(name)
        if self._by_skeleton.get(key) == name:
            del self._by_skeleton[key]
