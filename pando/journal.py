"""The journal: every accepted result, on disk before it reaches stdout, so a run can resume.

A journal is a UTF-8 text file, one line per result, in input order::

    # pando journal 1: item, sha256 of the item (16 hex digits), result; tab-separated
    1	6b86b273ff34fce1	1
    2	d4735e3a265e16ee	4

The item is its position in the input, from 1, as in Pando's messages; the
digest is the first 16 hex digits of the SHA-256 of the item's UTF-8 text; the
result is the output line, last because it may hold tabs (never a line break).
Only results that were written are journaled, and in the order they were
written, so a journal always holds a prefix of the run's output. A last line
without its newline (the root was killed while writing it) is ignored and cut
off before anything new is appended.

The reorder thread appends each group of newly written results and fsyncs the
journal, then writes the same lines to stdout: a line on stdout is always in
the journal first. Groups are at least :data:`GROUP_SECONDS` apart, so a flood
of small results costs a handful of fsyncs per second, not one per item.

On ``--resume``, :meth:`Journal.skip_done` reads the input items the journal
already has results for, checking each against its digest, before anything is
written; :meth:`Journal.replay` then gives those results back for the output.
"""
from __future__ import annotations

import fcntl
import hashlib
import itertools
import os
import re
import threading
import time
from typing import Iterable, Iterator, NamedTuple

from pando import status

VERSION = 1
HEADER = f"# pando journal {VERSION}: item, sha256 of the item (16 hex digits), result; tab-separated\n".encode()
#: What every version's first line starts with, to tell an old or new journal from another file.
_MAGIC = b"# pando journal "
#: Shortest time between two fsyncs: the longest a written result waits for the next ones to share its fsync.
GROUP_SECONDS = 0.01
#: Results handed back at a time by :meth:`Journal.replay`.
REPLAY_GROUP = 1024
_ENTRY = re.compile(rb"([1-9][0-9]*)\t([0-9a-f]{16})\t([^\n]*)")
_CHUNK = 1 << 16


def digest(text: str) -> str:
    """The journal's digest of an item: the first 16 hex digits of the SHA-256 of its UTF-8 text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class Entry(NamedTuple):  # a tuple: the reorder thread makes one per result
    """One journaled result: the item's id (its position from 0), its digest, the output line."""

    id: int
    digest: str
    result: str


def encode(entries: Iterable[Entry]) -> bytes:
    """The entries' lines in the file, newlines included."""
    return "".join([f"{entry.id + 1}\t{entry.digest}\t{entry.result}\n" for entry in entries]).encode("utf-8")


class JournalError(status.PandoError):
    """A journal that cannot be used (status 2) or written (status 1)."""


def parse(line: bytes) -> Entry:
    """An entry from its line (without the newline); ValueError if the line is not one."""
    match = _ENTRY.fullmatch(line)
    if match is None:
        raise ValueError("not an entry (item, digest and result separated by tabs)")
    number, item_digest, result = match.groups()
    return Entry(int(number) - 1, item_digest.decode("ascii"), result.decode("utf-8"))


def read(path: str) -> list[Entry]:
    """Every complete entry of a journal file; a truncated last line (or header) is ignored.

    Raises JournalError if the file is not a journal or a complete line is not an entry.
    """
    with open(path, "rb") as stream:
        first = stream.readline(_CHUNK)
        if not first.endswith(b"\n") and HEADER.startswith(first):  # cut short while it was made
            return []
        _check_header(path, first)
        return [_parse_line(path, line_no, line) for line_no, line in _lines(stream, 2)]


def _lines(stream: Iterable[bytes], first_line_no: int) -> Iterator[tuple[int, bytes]]:
    """Numbered complete lines, without their newline; stops before a line that has none."""
    for line_no, line in enumerate(stream, first_line_no):
        if not line.endswith(b"\n"):
            return
        yield line_no, line[:-1]


def _parse_line(path: str, line_no: int, line: bytes) -> Entry:
    try:
        return parse(line)
    except ValueError as exc:
        raise JournalError(f"{path} is damaged at line {line_no}: {exc}") from None


def _check_header(path: str, first_line: bytes) -> None:
    if first_line == HEADER:
        return
    if first_line.startswith(_MAGIC):
        version = first_line[len(_MAGIC):].split(b":")[0].decode("utf-8", "replace")[:20]
        if version != str(VERSION):
            raise JournalError(f"{path} is a journal of format {version!r}; this pando reads format {VERSION}")
        raise JournalError(f"{path} is damaged at line 1: not the header {HEADER[:-1].decode()!r}")
    raise JournalError(f"{path} is not a pando journal (its first line is not {HEADER[:-1].decode()!r}); "
                       "not touching it")


class Journal:
    """An open journal: results of earlier runs to resume from, and the place for new ones.

    The file stays locked while it is open, so two runs never write one journal.
    """

    def __init__(self, path: str, fd: int, end: int) -> None:
        self.path = path
        self._fd = fd
        self._end = end  # just after the last complete line from earlier runs
        #: Items whose results come from the journal (known after :meth:`skip_done`).
        self.done = 0
        self._synced = float("-inf")  # monotonic time of the last fsync
        # A write never meets a closed (or worse, reused) descriptor, even from a thread the run gave up waiting for.
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: str, resume: bool) -> Journal:
        """Open or create the journal at ``path``; JournalError (status 2) if it cannot be used.

        A file that holds results is only taken with ``resume``; a file that is
        not a journal is never touched. A missing or empty file, or one with
        just a header, starts a new journal (also with ``resume``).
        """
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise JournalError(f"cannot open the journal {path}: {exc.strerror or exc}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise JournalError(f"{path} is in use by another pando run") from None
            end = cls._prepare(path, fd, resume)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, end)

    @staticmethod
    def _prepare(path: str, fd: int, resume: bool) -> int:
        """Check the file and cut what cannot be kept; return where earlier entries end."""
        try:
            size = os.fstat(fd).st_size
            head = os.pread(fd, len(HEADER), 0)
            if head == HEADER and size == len(HEADER):
                return size
            # Empty, or cut short while it was made (long enough to be surely ours): a new journal.
            if size < len(HEADER) and HEADER.startswith(head) and (not head or head.startswith(_MAGIC)):
                os.ftruncate(fd, 0)
                _write_all(fd, HEADER)
                os.fsync(fd)
                _sync_directory(path)  # the file's name must survive a crash too
                return len(HEADER)
            newline = os.pread(fd, _CHUNK, 0).find(b"\n")
            _check_header(path, os.pread(fd, newline + 1, 0) if newline >= 0 else head)
            end = _after_last_newline(fd, size)
            if not resume and end > len(HEADER):
                raise JournalError(f"{path} already holds results: pass --resume to continue from them, "
                                   "or remove it to start again")
            if end < size:  # a line cut short when the last run was killed: never append to it
                os.ftruncate(fd, end)
                os.fsync(fd)
            return end
        except OSError as exc:
            raise JournalError(f"cannot use the journal {path}: {exc.strerror or exc}") from None

    # -- resuming ----------------------------------------------------------

    def _entries(self) -> Iterator[tuple[int, Entry]]:
        """The earlier runs' entries with their line numbers, checked to be items 1, 2, 3…"""
        with open(self.path, "rb") as stream:
            stream.seek(len(HEADER))
            lines = _lines(_bounded(stream, self._end - len(HEADER)), 2)
            for position, (line_no, line) in enumerate(lines):
                entry = _parse_line(self.path, line_no, line)
                if entry.id != position:
                    raise JournalError(f"{self.path} is damaged at line {line_no}: "
                                       f"item {entry.id + 1} where item {position + 1} was expected")
                yield line_no, entry

    def skip_done(self, batches: Iterable[list[str]]) -> Iterator[list[str]]:
        """Read the input items the journal has results for, and return the rest of the input.

        Every such item must match its digest, or JournalError (status 2) says
        which one differs, before any result is written. :attr:`done` tells
        how many items are skipped. An input error among them is raised by the
        returned batches, after the items before it, like any input error.
        """
        if self._end == len(HEADER):  # nothing to skip: read no input before the run starts
            return iter(batches)
        entries = self._entries()
        source = iter(batches)
        position = 0
        try:
            for batch in source:
                for offset, text in enumerate(batch):
                    found = next(entries, None)
                    if found is None:  # the journal ends here: the rest is new
                        self.done = position
                        return itertools.chain([batch[offset:]], source)
                    if digest(text) != found[1].digest:
                        raise JournalError(f"{self.path} was written for other input "
                                           f"(item {position + 1} differs; see line {found[0]})")
                    position += 1
        except JournalError:
            raise
        except status.PandoError as exc:  # an unreadable input line: results before it still count
            self.done = position
            return _raise(exc)
        if next(entries, None) is not None:
            raise JournalError(f"{self.path} was written for other input "
                               f"(it has results for more items than the input's {position})")
        self.done = position
        return iter(())

    def replay(self) -> Iterator[list[str]]:
        """The results of the :attr:`done` items, in input order, in groups."""
        lines = (entry.result for _, entry in self._entries())
        remaining = self.done
        while remaining:
            group = list(itertools.islice(lines, min(remaining, REPLAY_GROUP)))
            if not group:
                raise JournalError(f"{self.path} changed while pando was reading it", status.FAILED)
            remaining -= len(group)
            yield group

    # -- recording ---------------------------------------------------------

    def next_sync(self) -> float:
        """The monotonic time from which another group may be written (see :data:`GROUP_SECONDS`)."""
        return self._synced + GROUP_SECONDS

    def write(self, entries: Iterable[Entry]) -> None:
        """Append entries and fsync them; JournalError (status 1) if the file refuses."""
        data = encode(entries)
        if not data:
            return
        try:
            with self._lock:
                if self._fd < 0:
                    raise OSError("the journal is closed")
                _write_all(self._fd, data)
                os.fsync(self._fd)
        except OSError as exc:
            raise JournalError(f"cannot write the journal {self.path}: {exc.strerror or exc}",
                               status.FAILED) from None
        self._synced = time.monotonic()

    def close(self) -> None:
        """Close the file (and release its lock)."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _raise(error: Exception) -> Iterator[list[str]]:
    raise error
    yield  # a generator: the error comes when the batches are read, not now


def _bounded(stream: Iterable[bytes], size: int) -> Iterator[bytes]:
    """Lines of ``stream`` within its next ``size`` bytes (the file may have grown since)."""
    for line in stream:
        if size <= 0:
            return
        if len(line) > size:
            yield line[:size]
            return
        size -= len(line)
        yield line


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _after_last_newline(fd: int, size: int) -> int:
    """The offset just after the file's last newline (0 if it has none)."""
    end = size
    while end > 0:
        start = max(0, end - _CHUNK)
        found = os.pread(fd, end - start, start).rfind(b"\n")
        if found >= 0:
            return start + found + 1
        end = start
    return 0


def _sync_directory(path: str) -> None:
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
