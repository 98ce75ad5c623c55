"""The window: how much may be read but not yet written, in items and in bytes.

The reader takes room before it hands items on and the reorder buffer gives it
back as it writes them, so memory stays bounded on an endless input however far
one slow volunteer holds the output back. Bytes count the items' text and the
results that wait in the reorder buffer for an earlier one.
"""
from __future__ import annotations

import threading
from collections import deque


class Window:
    """A bound shared by the reader (:meth:`take`) and the writer (:meth:`give`, :meth:`waiting`)."""

    def __init__(self, items: int, size: int) -> None:
        self.items = items
        self.size = size
        self._items = 0
        self._bytes = 0
        self._waiting = 0  # bytes of results waiting to be written
        # Taken batches as [items left unwritten, bytes]: items are written in
        # input order, so the oldest batch is the first to be given back.
        self._batches: deque[list[int]] = deque()
        self._cond = threading.Condition()

    def take(self, count: int, size: int, cancel: threading.Event | None = None) -> bool:
        """Wait until the window is not full, then count a batch of ``count`` items of ``size`` bytes.

        A batch may overshoot the bounds by its own size: the bound is what
        matters, not its exact value. Once ``cancel`` is set (the writer has
        ended, say), take nothing and return False, waiting or not.
        """
        with self._cond:
            while True:
                if cancel is not None and cancel.is_set():
                    return False
                if self._items < self.items and self._bytes + self._waiting < self.size:
                    break
                self._cond.wait(None if cancel is None else 0.1)
            self._items += count
            self._bytes += size
            self._batches.append([count, size])
            return True

    def give(self, count: int) -> None:
        """``count`` more items were written; a batch's bytes come back with its last item."""
        with self._cond:
            self._items -= count
            while count and self._batches:
                batch = self._batches[0]
                used = min(count, batch[0])
                batch[0] -= used
                count -= used
                if batch[0] == 0:
                    self._bytes -= batch[1]
                    self._batches.popleft()
            self._cond.notify_all()

    def waiting(self, size: int) -> None:
        """Results of ``size`` bytes in all wait for an earlier item now."""
        with self._cond:
            self._waiting = size
            self._cond.notify_all()

    @property
    def used(self) -> int:
        """Items read and not yet written."""
        with self._cond:
            return self._items
