"""A native volunteer's worker processes, and the thread that collects their answers.

Each worker loads the user's module once, then computes the items it is sent,
in order; a thread of its own reads them from the pipe as they come, so the
volunteer never waits to hand it more. It streams answers back, grouped for at
most :data:`FLUSH_SECONDS` and sent at once when it has nothing left to
compute: fast functions pay little per item and slow ones answer promptly.
Each group says how long its items took (wall time), from which the volunteer
sizes what it asks for (:mod:`pando.pace`).

A worker publishes the id of the item it is computing, and when it started it,
in shared memory: when it dies, that item is reported *lost* (the root lends
it again, up to its limit), while the other items it had not answered are
given to a fresh worker. With a timeout, the collector kills a worker whose
current item has run for longer (a hung function, or one that never calls
back), which then goes the same way.
"""
from __future__ import annotations

import ctypes
import math
import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Callable, Iterable

from pando import bundle, items, reporting
from pando.module import Answer, ModuleError, Overrun, PandoFunction, answer, call, load, overrun_message
from pando.pace import FLUSH_SECONDS
# Past an item's deadline, the collector wakes this much later: the item has surely overrun by then.
_OVERRUN_SLACK = 0.01
_IDLE = -1  # the shared "current item" of a worker between items
_PR_SET_PDEATHSIG = 1  # Linux prctl: a signal for this process when its parent dies
_PARENT_POLL_SECONDS = 0.5

# Messages from a worker: ("ready",), ("broken", text), or (answers, stats, busy):
# answers is a list of pando.module answers, stats what pando.reporting.take()
# made of the work behind them, busy the seconds they took.


class ModuleBroken(Exception):
    """The module does not load on this machine; the text says why."""


@dataclass
class _Worker:
    process: multiprocessing.process.BaseProcess
    conn: Connection
    current: Any  # multiprocessing RawValue('q')
    started: Any  # multiprocessing RawValue('d'): time.monotonic() when it began `current`
    queued: deque[tuple[int, str]] = field(default_factory=deque)
    #: The item the collector killed this worker for running too long, if it did.
    overran: int | None = None


def compute(fn: PandoFunction, item_id: int, text: str, timeout: float | None = None, raw: bool = False) -> Answer:
    """One item, start to end, in this process; ``raw``: the function gets the text as it is.

    With a ``timeout`` (see :func:`pando.module.call`), an item that runs
    longer is ``("lost", id, message)``: given up, not failed.
    """
    try:
        err, result = call(fn, items.value(text, raw), timeout)
    except Overrun as exc:
        return ("lost", item_id, str(exc))
    return answer(item_id, err, result)


def _die_with(parent: int) -> None:
    """End this process as soon as ``parent`` ends, even in the middle of an item."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    else:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    if os.getppid() != parent:  # it died before we asked
        os._exit(1)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(_PARENT_POLL_SECONDS)
    os._exit(1)


def _worker_main(conn: Connection, source: str, filename: str, files: str | None, current: Any, started: Any,
                 parent: int, raw: bool) -> None:
    """A worker process: load the module (with its unpacked bundle in ``files``), then compute what arrives until EOF."""
    _die_with(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    items.allow_big_integers()
    if files is not None:
        bundle.use(files)
    try:
        fn = load(source, filename)
    except ModuleError as exc:
        conn.send(("broken", str(exc)))
        return
    conn.send(("ready",))
    outbox = _Outbox(conn)
    threading.Thread(target=outbox.send_every, args=(FLUSH_SECONDS,), daemon=True).start()
    batches: queue.SimpleQueue[list[tuple[int, str]] | None] = queue.SimpleQueue()
    threading.Thread(target=_receive, args=(conn, batches), daemon=True).start()
    while (batch := batches.get()) is not None:
        last = batch[-1][0]
        for item_id, text in batch:
            # The start first: a collector that reads this id then reads this item's start.
            started.value = begun = time.monotonic()
            current.value = item_id
            result = compute(fn, item_id, text, raw=raw)
            current.value = _IDLE
            outbox.add(result, time.monotonic() - begun, idle=item_id == last and batches.empty())


def _receive(conn: Connection, batches: queue.SimpleQueue[list[tuple[int, str]] | None]) -> None:
    """A worker's reading thread: batches of items as they come; None when the pipe ends.

    Whatever ends this thread ends the worker too (None ends its loop): a crash
    here shows as a dead worker, whose items the volunteer gives a fresh one.
    """
    try:
        while True:
            batches.put(conn.recv())
    except (EOFError, OSError):
        pass  # the volunteer is gone
    finally:
        batches.put(None)


class _Outbox:
    """A worker's answers not sent yet. They go in groups: when the worker has nothing left to
    compute, after an item once FLUSH_SECONDS have passed, and every FLUSH_SECONDS from a thread of
    their own, so that an answer never waits behind an item that hangs. Each group carries the
    process's CPU time since the one before, and the wall time its items took."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self._answers: list[Answer] = []
        self._busy = 0.0
        self._sent = time.monotonic()
        self._cpu = time.process_time()  # at the last group sent

    def add(self, answer: Answer, busy: float, idle: bool) -> None:
        with self._lock:
            self._answers.append(answer)
            self._busy += busy
            due = idle or time.monotonic() - self._sent >= FLUSH_SECONDS
        if due:
            self.send()

    def send(self) -> None:
        with self._lock:
            if self._answers:
                cpu, self._cpu = self._cpu, time.process_time()
                self._conn.send((self._answers, reporting.take(len(self._answers), self._cpu - cpu), self._busy))
                self._answers, self._busy = [], 0.0
            self._sent = time.monotonic()

    def send_every(self, seconds: float) -> None:
        while True:
            time.sleep(seconds)
            try:
                self.send()
            except OSError:
                return  # the volunteer is gone; the main thread sees it too


def _death(process: multiprocessing.process.BaseProcess) -> str:
    code = process.exitcode
    if code is not None and code < 0:
        try:
            return f"its worker process was killed by {signal.Signals(-code).name}"
        except ValueError:
            pass
    return f"its worker process exited with status {code}"


class Workers:
    """N worker processes fed by :meth:`submit`; answers go to ``on_answers``.

    ``on_answers(answers, busy)`` gets lists of ("ok", id, line) / ("error", id,
    message, details) / ("lost", id, message), and the seconds the workers
    spent on the computed ones; ``on_report(report)`` every
    ``report_seconds`` with the workers' summed figures for that interval
    (see :mod:`pando.reporting`). Both run in the collector thread. With a
    ``timeout`` (seconds), a worker whose current item runs longer is killed
    and replaced, and that item reported lost with the reason. ``files`` is
    the folder where the module's bundle was unpacked, if it has one. With
    ``raw``, the function gets each item's text as it is (``--raw``).
    """

    def __init__(
        self,
        count: int,
        source: str,
        filename: str,
        on_answers: Callable[[list[Answer], float], None],
        on_report: Callable[[dict[str, Any]], None],
        report_seconds: float,
        timeout: float | None = None,
        raw: bool = False,
        files: str | None = None,
    ) -> None:
        self._source = source
        self._files = files
        self._timeout = timeout
        self._raw = raw
        self._filename = filename
        self._on_answers = on_answers
        self._on_report = on_report
        self._report_seconds = report_seconds
        self._figures = dict.fromkeys(reporting.FIELDS, 0.0)
        self._busy = 0.0  # seconds the answers read since the last on_answers took
        self._context = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()  # guards the workers' queues
        self._closing = False
        self._workers = [self._spawn() for _ in range(max(1, count))]
        for worker in self._workers:
            self._wait_ready(worker)
        self._collector = threading.Thread(target=self._collect, name="pando-collector", daemon=True)
        self._collector.start()

    def _spawn(self) -> _Worker:
        parent, child = self._context.Pipe()
        current = self._context.RawValue("q", _IDLE)
        started = self._context.RawValue("d", 0.0)
        process = self._context.Process(
            target=_worker_main,
            args=(child, self._source, self._filename, self._files, current, started, os.getpid(), self._raw),
            daemon=True,
        )
        process.start()
        child.close()
        return _Worker(process, parent, current, started)

    def _wait_ready(self, worker: _Worker) -> None:
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            self.close()
            raise ModuleBroken(f"the worker process could not start: {_death(worker.process)}") from None
        if message[0] == "broken":
            self.close()
            raise ModuleBroken(message[1])

    def submit(self, batch: list[tuple[int, str]]) -> None:
        """Spread items over the workers, the least busy first."""
        with self._lock:
            shares: dict[int, list[tuple[int, str]]] = {}
            loads = [len(worker.queued) for worker in self._workers]
            for pair in batch:
                index = loads.index(min(loads))
                loads[index] += 1
                shares.setdefault(index, []).append(pair)
            for index, share in shares.items():
                worker = self._workers[index]
                worker.queued.extend(share)
                try:
                    worker.conn.send(share)
                except OSError:
                    pass  # it died; the collector gives its queue to its replacement

    def close(self) -> None:
        """Stop the workers and the collector."""
        with self._lock:
            self._closing = True
            workers = list(self._workers)
        for worker in workers:
            worker.conn.close()
            worker.process.terminate()
        for worker in workers:
            worker.process.join(2)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()

    # -- the collector thread --------------------------------------------

    def _collect(self) -> None:
        next_report = time.monotonic() + self._report_seconds
        while not self._closing:
            with self._lock:
                workers = list(self._workers)
                by_waitable: dict[Any, _Worker] = {}
                for worker in workers:
                    by_waitable[worker.conn] = worker
                    by_waitable[worker.process.sentinel] = worker
            # Wake for the next report, and in time to catch an item running too long.
            wake = min(next_report, self._next_overrun(workers))
            try:
                ready = multiprocessing.connection.wait(list(by_waitable), max(0.0, wake - time.monotonic()))
            except OSError:
                return  # closed under us
            if self._closing:
                return
            if time.monotonic() >= next_report:
                next_report += self._report_seconds
                figures = reporting.capped(self._figures)  # the workers' sums, added up
                self._on_report({"interval": self._report_seconds, **figures, "items": int(figures["items"])})
                self._figures = dict.fromkeys(reporting.FIELDS, 0.0)
            overran = self._overran(workers)
            if not ready and not overran:
                continue
            answers: list[Answer] = []
            dead: list[_Worker] = []
            for waitable in ready:
                worker = by_waitable[waitable]
                alive = self._read(worker, answers) if waitable is worker.conn else False
                if not alive and worker not in dead:
                    dead.append(worker)
            for worker in overran:
                if worker not in dead:
                    dead.append(worker)
            for worker in dead:
                answers.extend(self._replace(worker))
            if answers:
                busy, self._busy = self._busy, 0.0
                self._on_answers(answers, busy)

    def _next_overrun(self, workers: Iterable[_Worker]) -> float:
        """The time.monotonic() by which an item may next run too long (infinity without a timeout).

        A worker that is idle now starts its next item after this call, so
        its earliest overrun is a whole timeout away.
        """
        if self._timeout is None:
            return math.inf
        now = time.monotonic()
        wake = now + self._timeout
        for worker in workers:
            if worker.current.value != _IDLE:
                wake = min(wake, worker.started.value + self._timeout)
        return max(wake, now) + _OVERRUN_SLACK

    def _overran(self, workers: Iterable[_Worker]) -> list[_Worker]:
        """Kill the workers whose current item ran for longer than the timeout; return them."""
        if self._timeout is None:
            return []
        killed: list[_Worker] = []
        now = time.monotonic()
        for worker in workers:
            item = worker.current.value
            # The id, its start, and the id again: a worker that moved on in between is left alone.
            if item != _IDLE and now - worker.started.value > self._timeout and worker.current.value == item:
                worker.overran = item
                worker.process.kill()
                killed.append(worker)
        return killed

    def _read(self, worker: _Worker, answers: list[Answer]) -> bool:
        """Take everything a worker sent; False if it is gone."""
        try:
            while worker.conn.poll():
                got, figures, busy = worker.conn.recv()
                self._done(worker, got)
                answers.extend(got)
                self._busy += busy
                for name in reporting.FIELDS:
                    self._figures[name] += figures[name]
        except (EOFError, OSError):
            return False
        return True

    def _done(self, worker: _Worker, answers: list[Answer]) -> None:
        # A worker answers its items in the order it received them.
        with self._lock:
            for _ in answers:
                worker.queued.popleft()

    def _replace(self, worker: _Worker) -> list[Answer]:
        """A worker died: report its current item lost, give the rest to a new worker."""
        answers: list[Answer] = []
        self._read(worker, answers)  # what it sent before dying still counts
        worker.process.join()
        culprit = worker.current.value
        if culprit == worker.overran and self._timeout is not None:
            why = f"{overrun_message(self._timeout)}; its worker was replaced"
        else:
            why = _death(worker.process)
        lost = [("lost", culprit, why)] if any(p[0] == culprit for p in worker.queued) else []
        rest = [pair for pair in worker.queued if pair[0] != culprit]
        with self._lock:
            if self._closing:
                return answers
            index = self._workers.index(worker)
            fresh = self._spawn()
            self._workers[index] = fresh
        try:
            self._wait_ready(fresh)
        except ModuleBroken:
            return answers + lost + [("lost", pair[0], "its worker process could not restart") for pair in rest]
        if rest:
            self.submit(rest)
        return answers + lost
