"""The reader: command-line items or stdin lines, numbered and handed to the lender.

Its thread takes room in the window before it reads on, so an endless input is
read only as fast as results are written. The thread is a daemon because a
blocking read of stdin cannot be interrupted; everything it holds is in the
lender, so nothing is lost when the process ends under it.

With a journal, the results it holds from an earlier run go straight to the
reorder buffer (the input items they belong to were checked and skipped before
the run started), and every new item's digest goes there too, so that its
result can be journaled.
"""
from __future__ import annotations

import sys
import threading
from typing import BinaryIO, Callable, Iterable, Iterator

from pando import status
from pando.journal import Journal, digest
from pando.lender import Lender
from pando.protocol import MAX_ITEM_BYTES
from pando.reorder import Reorder
from pando.session import dispatch
from pando.window import Window

READ_SIZE = 1 << 16
ARGV_BATCH = 1024


class InputError(status.PandoError):
    """An input line that cannot be an item."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status.BAD_INPUT)


def argv_batches(items: list[str]) -> Iterator[list[str]]:
    """Command-line items, checked to be text, in batches."""
    for position, item in enumerate(items, 1):
        try:
            item.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError(f"item argument {position} is not valid UTF-8") from None
    for start in range(0, len(items), ARGV_BATCH):
        yield items[start : start + ARGV_BATCH]


def stdin_unbuffered() -> BinaryIO:
    """Standard input without Python's buffer: a daemon thread blocked reading a
    buffered stream holds its lock, which the interpreter needs when it exits."""
    return open(sys.stdin.fileno(), "rb", buffering=0, closefd=False)


def stream_batches(stream: BinaryIO, max_bytes: int = MAX_ITEM_BYTES, separator: bytes = b"\n") -> Iterator[list[str]]:
    """The items of a binary stream, as soon as they arrive, in batches.

    Each item ends with ``separator``: a newline, and then ``\\r\\n`` ends a
    line too, or a NUL byte (``--null``), and then items are exact, newlines
    included. A last item without its separator still counts, and a final
    separator does not add an empty item. ``stream.read(n)`` must return what
    is there (at least a byte) rather than wait for ``n`` bytes: true of
    unbuffered files, pipes and in-memory streams.
    """
    done = 0  # items yielded so far
    partial: list[bytes] = []  # the start of an item whose end has not arrived
    partial_size = 0
    while chunk := stream.read(READ_SIZE):
        if separator not in chunk:
            partial.append(chunk)
            partial_size += len(chunk)
            if partial_size > max_bytes:
                raise InputError(f"{_noun(separator)} {done + 1} is longer than {max_bytes} bytes")
            continue
        data = b"".join(partial) + chunk if partial else chunk
        cut = data.rindex(separator)
        rest = data[cut + 1 :]
        partial, partial_size = ([rest], len(rest)) if rest else ([], 0)
        yield from _decode(data[:cut], done, max_bytes, separator)
        done += data.count(separator, 0, cut) + 1
    if partial:
        yield from _decode(b"".join(partial), done, max_bytes, separator)


def replay(journal: Journal, window: Window, reorder: Reorder) -> int:
    """Hand the journal's results for the first items to ``reorder``, as if computed; return how many.

    They take room in the window like any item (the reorder buffer gives it
    back as it writes them) and are not journaled again. Stops early if the
    reorder buffer does (stdout was closed, say): the room would never come.
    """
    count = 0
    for lines in journal.replay():
        if not window.take(len(lines), sum(map(len, lines)), reorder.done):
            break
        reorder.deliver(list(zip(range(count, count + len(lines)), lines)))
        count += len(lines)
    return count


def _noun(separator: bytes) -> str:
    """What the messages call an item of the input: a line, unless items end with NUL."""
    return "line" if separator == b"\n" else "item"


def _decode(block: bytes, done: int, max_bytes: int, separator: bytes) -> Iterator[list[str]]:
    """Complete items (without their last separator) from bytes to text; ``done`` items came before.

    At an item that is not UTF-8, the items before it are yielded first, then
    :class:`InputError` names it.
    """
    noun = _noun(separator)
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError as exc:
        item_start = block.rfind(separator, 0, exc.start) + 1
        if item_start:
            yield from _decode(block[: item_start - 1], done, max_bytes, separator)
        bad = done + block.count(separator, 0, exc.start) + 1
        raise InputError(
            f"{noun} {bad} is not valid UTF-8 (byte 0x{block[exc.start]:02x} at byte {exc.start - item_start + 1})"
        ) from None
    texts = text.split(separator.decode())
    if len(block) > max_bytes:
        for offset, item in enumerate(texts):
            if len(item.encode("utf-8")) > max_bytes:
                raise InputError(f"{noun} {done + offset + 1} is longer than {max_bytes} bytes")
    if separator == b"\n" and "\r" in text:
        texts = [line[:-1] if line.endswith("\r") else line for line in texts]
    yield texts


class Reader:
    """The reader thread: batches of item texts → ids → lender, and lent to whoever has room."""

    def __init__(
        self,
        batches: Iterable[list[str]],
        lender: Lender,
        window: Window,
        reorder: Reorder,
        log: Callable[[str], None] | None = None,
        journal: Journal | None = None,
    ) -> None:
        self._batches = batches
        self._journal = journal
        self._lender = lender
        self._window = window
        self._reorder = reorder
        self._log = log or (lambda text: print(text, file=sys.stderr, flush=True))
        self.count = 0
        #: The input error that ended reading early, if any.
        self.error: status.PandoError | None = None
        self._thread = threading.Thread(target=self._run, name="pando-reader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        # Any other exception is a bug: it escapes to the run's supervisor, and
        # the end of the input is never announced, so it cannot pass for one.
        journal = self._journal
        try:
            if journal is not None:
                self.count = replay(journal, self._window, self._reorder)
            for batch in self._batches:
                self._window.take(len(batch), sum(map(len, batch)))
                if journal is not None:  # before the lender has them: no result can come first
                    self._reorder.record(self.count, [digest(text) for text in batch])
                self._lender.add(zip(range(self.count, self.count + len(batch)), batch))
                dispatch(self._lender)
                self.count += len(batch)
        except status.PandoError as exc:  # an input line that is not an item, or a journal gone bad
            self._stop_early(exc, f"{exc}; stopping after the {self.count} items before it")
        except OSError as exc:
            error = InputError(f"cannot read the input: {exc}")
            self._stop_early(error, str(error))
        self._lender.end()
        dispatch(self._lender)  # idle workers may take copies of queued items now
        self._reorder.end(self.count)

    def _stop_early(self, error: status.PandoError, message: str) -> None:
        self.error = error
        self._log(f"pando: {message}")
