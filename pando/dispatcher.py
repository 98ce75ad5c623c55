"""Lending what the lender assigns, and the sweeper thread that watches leases.

Whoever changes the lender (the reader adding items, a session with results,
a session joining or leaving) calls :func:`pando.session.dispatch` right after,
from its own thread: a session refills itself with no hand-off to another
thread. The :class:`Dispatcher` thread sweeps, several times per heartbeat and at least
once a second: a volunteer that sent nothing (not even a heartbeat) for 1.5 ×
the heartbeat interval is dropped, and its items are lent again; the lender
takes back copies past ``--timeout`` and gives stragglers an extra copy.
"""
from __future__ import annotations

import threading
import time

from pando.lender import Lender
from pando.session import Holder, Sink, dispatch


class Dispatcher:
    """The sweeper of one lender; owned and stopped by the root (or a relay)."""

    def __init__(self, lender: Lender[Holder], sink: Sink, heartbeat_ms: int, timeout: float | None) -> None:
        self._lender = lender
        self._sink = sink
        self._silence_limit = 1.5 * heartbeat_ms / 1000
        self._sweep_every = min(heartbeat_ms / 4000, timeout / 4 if timeout else 1.0, 1.0)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pando-dispatcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.ident is not None:  # started
            self._thread.join()

    def _run(self) -> None:
        while not self._stopping.wait(self._sweep_every):
            now = time.monotonic()
            for session in self._lender.holders():
                silent = now - session.last_seen
                if silent > self._silence_limit:
                    session.abort(f"nothing heard for {silent:.1f} s")
            for failure in self._lender.sweep():
                self._sink.fail(failure)
            dispatch(self._lender)
