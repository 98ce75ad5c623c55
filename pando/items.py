"""Items in, result lines out: the text conventions shared by every runner.

An input item is one line of stdin or one command-line argument. A canonical
integer literal becomes ``int`` (never rounded, whatever its size) and a decimal
literal becomes ``float``; anything else stays ``str``; with ``--raw`` every
item stays ``str``. A result becomes one output line: ``str`` as is, numbers
with ``str()``, anything else as JSON.
"""
from __future__ import annotations

import json
import re
import sys
from typing import Any

#: Largest item or result, in UTF-8 bytes.
MAX_ITEM_BYTES = 8 * 1024 * 1024

_INT = re.compile(r"-?(?:0|[1-9][0-9]*)")
_FLOAT = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+(?:[eE][+-]?[0-9]+)?|[eE][+-]?[0-9]+)")


class ResultError(ValueError):
    """A function's result that cannot be written as one output line."""


def allow_big_integers() -> None:
    """Lift CPython's limit on int ↔ str conversion, so big integers round-trip.

    Runners call this once: items and results may be integers of any size.
    """
    if hasattr(sys, "set_int_max_str_digits"):
        sys.set_int_max_str_digits(0)


def parse(text: str) -> int | float | str:
    """The value of an item's text: ``"42"`` → 42, ``"2.5"`` → 2.5, ``"007"`` → ``"007"``."""
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    return text


def value(text: str, raw: bool) -> int | float | str:
    """What the function gets for an item: its text itself when ``raw`` (``--raw``), else :func:`parse` of it."""
    return text if raw else parse(text)


def format(result: Any) -> str:  # noqa: A001 - the module's verb, used as items.format
    """The output line of a result; :class:`ResultError` if it has no one-line form."""
    if isinstance(result, str):
        line = result
    elif isinstance(result, (int, float)) and not isinstance(result, bool):
        line = str(result)
    else:
        try:
            line = json.dumps(result, ensure_ascii=False, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise ResultError(f"result of type {type(result).__name__} cannot be written as JSON: {exc}") from None
    if "\n" in line or "\r" in line:
        raise ResultError("result contains a line break; return a single line (or a value written as JSON)")
    if line.isascii():
        size = len(line)
    else:
        try:
            size = len(line.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise ResultError(f"result is not valid Unicode text ({exc.reason} at character {exc.start})") from None
    if size > MAX_ITEM_BYTES:
        raise ResultError(f"result is larger than {MAX_ITEM_BYTES} bytes")
    return line
