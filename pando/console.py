"""Pando's stderr: messages for people, and at most one live progress line under them.

The progress line is the terminal's last line, with the cursor at its end: any
other text written to that terminal (a message, or results when stdout is the
same terminal) must take it away first and draw it again after, or it would
continue the progress line.
"""
from __future__ import annotations

import io
import logging
import shutil
import sys
import threading
from contextlib import contextmanager
from typing import Iterator, TextIO

_CLEAR = "\r\x1b[K"


class Console:
    """Writes messages; keeps a progress line (terminals only) redrawn below them."""

    def __init__(self, stream: TextIO | None = None, live: bool = False) -> None:
        self._stream = stream or sys.stderr
        #: True on a terminal (and not --quiet): progress line and QR code.
        self.live = live
        self._shown = ""
        self._lock = threading.Lock()

    def log(self, text: str) -> None:
        """A message on a line of its own (the progress line moves below it)."""
        with self._lock:
            self._stream.write(f"{_CLEAR if self._shown else ''}{text}\n{self._shown}")
            self._stream.flush()

    def progress(self, text: str) -> None:
        """Replace the progress line, cut to the terminal's width; nothing unless live."""
        if not self.live:
            return
        text = text[: max(10, shutil.get_terminal_size().columns - 1)]
        with self._lock:
            self._shown = text
            self._stream.write(_CLEAR + text)
            self._stream.flush()

    def clear(self) -> None:
        """Remove the progress line."""
        with self._lock:
            if self._shown:
                self._stream.write(_CLEAR)
                self._stream.flush()
                self._shown = ""

    @contextmanager
    def aside(self) -> Iterator[None]:
        """Take the progress line away while the caller writes whole lines to the same terminal; then redraw it."""
        with self._lock:
            if self._shown:
                self._stream.write(_CLEAR)
                self._stream.flush()
            try:
                yield
            finally:
                if self._shown:
                    self._stream.write(self._shown)
                    self._stream.flush()

    def qr_code(self, url: str) -> None:
        """Draw ``url`` as a QR code, so a phone can join by pointing its camera; terminals only."""
        if not self.live:
            return
        import segno  # here: only a live terminal draws one, and a run's start waits for its import (~30 ms)

        drawing = io.StringIO()
        segno.make(url, micro=False).terminal(out=drawing, compact=True)
        self.log(drawing.getvalue().rstrip("\n"))


class ConsoleHandler(logging.Handler):
    """Sends log records through a Console, so they never garble the progress line."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self._console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._console.log(self.format(record))
        except Exception:  # noqa: BLE001 - logging must never break the run
            self.handleError(record)
