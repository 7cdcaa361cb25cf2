"""How the inbox writes and reads an event's JSON payload, without trusting what it reads.

The receiver refuses bodies nested deeper than 16 levels (contract §5), but rows stored before that
rule, or written by hand, may hold anything. Reading them must never raise: ``json.loads`` recurses
once per level and a payload nested ~1,000 levels deep raises ``RecursionError`` (which once failed
the inbox sensor's every tick). :func:`decode_payload` therefore measures the nesting first, with a
linear scan that never recurses (:func:`json_depth`), and answers an error text instead of raising;
the inbox hands such an event out with that text as :attr:`~.base.InboxEvent.payload_error`, and the
applying job dead-letters it.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_STORED_DEPTH = 64
"""Deepest stored payload that is decoded; deeper ones are marked undecodable (the receiver admits 16)."""

_SPECIAL_BYTES = re.compile(rb'[\\"\[\]{}]')
_SPECIAL_TEXT = re.compile(r'[\\"\[\]{}]')
_OPEN = frozenset((ord("["), ord("{"), "[", "{"))
_CLOSE = frozenset((ord("]"), ord("}"), "]", "}"))
_QUOTE = frozenset((ord('"'), '"'))
_BACKSLASH = frozenset((ord("\\"), "\\"))


def json_depth(text: bytes | str, stop_above: int | None = None) -> int:
    """How deeply arrays and objects nest in the JSON ``text`` (``{}`` is 1, ``{"a": [1]}`` is 2).

    A linear scan over the structural characters, brackets inside strings (and escaped quotes)
    excluded; it never recurses, so any depth is safe to measure. With ``stop_above`` it returns as
    soon as the depth passes that value. Invalid JSON gets some number; the parser refuses it later.
    """
    opens = text.count(b"[") + text.count(b"{") if isinstance(text, bytes) else text.count("[") + text.count("{")
    if stop_above is not None and opens <= stop_above:
        return opens  # cannot be deeper than the number of openings: no scan needed
    pattern = _SPECIAL_BYTES if isinstance(text, bytes) else _SPECIAL_TEXT
    depth = deepest = 0
    in_string = False
    skip = -1  # the position right after a backslash inside a string: an escaped character
    for match in pattern.finditer(text):
        position = match.start()
        if position == skip:
            continue
        char = text[position]
        if in_string:
            if char in _BACKSLASH:
                skip = position + 1
            elif char in _QUOTE:
                in_string = False
        elif char in _QUOTE:
            in_string = True
        elif char in _OPEN:
            depth += 1
            if depth > deepest:
                deepest = depth
                if stop_above is not None and deepest > stop_above:
                    return deepest
        elif char in _CLOSE:
            depth -= 1
    return deepest


def payload_text(payload: dict) -> str:
    """The stored form of a payload: compact JSON text. ``json.dumps`` escapes control characters
    (NUL included), so the text is valid for PostgreSQL."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def decode_payload(stored: Any) -> tuple[dict, str | None]:
    """A stored payload as a dict, or ``({}, why)`` when it cannot be decoded; never raises."""
    if isinstance(stored, memoryview | bytes | bytearray):
        try:
            stored = bytes(stored).decode("utf-8")
        except UnicodeDecodeError:
            return {}, "stored payload is not UTF-8 text"
    if isinstance(stored, dict):
        return stored, None
    if not isinstance(stored, str):
        return {}, "stored payload is not JSON text"
    if json_depth(stored, stop_above=MAX_STORED_DEPTH) > MAX_STORED_DEPTH:
        return {}, f"stored payload is nested deeper than {MAX_STORED_DEPTH} levels"
    try:
        decoded = json.loads(stored)
    except (ValueError, RecursionError) as exc:
        return {}, f"stored payload is not valid JSON ({type(exc).__name__})"
    if not isinstance(decoded, dict):
        return {}, "stored payload is not a JSON object"
    return decoded, None
