"""The window: how many items may be read but not yet written.

The reader takes room before it hands items on and the reorder buffer gives it
back as it writes them, so memory stays bounded on an endless input however far
one slow volunteer holds the output back.
"""
from __future__ import annotations

import threading


class Window:
    """A counting bound shared by the reader (:meth:`take`) and the writer (:meth:`give`)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._used = 0
        self._cond = threading.Condition()

    def take(self, count: int) -> None:
        """Wait until the window is not full, then count ``count`` more items in it.

        A batch may overshoot the size by its own length: the bound is what
        matters, not its exact value.
        """
        with self._cond:
            while self._used >= self.size:
                self._cond.wait()
            self._used += count

    def give(self, count: int) -> None:
        """``count`` items were written."""
        with self._cond:
            self._used -= count
            self._cond.notify_all()

    @property
    def used(self) -> int:
        with self._cond:
            return self._used
