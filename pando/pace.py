"""How many items a volunteer asks to hold at once when batching adapts (``--batch-size auto``).

A volunteer knows what its parent cannot: how long its items take on its
workers, and how long a refill takes to come back (from a result frame it
sends to the lend frame that answers it). It asks for enough items to keep
every worker busy across that wait with room to spare, and says so in its
result frames (``want``); the parent lends it that many at most. Cheap items
then travel by the hundred per frame, slow ones a few per worker, and a
volunteer whose items slow down soon asks for fewer.

A relay asks for its own workers' share, what its children asked for, and
what its children use up while its own refill comes.

Results wait at most :data:`FLUSH_SECONDS` at a worker to share its message.
At the volunteer they wait for others to share a frame: long enough for about
:data:`RESULTS_PER_FRAME` of them at the rate it answers (its own workers'
and its children's), never less than :data:`FLUSH_SECONDS` nor more than
:data:`MAX_WINDOW` (:meth:`Pace.window`). Cheap items then travel by the
hundred per frame, and a parent holding a thousand volunteers of 0.1 s items
reads a frame per few results instead of one per result; what a volunteer
holds covers that wait too. A volunteer about to run out of work sends at once
(``Upstream.hungry`` in pando/node.py): its refill must not wait for the window.

A parent with many children asks each to let its results gather longer
(``spacing`` in lend frames, :func:`spacing`): a frame costs the parent about the
same whatever it carries, so a thousand volunteers of 0.1 s items that each
answered four times a second would spend the root's CPU on frames alone.
"""
from __future__ import annotations

import math
import statistics
import threading
import time
from collections import deque
from typing import Callable

from pando.protocol import MAX_SPACING

#: Longest an answer waits for others to share its message at a worker; the shortest wait for a
#: volunteer's frame.
FLUSH_SECONDS = 0.005
#: Results a volunteer's frame should carry: a frame costs its parent far more than a result in it.
RESULTS_PER_FRAME = 4
#: Longest a result waits at a volunteer for others to share its frame.
MAX_WINDOW = 0.25
#: Result frames a parent means to read per second from all its children together: each frame costs
#: the root 100–250 µs of CPU (bench/README.md, workload 12), so this is a tenth to a quarter of a core.
FRAMES_PER_SECOND = 1000
#: Items a session holds per worker before its volunteer has said what it wants.
START_PER_WORKER = 2
#: Most items per worker a volunteer may ask to hold.
MAX_PER_WORKER = 10_000
#: The wait to cover, as a multiple of the measured one: jitter, and frames that come late.
GAIN = 2.0
#: Refill waits kept; their median is the estimate.
_REFILLS = 16
#: How much of each new measure of an item's time goes into the estimate.
_SMOOTHING = 0.2
#: Shortest window over which the children's rate is measured.
_RATE_WINDOW = 0.25
#: A want sent up again only once it changed by more than this fraction.
_CHANGE = 0.125


def per_worker(refill: float, item: float, window: float = FLUSH_SECONDS) -> int:
    """Items a worker should hold: the one it computes, and those it computes while a refill comes."""
    return min(MAX_PER_WORKER, 1 + math.ceil(_wait_to_cover(refill, window) / max(item, 1e-9)))


def _wait_to_cover(refill: float, window: float) -> float:
    """From a result to the refill it brings: it waits at the worker and at the volunteer, then the
    refill comes back. Covered twice (jitter), except the part of the volunteer's ``window`` beyond
    the shortest, which is known and covered once: more held is more left over at a run's end."""
    return GAIN * (refill + 2 * FLUSH_SECONDS) + (window - FLUSH_SECONDS)


def window(rate: float) -> float:
    """How long a volunteer answering ``rate`` results a second lets a result wait for others."""
    return min(MAX_WINDOW, max(FLUSH_SECONDS, RESULTS_PER_FRAME / rate)) if rate > 0 else FLUSH_SECONDS


def spacing(children: int) -> float:
    """How long a parent of ``children`` volunteers asks each to let results gather between frames."""
    return min(MAX_SPACING, children / FRAMES_PER_SECOND)


def changed(told: float | None, now: float) -> bool:
    """Whether a figure is worth telling again (a want up, a spacing down): the first time, or once it
    moved by more than :data:`_CHANGE` of what was told."""
    return told is None or abs(now - told) > _CHANGE * told


class Pace:
    """One volunteer's measures and what it asks for; thread-safe."""

    def __init__(self, workers: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._workers = workers
        self._clock = clock
        self._lock = threading.Lock()
        self._refills: deque[float] = deque(maxlen=_REFILLS)
        self._sent_at: float | None = None  # a result frame whose refill has not come yet
        self._item: float | None = None  # seconds an item takes on one of its workers
        self._relayed = 0  # the children's results since the measure began
        self._since = clock()
        self._rate = 0.0  # the children's results per second
        self._told: int | None = None  # the last want sent up
        self._spacing = 0.0  # what the parent asked for

    def round_trip(self, seconds: float) -> None:
        """A measure of the link: the hello → module round trip, before any refill was seen."""
        with self._lock:
            self._refills.append(seconds)

    def sent(self) -> None:
        """A result frame went up; the next lend frame is its refill."""
        with self._lock:
            if self._sent_at is None:
                self._sent_at = self._clock()

    def lent(self, spacing: float | None = None) -> None:
        """A lend frame came, with the parent's new ``spacing`` if it said one."""
        with self._lock:
            if spacing is not None:
                self._spacing = spacing
            if self._sent_at is not None:
                self._refills.append(self._clock() - self._sent_at)
                self._sent_at = None

    def computed(self, count: int, seconds: float) -> None:
        """The own workers computed ``count`` items in ``seconds`` of their time."""
        if count <= 0:
            return
        with self._lock:
            sample = seconds / count
            self._item = sample if self._item is None else self._item + _SMOOTHING * (sample - self._item)

    def relayed(self, count: int) -> None:
        """Children answered ``count`` items."""
        with self._lock:
            self._relayed += count

    def own(self) -> int | None:
        """What the own workers should hold; None before any of their items was timed."""
        with self._lock:
            return self._own()

    def _own(self) -> int | None:
        if self._item is None or not self._refills:
            return None
        return self._workers * per_worker(statistics.median(self._refills), self._item, self._window_now())

    def window(self) -> float:
        """How long a result may wait here for others to share its frame: :func:`window` of the rate,
        or the parent's spacing if longer."""
        with self._lock:
            return self._window_now()

    def _window_now(self) -> float:
        own = self._workers / max(self._item, 1e-9) if self._item is not None else 0.0
        return max(window(own + self._rate), self._spacing)

    def want(self, children: int) -> int | None:
        """What to ask the parent for, with ``children`` items asked for by the children; None while
        there is nothing to say (no item timed, or no change worth a word since the last time)."""
        with self._lock:
            now = self._clock()
            if now - self._since >= _RATE_WINDOW:
                self._rate = (self._rate + self._relayed / (now - self._since)) / 2
                self._relayed, self._since = 0, now
            own = self._own()
            if own is None and not children:
                return None
            refill = statistics.median(self._refills) if self._refills else 0.0
            buffer = math.ceil(self._rate * _wait_to_cover(refill, self._window_now()))
            want = (own or self._workers * START_PER_WORKER) + children + buffer
            if not changed(self._told, want):
                return None
            self._told = want
            return want

    def reset(self) -> None:
        """A new parent: what it was told, what it asked (spacing) and a refill under way no longer count."""
        with self._lock:
            self._told = None
            self._sent_at = None
            self._spacing = 0.0
