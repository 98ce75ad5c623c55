"""The lender: who holds which item, what to lend next, what to lend again.

Pure bookkeeping under one lock, no sockets and no threads of its own: the
reader adds items, the dispatcher asks for assignments, sessions report results,
errors and their own end. Every rule about lending lives here:

- a holder is a session with a capacity (its in-flight limit);
- re-lent items go before new ones, and among each kind the oldest goes first;
- a result counts only from the session that holds the item right now, so a
  late answer from a lost holder is dropped and no item is done twice;
- an item whose holders were lost ``max_losses`` times is failed, not re-lent;
- the root's own helper (a ``local`` holder) only gets items while no other
  holder is connected.
"""
from __future__ import annotations

import heapq
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Generic, Hashable, Iterable, TypeVar


@dataclass(frozen=True)
class Failure:
    """An item that will never have a result; ``details`` says why (often a traceback)."""

    id: int
    value: str
    details: str
    holder: str = ""


@dataclass
class _Holding:
    name: str
    capacity: int
    local: bool
    held: set[int] = field(default_factory=set)


#: A holder: anything hashable (the root's sessions; plain values in tests).
H = TypeVar("H", bound=Hashable)


class Lender(Generic[H]):
    """Thread-safe lending state for one run."""

    def __init__(self, max_losses: int = 3) -> None:
        self._cond = threading.Condition()
        self._max_losses = max_losses
        self._values: dict[int, str] = {}  # every item not yet done or failed
        self._fresh: deque[int] = deque()  # never lent, in input order
        self._again: list[int] = []  # heap of ids whose holder was lost
        self._losses: dict[int, int] = {}
        self._holders: dict[H, _Holding] = {}
        # Holders with room for more, in the order they got room: assigning
        # walks only these, not every holder, once per result.
        self._hungry: dict[H, None] = {}
        self._others = 0  # holders that are not local
        self._stop_after: int | None = None  # set by the first failure
        self._closed = False
        self._counts = {"lent": 0, "relent": 0, "done": 0, "failed": 0}

    # -- the reader's side -------------------------------------------------

    def add(self, items: Iterable[tuple[int, str]]) -> None:
        """New items from the input, ids increasing."""
        with self._cond:
            for item_id, value in items:
                self._values[item_id] = value
                self._fresh.append(item_id)
            self._cond.notify_all()

    # -- holders -----------------------------------------------------------

    def join(self, holder: H, capacity: int, *, name: str = "", local: bool = False) -> None:
        """A session starts holding items, at most ``capacity`` at a time."""
        with self._cond:
            if holder in self._holders:  # would silently drop what it holds
                raise ValueError(f"{holder!r} has already joined")
            self._holders[holder] = _Holding(name or str(holder), max(1, capacity), local)
            if not local:
                self._others += 1
                if self._others == 1:
                    self._recheck_locals()
            self._recheck(holder)
            self._cond.notify_all()

    def leave(self, holder: H, *, blame_items: bool = True) -> list[Failure]:
        """A session is gone: lend its items again; return those that ran out of holders.

        ``blame_items`` False (the session broke the protocol, say) lends the
        items again without counting the loss against them.
        """
        with self._cond:
            holding = self._holders.pop(holder, None)
            if holding is None:
                return []
            self._hungry.pop(holder, None)
            if not holding.local:
                self._others -= 1
                if self._others == 0:
                    self._recheck_locals()
            failures = []
            for item_id in sorted(holding.held):
                if not blame_items:
                    self._lend_again(item_id)
                elif (failure := self._lost(item_id, holding, "its volunteer disconnected")) is not None:
                    failures.append(failure)
            self._cond.notify_all()
            return failures

    def volunteers(self) -> int:
        """How many holders are not the root's own helper."""
        with self._cond:
            return self._others

    def holders(self) -> list[H]:
        """The sessions holding (or able to hold) items now."""
        with self._cond:
            return list(self._holders)

    # -- the dispatcher's side ---------------------------------------------

    def assign(self) -> list[tuple[H, list[tuple[int, str]]]]:
        """Fill every holder's free capacity; return what each one got (maybe nothing)."""
        with self._cond:
            return self._assign()

    def wait_assign(self, timeout: float) -> list[tuple[H, list[tuple[int, str]]]]:
        """Like :meth:`assign`, but wait up to ``timeout`` seconds for something to lend."""
        with self._cond:
            assignments = self._assign()
            if not assignments and not self._closed:
                self._cond.wait(timeout)
                assignments = self._assign()
            return assignments

    def close(self) -> None:
        """Wake any waiter for good; used at shutdown."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _assign(self) -> list[tuple[H, list[tuple[int, str]]]]:
        out: list[tuple[H, list[tuple[int, str]]]] = []
        for holder in list(self._hungry):
            if not self._again and not self._fresh:
                break
            holding = self._holders[holder]
            free = self._free(holding)
            items: list[tuple[int, str]] = []
            while free > 0:
                item_id = self._next()
                if item_id is None:
                    break
                holding.held.add(item_id)
                items.append((item_id, self._values[item_id]))
                free -= 1
            if items:
                out.append((holder, items))
                self._counts["lent"] += len(items)
            if free == 0:
                del self._hungry[holder]
        return out

    def _free(self, holding: _Holding) -> int:
        return 0 if holding.local and self._others else holding.capacity - len(holding.held)

    def _recheck(self, holder: H) -> None:
        """Keep ``_hungry`` true to a holder's room after its load or the local rule changed."""
        if self._free(self._holders[holder]) > 0:
            self._hungry.setdefault(holder, None)
        else:
            self._hungry.pop(holder, None)

    def _recheck_locals(self) -> None:
        for holder, holding in self._holders.items():
            if holding.local:
                self._recheck(holder)

    def _next(self) -> int | None:
        """The next id to lend: lost items first, then new ones; none past a failure."""
        limit = self._stop_after
        if self._again and (limit is None or self._again[0] <= limit):
            return heapq.heappop(self._again)
        if self._fresh and (limit is None or self._fresh[0] <= limit):
            return self._fresh.popleft()
        return None

    # -- sessions reporting ------------------------------------------------

    def complete(self, holder: H, results: Iterable[tuple[int, str]]) -> list[tuple[int, str]]:
        """Results from a session; return the ones accepted (held by it, not done before)."""
        accepted: list[tuple[int, str]] = []
        with self._cond:
            holding = self._holders.get(holder)
            if holding is None:
                return accepted
            held = holding.held
            for item_id, line in results:
                if item_id in held:
                    held.discard(item_id)
                    del self._values[item_id]
                    self._losses.pop(item_id, None)
                    accepted.append((item_id, line))
            if accepted:
                self._counts["done"] += len(accepted)
                self._recheck(holder)
                self._cond.notify_all()
        return accepted

    def fail(self, holder: H, item_id: int, details: str) -> Failure | None:
        """The function failed on an item: nothing after it is lent any more."""
        with self._cond:
            holding = self._release(holder, item_id)
            return None if holding is None else self._failed(item_id, details, holding.name)

    def lost(self, holder: H, item_id: int, reason: str) -> Failure | None:
        """A session lost one item's computation (a worker died): lend it again, or fail it."""
        with self._cond:
            holding = self._release(holder, item_id)
            return None if holding is None else self._lost(item_id, holding, reason)

    def _release(self, holder: H, item_id: int) -> _Holding | None:
        """Take an item from the session holding it; None if that session does not hold it."""
        holding = self._holders.get(holder)
        if holding is None or item_id not in holding.held:
            return None
        holding.held.discard(item_id)
        self._recheck(holder)
        self._cond.notify_all()
        return holding

    def _lost(self, item_id: int, holding: _Holding, reason: str) -> Failure | None:
        losses = self._losses.get(item_id, 0) + 1
        self._losses[item_id] = losses
        if losses >= self._max_losses:
            return self._failed(
                item_id, f"lost {losses} times; the last time {reason} ({holding.name})", holding.name
            )
        self._lend_again(item_id)
        return None

    def _lend_again(self, item_id: int) -> None:
        heapq.heappush(self._again, item_id)
        self._counts["relent"] += 1

    def _failed(self, item_id: int, details: str, holder: str) -> Failure:
        value = self._values.pop(item_id)
        self._losses.pop(item_id, None)
        self._counts["failed"] += 1
        if self._stop_after is None or item_id < self._stop_after:
            self._stop_after = item_id
        return Failure(item_id, value, details, holder)

    # -- views -------------------------------------------------------------

    def held(self, holder: H) -> set[int]:
        """A copy of the ids a session holds."""
        with self._cond:
            holding = self._holders.get(holder)
            return set(holding.held) if holding else set()

    def pending(self) -> int:
        """Items added and not yet done or failed."""
        with self._cond:
            return len(self._values)

    def counts(self) -> dict[str, int]:
        """Items lent (each time), lent again, done and failed so far."""
        with self._cond:
            return dict(self._counts)

    def held_counts(self) -> dict[H, int]:
        """How many items each session holds now."""
        with self._cond:
            return {holder: len(holding.held) for holder, holding in self._holders.items()}
