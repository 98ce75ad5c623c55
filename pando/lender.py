"""The lender: who holds which item, what to lend next, what to lend again.

Pure bookkeeping under one lock, no sockets and no threads of its own: the
reader adds items, sessions report results, errors and their own end, the
dispatcher sweeps for leases that ran too long; whoever changed something then
asks for the assignments it made possible (:meth:`assign`) and lends them, so a
session refills itself from its own thread. Every rule about lending lives here:

- a holder is a session with a capacity (its in-flight limit) and workers;
  every copy it holds has a lease, the time it was lent;
- while there are fewer items to lend than room for them, every holder first
  gets one item per idle worker, and only then items to queue: slow items are
  never piled on one holder while another one's workers idle;
- items that need another copy go before new ones, and among each kind the
  oldest goes first;
- a result counts only from a session that holds a live copy of the item, so a
  late answer from a lost holder is dropped and no item is done twice;
- an item whose holders were lost ``max_losses`` times is failed, not re-lent;
  a lease older than ``timeout`` counts as such a loss; a holder that vanishes
  costs a loss only to the items it could have been computing (the first of
  its items, one per worker, in the order it got them): those queued behind
  them go back without blame, however many a holder queues;
- an item whose function raised is tried again ``retries`` times, on other
  holders when there are, before it fails with every attempt's details;
- with ``verify`` K > 1, K distinct holders compute each item, and a result is
  accepted once K of them agree and they are a strict majority of the answers;
- a straggler, whose lease is well past the typical item time, gets one extra
  copy on another holder with room (:meth:`sweep`); the first accepted answer
  wins;
- once the input has ended (:meth:`end`) and nothing is left to lend, a worker
  that idles gets an extra copy of an item queued behind another holder's
  running ones, as a straggler would: a job's last items never wait in one
  queue while workers elsewhere have nothing to do;
- a copy that lost its item (done elsewhere, or taken back) stays counted
  against its holder until that holder answers for it: a holder stuck on an
  item gets no more work behind it;
- the root's own helper (a ``local`` holder) only gets items while no other
  holder is connected.
"""
from __future__ import annotations

import heapq
import itertools
import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Generic, Hashable, Iterable, Iterator, TypeVar


@dataclass(frozen=True)
class Failure:
    """An item that will never have a result; ``details`` says why (often a traceback)."""

    id: int
    value: str
    details: str
    holder: str = ""


#: A holder: anything hashable (the root's sessions; plain values in tests).
H = TypeVar("H", bound=Hashable)


@dataclass
class Outcome(Generic[H]):
    """What a batch of results did: lines accepted, items failed (no agreement), and the
    holders whose answer lost a vote, with the item."""

    accepted: list[tuple[int, str]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    losers: list[tuple[H, str, int]] = field(default_factory=list)


@dataclass
class _Holding:
    name: str
    capacity: int
    workers: int
    local: bool
    held: dict[int, float] = field(default_factory=dict)  # item id -> lease start (copies, live or stale)


def _running(holding: _Holding) -> Iterator[int]:
    """The items a holder may be computing now: it computes them in the order it got them, one per
    worker, so only its first ``workers``; the others wait in its queue."""
    return itertools.islice(holding.held, holding.workers)


class _Item(Generic[H]):
    """The lending state of an item lent at least once. Only ``copies`` is made for every
    such item, the rest for the few that need it: the hot path lends and completes hundreds
    of thousands of items a second, and never-lent items are bare strings (no objects for
    the garbage collector to walk)."""

    __slots__ = ("copies", "tried", "losses", "errors", "failed_on", "votes", "wanted", "queued")

    def __init__(self, wanted: int) -> None:
        self.copies: set[H] = set()  # holders with a live copy
        self.tried: set[H] | None = None  # every holder ever lent it (kept under --verify only)
        self.losses = 0
        self.errors: list[str] | None = None  # one text per failed attempt
        self.failed_on: set[H] | None = None
        self.votes: dict[str, list[tuple[H, str]]] | None = None  # line -> (holder, name), under --verify
        self.wanted = wanted  # copies it needs: answers to come plus live copies
        self.queued = False  # in the heap of items that want another copy

    def votes_cast(self) -> int:
        return sum(map(len, self.votes.values())) if self.votes else 0


#: Lost holders (or timeouts) after which an item fails instead of being lent again.
MAX_LOSSES = 3
#: Seconds a lease lasts beyond what --timeout allows the items queued on a holder.
LEASE_GRACE = 1.0
#: Item times kept for the running median.
_SAMPLES = 256
#: A straggler's lease is this many times the median item time, at least.
STRAGGLER_FACTOR = 3.0
#: Items looked at, at most, to find one a holder may take (verification, retries).
_SCAN = 64


class Lender(Generic[H]):
    """Thread-safe lending state for one run."""

    def __init__(
        self,
        max_losses: int = MAX_LOSSES,
        retries: int = 0,
        verify: int = 1,
        timeout: float | None = None,
        straggler_floor: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        halt_on_failure: bool = True,
    ) -> None:
        self._lock = threading.Lock()
        self._max_losses = max_losses
        self._retries = retries
        self._verify = verify
        self._timeout = timeout
        self._straggler_floor = straggler_floor
        # The root stops lending past a failed item; a relay passes failures up and lets the root decide.
        self._halt_on_failure = halt_on_failure
        self._clock = clock
        self._values: dict[int, str] = {}  # every item not yet done or failed, in input order
        self._items: dict[int, _Item[H]] = {}  # those of them lent at least once
        self._fresh: deque[int] = deque()  # never lent, in input order
        self._again: list[int] = []  # heap of ids that want another copy
        self._durations: deque[float] = deque(maxlen=_SAMPLES)
        self._holders: dict[H, _Holding] = {}
        # Holders with room for more, in the order they got room: assigning
        # walks only these, not every holder, once per result.
        self._hungry: dict[H, None] = {}
        # Holders with a worker that has nothing to do: those the last items are shared with.
        self._idle: dict[H, None] = {}
        self._others = 0  # holders that are not local
        self._stop_after: int | None = None  # set by the first failure
        self._ended = False  # no more items will be added
        # Queued items that may get an extra copy at the end of the input, the one that would start
        # the latest last; built when needed, again only after more was lent (see _share_queued).
        self._tail: list[tuple[int, int, H]] = []
        self._tail_built: int | None = None  # the lent count when _tail was built
        self._counts = {"lent": 0, "relent": 0, "done": 0, "failed": 0, "speculative": 0, "timed_out": 0,
                        "retried": 0, "disagreements": 0}

    # -- the reader's side -------------------------------------------------

    def add(self, items: Iterable[tuple[int, str]]) -> None:
        """New items from the input, ids increasing."""
        with self._lock:
            for item_id, value in items:
                self._values[item_id] = value
                self._fresh.append(item_id)

    def end(self) -> None:
        """No more items will be added: idle workers may now take copies of queued items."""
        with self._lock:
            self._ended = True

    # -- holders -----------------------------------------------------------

    def join(self, holder: H, capacity: int, *, workers: int | None = None, name: str = "",
             local: bool = False) -> None:
        """A session starts holding items, at most ``capacity`` at a time, computed by ``workers``
        (default: as many as its capacity)."""
        with self._lock:
            if holder in self._holders:  # would silently drop what it holds
                raise ValueError(f"{holder!r} has already joined")
            capacity = max(1, capacity)
            self._holders[holder] = _Holding(name or str(holder), capacity, max(1, workers or capacity), local)
            if not local:
                self._others += 1
                if self._others == 1:
                    self._recheck_locals()
            self._recheck(holder)

    def leave(self, holder: H, *, blame_items: bool = True) -> list[Failure]:
        """A session is gone: lend its items again; return those that ran out of holders.

        The loss counts against the items it could have been computing;
        ``blame_items`` False (the session broke the protocol, say) lends every
        item again without counting the loss against it.
        """
        with self._lock:
            holding = self._holders.pop(holder, None)
            if holding is None:
                return []
            self._hungry.pop(holder, None)
            self._idle.pop(holder, None)
            if not holding.local:
                self._others -= 1
                if self._others == 0:
                    self._recheck_locals()
            failures = []
            running = set(_running(holding)) if blame_items else set()
            for item_id in sorted(holding.held):
                item = self._items.get(item_id)
                if item is None or holder not in item.copies:
                    continue  # a stale copy: nothing to give back
                item.copies.discard(holder)
                if item_id not in running:
                    self._want_again(item_id, item)
                elif (failure := self._lost(item_id, item, holding.name, "its volunteer disconnected")) is not None:
                    failures.append(failure)
            return failures

    def resize(self, holder: H, capacity: int, workers: int | None = None) -> None:
        """A holder may now hold ``capacity`` items (a relay whose subtree changed, a volunteer that
        asked for more or fewer), with ``workers`` if given; nothing is taken back."""
        with self._lock:
            holding = self._holders.get(holder)
            if holding is None:
                return
            holding.capacity = max(1, capacity)
            if workers is not None:
                holding.workers = max(1, workers)
            self._recheck(holder)

    def clear(self) -> None:
        """Forget every item (a relay's lease from its parent is void); holders stay, holding nothing.

        Answers still coming for the old items are dropped, as for any item not held.
        """
        with self._lock:
            self._values.clear()
            self._items.clear()
            self._fresh.clear()
            self._again.clear()
            self._stop_after = None
            for holder, holding in self._holders.items():
                holding.held.clear()
                self._recheck(holder)

    def volunteers(self) -> int:
        """How many holders are not the root's own helper: a hint read without the lock (every lend
        frame asks, and a thousand sessions' threads queueing on the lock for it cost more than the
        count being a frame late)."""
        return self._others

    def holders(self) -> list[H]:
        """The sessions holding (or able to hold) items now."""
        with self._lock:
            return list(self._holders)

    # -- lending ------------------------------------------------------------

    def assign(self) -> list[tuple[H, list[tuple[int, str]]]]:
        """Fill every holder's free capacity; return what each one got (nothing listed for the others).

        Called after any change that may make room or items: the lender wakes nobody itself.
        """
        with self._lock:
            return self._assign()

    def sweep(self) -> list[Failure]:
        """Take back copies older than the timeout (a loss each) and give stragglers an extra copy.

        Called by the dispatcher a few times per heartbeat; returns the items
        that failed for having timed out once too often.
        """
        with self._lock:
            now = self._clock()
            failures = self._expire(now) if self._timeout is not None else []
            self._speculate(now)
            return failures

    def _assign(self) -> list[tuple[H, list[tuple[int, str]]]]:
        out: dict[H, list[tuple[int, str]]] = {}
        if not self._again and not self._fresh and not (self._ended and self._share_queued()):
            return []
        now = self._clock()
        if self._room_exceeds(len(self._again) + len(self._fresh)):
            # Fewer items than room: one per idle worker first, everywhere, then the rest.
            for holder in list(self._idle):
                holding = self._holders[holder]
                idle = self._idle_workers(holding)
                if idle > 0:
                    self._fill(holder, holding, idle, now, out)
                    if not self._again and not self._fresh:
                        return list(out.items())
        for holder in list(self._hungry):
            if not self._again and not self._fresh:
                break
            holding = self._holders[holder]
            if self._fill(holder, holding, self._free(holding), now, out) == 0:
                del self._hungry[holder]
        return list(out.items())

    def _fill(self, holder: H, holding: _Holding, free: int, now: float,
              out: dict[H, list[tuple[int, str]]]) -> int:
        """Lend ``holder`` up to ``free`` items into ``out``; the room left.

        Counted down per item lent, not recomputed: an id a relay's parent lent
        twice may go to a holder that has it already, and counts all the same.
        """
        items = out.setdefault(holder, [])
        lent_before = len(items)
        while free > 0:
            if not self._again and self._fresh and self._stop_after is None:
                item_id = self._fresh.popleft()  # the usual case, without the general rules
                if item_id not in self._values:
                    continue  # done meanwhile: a relay's parent lent it twice, and a first copy answered
            elif (next_id := self._next(holder)) is not None:
                item_id = next_id
            else:
                break
            item = self._items.get(item_id)
            if item is None:
                item = self._items[item_id] = _Item(self._verify)
            item.copies.add(holder)
            holding.held[item_id] = now
            items.append((item_id, self._values[item_id]))
            if item.wanted > 1:  # verification or a straggler's copy: the next copy goes to someone else
                if self._verify > 1:
                    item.tried = item.tried or set()
                    item.tried.add(holder)
                if self._wants(item) > 0:
                    self._queue(item_id, item)
            free -= 1
        if len(holding.held) >= holding.workers:
            self._idle.pop(holder, None)
        self._counts["lent"] += len(items) - lent_before
        if not items:
            del out[holder]
        return free

    def _room_exceeds(self, count: int) -> bool:
        """Whether the holders have room for more than ``count`` items; it stops counting once they
        do (at the end of a run a thousand holders may be hungry for a few items)."""
        room = 0
        for holder in self._hungry:
            room += self._free(self._holders[holder])
            if room > count:
                return True
        return False

    def _idle_workers(self, holding: _Holding) -> int:
        """Workers of a holder with nothing to do that it may be lent an item for now."""
        return min(self._free(holding), holding.workers - len(holding.held))

    def _free(self, holding: _Holding) -> int:
        return 0 if holding.local and self._others else holding.capacity - len(holding.held)

    def _recheck(self, holder: H) -> None:
        """Keep ``_hungry`` and ``_idle`` true to a holder's room and load after either or the local
        rule changed."""
        holding = self._holders[holder]
        if len(holding.held) < holding.workers:
            self._idle.setdefault(holder, None)
        else:
            self._idle.pop(holder, None)
        if self._free(holding) > 0:
            self._hungry.setdefault(holder, None)
        else:
            self._hungry.pop(holder, None)

    def _recheck_locals(self) -> None:
        for holder, holding in self._holders.items():
            if holding.local:
                self._recheck(holder)

    def _next(self, holder: H) -> int | None:
        """The next id for ``holder``: items wanting another copy first, then new ones; none past a failure."""
        limit = self._stop_after
        if self._again and (limit is None or self._again[0] <= limit):
            skipped: list[int] = []
            found = None
            while self._again and len(skipped) < _SCAN:
                item_id = heapq.heappop(self._again)
                item = self._items.get(item_id)
                if item is None or not item.queued or self._wants(item) <= 0:
                    if item is not None:
                        item.queued = False
                    continue  # done, failed, or satisfied meanwhile
                if limit is not None and item_id > limit:
                    skipped.append(item_id)
                    break
                if self._may_take(holder, item):
                    found = item_id
                    if self._wants(item) <= 1:
                        item.queued = False
                    else:
                        skipped.append(item_id)  # it wants more copies than this one
                    break
                skipped.append(item_id)
            for item_id in skipped:
                heapq.heappush(self._again, item_id)
            if found is not None:
                return found
        if self._fresh and (limit is None or self._fresh[0] <= limit):
            return self._fresh.popleft()
        return None

    def _may_take(self, holder: H, item: _Item[H]) -> bool:
        """Another copy goes to a holder without one; with verification, to one that never answered it;
        after an error, to one it did not fail on, unless every holder did."""
        if holder in item.copies:
            return False
        if item.tried is not None and holder in item.tried:
            return False
        if item.failed_on is not None and holder in item.failed_on:
            return all(other in item.failed_on for other in self._holders)
        return True

    def _wants(self, item: _Item[H]) -> int:
        """How many more copies an item needs lent now."""
        return item.wanted - len(item.copies) - (item.votes_cast() if item.votes else 0)

    def _queue(self, item_id: int, item: _Item[H]) -> None:
        if not item.queued:
            item.queued = True
            heapq.heappush(self._again, item_id)

    def _want_again(self, item_id: int, item: _Item[H]) -> None:
        """An item lost or failed a copy: lend it again if it now wants one."""
        if self._wants(item) > 0:
            self._queue(item_id, item)
            self._counts["relent"] += 1

    # -- leases ------------------------------------------------------------

    def _leases(self, before: Callable[[_Holding], float]) -> list[tuple[float, int, H]]:
        """Live copies lent before ``before(holding)``, the oldest first (at most every holder's capacity)."""
        found = []
        for holder, holding in self._holders.items():
            limit = before(holding)
            for item_id, started in holding.held.items():
                item = self._items.get(item_id)
                if started < limit and item is not None and holder in item.copies:
                    found.append((started, item_id, holder))
        return sorted(found, key=lambda lease: lease[:2])

    def _lease_limit(self, holding: _Holding) -> float:
        """How long a copy may stay with a holder under ``timeout``.

        A holder computes its items per worker one after another: an item may
        wait that many timeouts before it is done, and the volunteer, which
        times each item from its start, should be the one to act first.
        """
        assert self._timeout is not None
        return self._timeout * -(-holding.capacity // holding.workers) + LEASE_GRACE

    def _expire(self, now: float) -> list[Failure]:
        assert self._timeout is not None
        failures = []
        for _, item_id, holder in self._leases(lambda holding: now - self._lease_limit(holding)):
            item = self._items.get(item_id)
            if item is None:
                continue  # failed just now, through another copy
            holding = self._holders[holder]
            # The copy stays counted against its holder (stale) until it answers:
            # a holder stuck on an item gets nothing more to be stuck behind.
            item.copies.discard(holder)
            self._counts["timed_out"] += 1
            reason = (f"it was unanswered {self._lease_limit(holding):g} s after it was lent "
                      f"(--timeout {self._timeout:g} s)")
            if (failure := self._lost(item_id, item, holding.name, reason)) is not None:
                failures.append(failure)
        return failures

    def _speculate(self, now: float) -> None:
        """An extra copy for items whose copies are all far older than usual.

        The oldest unfinished item holds the whole output back: its copy is
        queued at once, and since copies go before new items, the next holder
        with room takes it, however busy everyone is with new items. Other
        stragglers get theirs only when holders have room and nothing new to do.
        """
        if self._again or not self._values:
            return
        limit = now - self._straggler_limit()
        head = next(iter(self._values))  # ids are added in order: the oldest
        candidates = [head]
        if self._hungry and not self._fresh:
            candidates += [item_id for _, item_id, _ in self._leases(lambda _: limit) if item_id != head]
        room = max(1, len(self._hungry))
        for item_id in candidates:
            item = self._items.get(item_id)
            if room == 0:
                break
            if item is None or not self._straggling(item_id, item, limit):
                continue
            item.wanted += 1
            self._queue(item_id, item)
            self._counts["speculative"] += 1
            room -= 1

    def _share_queued(self) -> bool:
        """At the end of the input, queue an extra copy of items waiting behind a holder's running
        ones, one per worker that idles elsewhere; True if any.

        Without it, the last items may sit in one volunteer's queue for as long
        as its running items take, while other workers have nothing left to do.
        Past a holder's running items (:func:`_running`), the later an item was
        lent, the later it starts (the earliest may even be done already, their
        answers waiting at the volunteer to share a frame). So the copies go to the
        items that would start the latest, from a list made once for the end of
        the run: a thousand holders going idle one after another must not each
        cost a look at every holder.
        """
        if not self._idle:
            return False
        if not self._tail and self._tail_built != self._counts["lent"]:
            self._tail = self._tail_candidates()
            self._tail_built = self._counts["lent"]
        if not self._tail:
            return False
        idle = sum(map(self._idle_workers, map(self._holders.__getitem__, self._idle)))
        shared = 0
        while self._tail and shared < idle:
            _, item_id, holder = self._tail.pop()
            item = self._items.get(item_id)
            if item is None or holder not in item.copies or not self._shareable(item_id, item):
                continue  # done, taken back, or given its extra copy meanwhile
            if item_id in _running(self._holders[holder]):
                continue  # its holder runs it now: the items before it are done
            item.wanted += 1
            self._queue(item_id, item)
            self._counts["speculative"] += 1
            shared += 1
        return shared > 0

    def _tail_candidates(self) -> list[tuple[int, int, H]]:
        """Every queued item that may get an extra copy, by the turn it would start at on its holder:
        the latest last."""
        found = []
        for holder, holding in self._holders.items():
            for position, item_id in enumerate(holding.held):
                item = self._items.get(item_id)
                if position >= holding.workers and item is not None and self._shareable(item_id, item):
                    found.append((position // holding.workers, item_id, holder))
        found.sort(key=lambda candidate: candidate[0])
        return found

    def _shareable(self, item_id: int, item: _Item[H]) -> bool:
        """Not given its extra copy yet, and not past a failure (nothing past one is lent)."""
        if item.wanted > self._verify or item.queued:
            return False
        return self._stop_after is None or item_id <= self._stop_after

    def _straggling(self, item_id: int, item: _Item[H], limit: float) -> bool:
        """Lent before ``limit`` to every holder it has, and not yet given its extra copy."""
        if not item.copies or not self._shareable(item_id, item):
            return False
        return all(self._holders[holder].held[item_id] < limit for holder in item.copies)

    def _straggler_limit(self) -> float:
        typical = statistics.median(self._durations) if self._durations else 0.0
        return max(STRAGGLER_FACTOR * typical, self._straggler_floor)

    # -- sessions reporting ------------------------------------------------

    def complete(self, holder: H, results: Iterable[tuple[int, str]], capacity: int | None = None) -> Outcome[H]:
        """Results from a session: the lines accepted (held by it, not done before), the items
        that failed for want of agreement, and the holders outvoted; ``capacity``: what it may hold
        from now on, as :meth:`resize` would say (one frame, one turn of the lock)."""
        outcome: Outcome[H] = Outcome()
        with self._lock:
            holding = self._holders.get(holder)
            if holding is None:
                return outcome
            if capacity is not None:
                holding.capacity = max(1, capacity)
            now = self._clock()
            for item_id, line in results:
                started = holding.held.pop(item_id, None)
                if started is None:
                    continue  # not held by it (any more)
                item = self._items.get(item_id)
                if item is None or holder not in item.copies:
                    continue  # a stale copy: done elsewhere, or taken back
                item.copies.discard(holder)
                self._durations.append(now - started)
                if self._verify == 1:
                    self._accept(item_id, line, outcome)
                else:
                    self._vote(item_id, item, holder, holding.name, line, outcome)
            self._counts["done"] += len(outcome.accepted)
            self._recheck(holder)
        return outcome

    def _vote(self, item_id: int, item: _Item[H], holder: H, name: str, line: str, outcome: Outcome[H]) -> None:
        if item.votes is None:
            item.votes = {}
        item.votes.setdefault(line, []).append((holder, name))
        votes = item.votes
        cast = item.votes_cast()
        winner = max(votes, key=lambda text: len(votes[text]))
        count = len(votes[winner])
        if count >= self._verify and 2 * count > cast:
            for text, voters in votes.items():
                if text != winner:
                    outcome.losers.extend((who, label, item_id) for who, label in voters)
                    self._counts["disagreements"] += len(voters)
            self._accept(item_id, winner, outcome)
        elif cast >= 2 * self._verify + 1:
            answers = "\n".join(f"{label}: {text!r}" for text, voters in votes.items() for _, label in voters)
            outcome.failures.append(
                self._failed(item_id, f"no {self._verify} of {cast} volunteers agreed; their answers:\n{answers}", name)
            )
        else:
            if cast >= item.wanted and not item.copies:
                item.wanted += 1  # a disagreement: ask one more volunteer
            self._want_again(item_id, item)

    def _accept(self, item_id: int, line: str, outcome: Outcome[H]) -> None:
        del self._values[item_id], self._items[item_id]  # other live copies turn stale: answers dropped
        outcome.accepted.append((item_id, line))

    def fail(self, holder: H, item_id: int, details: str) -> Failure | None:
        """The function failed on an item: try it again elsewhere, or (retries spent) fail it,
        after which nothing later is lent any more."""
        with self._lock:
            found = self._release(holder, item_id)
            if found is None:
                return None
            holding, item = found
            item.errors = item.errors or []
            item.errors.append(f"attempt {len(item.errors) + 1}, on {holding.name}:\n{details}")
            item.failed_on = item.failed_on or set()
            item.failed_on.add(holder)
            if len(item.errors) <= self._retries:
                self._counts["retried"] += 1
                self._want_again(item_id, item)
                return None
            text = item.errors[0].split(":\n", 1)[1] if len(item.errors) == 1 else "\n".join(item.errors)
            return self._failed(item_id, text, holding.name)

    def lost(self, holder: H, item_id: int, reason: str) -> Failure | None:
        """A session lost one item's computation (a worker died): lend it again, or fail it."""
        with self._lock:
            found = self._release(holder, item_id)
            if found is None:
                return None
            holding, item = found
            return self._lost(item_id, item, holding.name, reason)

    def _release(self, holder: H, item_id: int) -> tuple[_Holding, _Item[H]] | None:
        """Take an item's copy from the session holding it; None if that session holds no live copy."""
        holding = self._holders.get(holder)
        if holding is None or holding.held.pop(item_id, None) is None:
            return None
        self._recheck(holder)
        item = self._items.get(item_id)
        if item is None or holder not in item.copies:
            return None  # a stale copy: its holder answered at last
        item.copies.discard(holder)
        return holding, item

    def _lost(self, item_id: int, item: _Item[H], name: str, reason: str) -> Failure | None:
        item.losses += 1
        if item.losses >= self._max_losses:
            return self._failed(item_id, f"lost {item.losses} times; the last time {reason} ({name})", name)
        self._want_again(item_id, item)
        return None

    def _failed(self, item_id: int, details: str, holder: str) -> Failure:
        self._items.pop(item_id, None)
        value = self._values.pop(item_id)
        self._counts["failed"] += 1
        if self._halt_on_failure and (self._stop_after is None or item_id < self._stop_after):
            self._stop_after = item_id
        return Failure(item_id, value, details, holder)

    # -- views -------------------------------------------------------------

    def held(self, holder: H) -> set[int]:
        """A copy of the ids a session holds (stale copies included)."""
        with self._lock:
            holding = self._holders.get(holder)
            return set(holding.held) if holding else set()

    def pending(self) -> int:
        """Items added and not yet done or failed."""
        with self._lock:
            return len(self._values)

    def unlent(self) -> int:
        """Items waiting for a holder: never lent, or wanting another copy."""
        with self._lock:
            return len(self._fresh) + len(self._again)

    def holds(self, holder: H) -> int:
        """How many items a session holds."""
        with self._lock:
            holding = self._holders.get(holder)
            return len(holding.held) if holding else 0

    def counts(self) -> dict[str, int]:
        """Items lent (each time), lent again, done and failed so far, and the copies made for
        stragglers, taken back after the timeout, retried after an error, and outvoted."""
        with self._lock:
            return dict(self._counts)

    def held_counts(self) -> dict[H, int]:
        """How many items each session holds now."""
        with self._lock:
            return {holder: len(holding.held) for holder, holding in self._holders.items()}
