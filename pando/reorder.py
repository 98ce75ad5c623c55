"""The reorder buffer: results come in any order and leave in input order.

One thread owns stdout. Results and failures arrive through a queue; the
thread writes every result whose predecessors are all written, gives the room
back to the window, and stops (closing the results' stream) at the end of the
input, at the first failed item (after writing everything before it), or when
stdout is closed.

Results that come within :data:`WRITE_SECONDS` of the last write wait to share
the next. With a journal, the thread appends each group's new results to it
and fsyncs it before it writes the same lines to stdout; results that come
within :data:`pando.journal.GROUP_SECONDS` of the last fsync wait to share the
next.
"""
from __future__ import annotations

import contextlib
import queue
import sys
import threading
import time
from dataclasses import dataclass
from typing import BinaryIO, Callable, ContextManager, Union

from pando import status
from pando.journal import Entry, Journal
from pando.lender import Failure
from pando.printable import printable
from pando.window import Window

#: Longest failure text shown (a traceback), in characters.
MAX_DETAILS = 20_000
#: Shortest time between two writes to stdout: results gather in between.
WRITE_SECONDS = 0.002


@dataclass(frozen=True)
class _Record:
    """Items from ``first`` on whose results go into the journal, with their digests."""

    first: int
    digests: list[str]


_Message = Union[list[tuple[int, Union[str, Failure]]], int, _Record, None]


def describe_failure(failure: Failure) -> str:
    """The stderr text for a failed item: its position, value, holder and details."""
    value = failure.value if len(failure.value) <= 200 else failure.value[:200] + "…"
    where = f" on {failure.holder}" if failure.holder else ""
    # The details may come from a volunteer: no escape sequences reach the terminal.
    text = printable(failure.details, MAX_DETAILS, multiline=True)
    details = "\n".join("  " + line for line in text.splitlines())
    return f"pando: item {failure.id + 1} (value {value!r}) failed{where}:\n{details}"


def summarize_failure(failure: Failure) -> str:
    """One line for a failed item, as the monitoring page shows how the run ended: the details' last line."""
    value = failure.value if len(failure.value) <= 60 else failure.value[:60] + "…"
    where = f" on {failure.holder}" if failure.holder else ""
    lines = [line for line in failure.details.splitlines() if line.strip()]
    last = printable(lines[-1].strip(), 300) if lines else "no details"
    return f"item {failure.id + 1} (value {value!r}) failed{where}: {last}"


class Reorder:
    """Writes results to ``out`` in input order, from its own thread.

    Each write of results happens within ``aside()``: on a terminal that also
    shows the progress line, :meth:`pando.console.Console.aside`.
    """

    def __init__(
        self, out: BinaryIO, window: Window, log: Callable[[str], None] | None = None, journal: Journal | None = None,
        aside: Callable[[], ContextManager[None]] = contextlib.nullcontext,
    ) -> None:
        self._out = out
        self._aside = aside
        self._window = window
        self._journal = journal
        self._digests: dict[int, str] = {}  # items to journal, until their result is written
        self._log = log or (lambda text: print(text, file=sys.stderr, flush=True))
        self._queue: queue.SimpleQueue[_Message] = queue.SimpleQueue()
        self._waiting: dict[int, Union[str, Failure]] = {}
        self._waiting_bytes = 0  # the text of the results in _waiting
        self._total: int | None = None
        self._written_at = 0.0  # time.monotonic() of the last write
        self.written = 0
        #: Set when the thread has stopped; :attr:`status` then says why.
        self.done = threading.Event()
        self.status = status.OK
        #: Why :attr:`status` is not OK, in one line ("" while it is).
        self.failure = ""
        self._thread = threading.Thread(target=self._run, name="pando-reorder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def deliver(self, results: list[tuple[int, str]]) -> None:
        """Results accepted by the lender."""
        self._queue.put(results)  # type: ignore[arg-type]

    def record(self, first: int, digests: list[str]) -> None:
        """Journal the results of items ``first``, ``first + 1``… (with these digests) when they are written.

        Called before the items can have results; items never recorded (the
        ones replayed from the journal) are written without being journaled again.
        """
        self._queue.put(_Record(first, digests))

    def fail(self, failure: Failure) -> None:
        """An item that will never have a result."""
        self._queue.put([(failure.id, failure)])

    def end(self, total: int) -> None:
        """The input held ``total`` items."""
        self._queue.put(total)

    def stop(self) -> None:
        """Stop without waiting for the remaining results (Ctrl-C, shutdown)."""
        self._queue.put(None)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            while self._step():
                pass
            # Whoever reads the results sees their end now, not after the run's teardown: saying
            # bye to volunteers (one that stopped reading holds its socket for seconds) and to
            # monitoring pages.
            self._out.close()
        except BrokenPipeError:
            self.status, self.failure = status.BROKEN_PIPE, "the results' reader closed the pipe"
        except status.PandoError as exc:  # the journal cannot be written: nothing more may reach stdout
            self._log(f"pando: {exc}")
            self.status, self.failure = exc.status, str(exc)
        except OSError as exc:  # a full disk, a device that refuses: the results are not all written
            self.failure = f"cannot write results: {exc.strerror or exc}"
            self._log(f"pando: {self.failure}")
            self.status = status.FAILED
        self.done.set()  # not on a crash: the supervisor ends the run then

    def _step(self) -> bool:
        """Take every queued message, write what is ready; False when finished."""
        message = self._queue.get()
        # Results that come soon after a write wait a moment for the next one, with the ones behind
        # them: on a busy stream this thread wakes once per WRITE_SECONDS, not once per result frame.
        due = self._written_at + WRITE_SECONDS
        if self._journal is not None:
            due = max(due, self._journal.next_sync())
        wait = due - time.monotonic()
        if wait > 0 and message is not None:
            time.sleep(wait)
        while True:
            if message is None:
                return False
            if isinstance(message, int):
                self._total = message
            elif isinstance(message, _Record):
                self._digests.update(zip(range(message.first, message.first + len(message.digests)), message.digests))
            else:
                for item_id, entry in message:
                    self._waiting[item_id] = entry
                    if isinstance(entry, str):
                        self._waiting_bytes += len(entry)
            try:
                message = self._queue.get_nowait()
            except queue.Empty:
                break
        self._written_at = time.monotonic()
        first = self.written
        lines, failure = self._ready()
        if lines:
            if self._journal is not None:
                self._journal.write(self._entries(first, lines))
            self._waiting_bytes -= sum(map(len, lines))
            lines.append("")  # for the last newline
            with self._aside():  # written and flushed while the progress line is away
                # Strict: every line was checked to be UTF-8 text where it was made.
                self._out.write("\n".join(lines).encode("utf-8"))
                self._window.give(len(lines) - 1)  # before the flush, which may wait on a slow reader
                self._out.flush()
        self._window.waiting(self._waiting_bytes)
        if failure is not None:
            self._log(describe_failure(failure))
            self.status, self.failure = status.FAILED, summarize_failure(failure)
            return False
        return self._total is None or self.written < self._total

    def _entries(self, first: int, lines: list[str]) -> list[Entry]:
        """Journal entries for the recorded items among the lines from ``first`` on."""
        entries = []
        for item_id, line in enumerate(lines, first):
            item_digest = self._digests.pop(item_id, None)
            if item_digest is not None:
                entries.append(Entry(item_id, item_digest, line))
        return entries

    def _ready(self) -> tuple[list[str], Failure | None]:
        lines: list[str] = []
        waiting = self._waiting
        while self.written in waiting:
            entry = waiting.pop(self.written)
            if isinstance(entry, Failure):
                return lines, entry
            lines.append(entry)
            self.written += 1
        return lines, None
