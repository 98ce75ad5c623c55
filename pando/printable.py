"""Text from the network made safe for a terminal.

A volunteer's name, error message or traceback could hold escape sequences
that retitle the window, clear the screen or write the clipboard. Before any
such text reaches stderr it goes through :func:`printable`.
"""
from __future__ import annotations

import re

# C0 controls but tab and newline, DEL, C1 controls, and the Unicode
# direction overrides that can make text read differently than it is.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str, limit: int = 200, multiline: bool = False) -> str:
    """``text`` with control characters shown as ``?`` and cut to ``limit`` characters.

    Line breaks survive only with ``multiline`` (tracebacks); a cut is marked
    with an ellipsis.
    """
    if len(text) > limit:
        text = text[:limit] + "…"
    if not multiline:
        text = text.replace("\n", "?")
    return _UNSAFE.sub("?", text)
