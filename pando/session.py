"""One volunteer's session on the root: frames in, frames out, and its end.

The server (or, for a data channel, the gateway) runs :meth:`Session.serve`
in the connection's own thread, which reads frames and answers them itself: it
settles results with the lender and sends the items that refill the session
right away. Frames that other threads send it (items the reader or another
session's end made available, joins, the bye) go through a second thread per
session, so a slow or stopped peer blocks nobody but itself. Whatever way a
session ends, its items go back to the lender.
"""
from __future__ import annotations

import logging
import queue
import random
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Hashable, Protocol, Union

from websockets.exceptions import ConnectionClosed

from pando import protocol
from pando.access import Access, refuse
from pando.lender import Failure, Lender
from pando.link import Link
from pando.overlay import Subtree, Summary
from pando.pace import MAX_PER_WORKER, START_PER_WORKER, changed, spacing
from pando.printable import printable
from pando.reorder import MAX_DETAILS

if TYPE_CHECKING:
    from pando.junction import Junction

_HEARTBEAT = protocol.encode(protocol.Heartbeat())
LOG = logging.getLogger("pando.session")
LEND_LOG = logging.getLogger("pando.lender")

_NO_KEY = ("wrong or missing join key: open the URL the root printed, with its #key=...; "
           "for pando-volunteer, pass that URL as printed")


class SessionIds:
    """Session ids in use: the one a volunteer prefers (its node id) if free, else random, or a
    repeatable sequence with a seed. An id is free again once its session ends, so a volunteer
    joining the same parent again gets its node id back (rows of the tree name parents by it)."""

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._used: set[str] = set()

    def new(self, preferred: str = "") -> str:
        with self._lock:
            candidate = preferred
            while not candidate or candidate in self._used:
                candidate = f"{self._rng.getrandbits(32):08x}"
            self._used.add(candidate)
            return candidate

    def free(self, session_id: str) -> None:
        with self._lock:
            self._used.discard(session_id)


class Sink(Protocol):
    """Where accepted results and failed items go: the reorder buffer at the root, the parent at a relay."""

    def deliver(self, results: list[tuple[int, str]]) -> None: ...

    def fail(self, failure: Failure) -> None: ...


class Watcher(Protocol):
    """What sessions tell about their volunteers: the root's monitor, a relay's tally."""

    def joined(self, key: Hashable, session_id: str, name: str, workers: int, local: bool) -> None: ...

    def left(self, key: Hashable) -> None: ...

    def accepted(self, key: Hashable, count: int) -> None: ...

    def disagreed(self, key: Hashable) -> None: ...

    def reported(self, key: Hashable, report: protocol.Report) -> None: ...

    def subtree(self, key: Hashable, status: protocol.Status) -> None: ...


@dataclass(frozen=True)
class Job:
    """What every session of a run (or of a relay) shares."""

    filename: str
    source: str
    heartbeat_ms: int
    #: Items a session holds per worker; None: what its volunteer asks for (see pando.pace).
    batch_size: int | None
    reporting_interval: float
    lender: Lender[Holder]
    sink: Sink
    monitor: Watcher
    ids: SessionIds
    log: Callable[[str], None]
    access: Access
    #: Seconds an item may run on one worker; volunteers are told in the module frame.
    timeout: float | None = None
    #: Where joins meet the tree here, and what children are told of it (None: no tree).
    junction: Junction | None = None
    tree: protocol.Tree | None = None
    #: Items reach the function as their text (``--raw``); volunteers are told in the module frame.
    raw: bool = False
    #: The files that go with the module (base64), and what browsers lack (see protocol.Module).
    bundle: str = ""
    native_only: tuple[str, ...] = ()
    #: The run's id, passed down the tree in module frames ("": not said).
    run: str = ""
    #: Set when the job is over: a volunteer that says hello then is told so at once (it may stay for the next).
    over: threading.Event = field(default_factory=threading.Event)


class Holder(Protocol):
    """One of a lender's holders, as the dispatcher drives it: a session, or a relay's own workers."""

    last_seen: float

    def __hash__(self) -> int: ...

    def lend(self, items: list[tuple[int, str]], direct: bool) -> None:
        """Items the lender assigned it; ``direct``: called from the holder's own thread, which may send them at once."""

    def abort(self, reason: str) -> None: ...

    def finish(self) -> None: ...

    def wait_finished(self, timeout: float) -> None: ...


def finish_all(holders: list[Holder], timeout: float) -> None:
    """Say bye to every holder, then wait for the byes to go out: ``timeout`` seconds in all, not each
    (a thousand volunteers slow to close must not hold the end of a run for a thousand timeouts)."""
    for holder in holders:
        holder.finish()
    deadline = time.monotonic() + timeout
    for holder in holders:
        holder.wait_finished(max(0.0, deadline - time.monotonic()))


def dispatch(lender: Lender[Holder], caller: Holder | None = None) -> None:
    """Lend every assignment the lender can make now; called by whoever changed it, from its own
    thread (``caller``'s, if that is a holder's)."""
    for holder, items in lender.assign():
        if LEND_LOG.isEnabledFor(logging.DEBUG):
            LEND_LOG.debug("lent %d item(s) to %s: ids %s", len(items), holder, [i for i, _ in items])
        holder.lend(items, holder is caller)


def settle(job: Job, holder: Holder, frame: protocol.Result | protocol.Error, capacity: int | None = None) -> None:
    """Results and item errors from ``holder`` (in its own thread), through the lender to the sink;
    then what they made room for. ``capacity``: what the holder may hold from now on."""
    _settle(job, holder, frame, capacity)
    dispatch(job.lender, holder)


def _settle(job: Job, holder: Holder, frame: protocol.Result | protocol.Error, capacity: int | None) -> None:
    if isinstance(frame, protocol.Result):
        outcome = job.lender.complete(holder, frame.results, capacity)
        if outcome.accepted:
            job.sink.deliver(outcome.accepted)
            job.monitor.accepted(holder, len(outcome.accepted))
        for session, name, item_id in outcome.losers:
            job.log(f"pando: {name} disagreed with the majority on item {item_id + 1}")
            job.monitor.disagreed(session)
        for failure in outcome.failures:
            job.sink.fail(failure)
        return
    assert frame.id is not None
    if frame.lost:
        ended = job.lender.lost(holder, frame.id, frame.message)
    else:
        ended = job.lender.fail(holder, frame.id, frame.traceback or frame.message)
    if ended is not None:
        job.sink.fail(ended)


class _Close:
    """Outbox entry: close the connection with this code and reason."""

    def __init__(self, code: int = 1000, reason: str = "") -> None:
        self.code = code
        self.reason = reason


_Outgoing = Union[str, _Close, None]


class Session:
    """A volunteer connected to the root."""

    def __init__(self, link: Link, job: Job, child: bool = False) -> None:
        """``child``: the volunteer joined through the tree (a WebRTC join), and counts against its degree."""
        self._connection = link
        self._job = job
        self._child = child
        self._relay = False  # a child with a subtree: its end says nothing about any one item
        self._outbox: queue.SimpleQueue[_Outgoing] = queue.SimpleQueue()
        self._sender = threading.Thread(target=self._send_loop, name="pando-session-sender", daemon=True)
        self.id = ""
        self.label = "a volunteer"
        self._workers = 1  # its workers (its subtree's, for a relay)
        #: Items it may hold at once.
        self.capacity = 1
        self._spacing: float | None = None  # the last spacing told to the volunteer
        #: time.monotonic() of the last frame received; read by the dispatcher's sweep.
        self.last_seen = time.monotonic()

    def __repr__(self) -> str:
        return f"<Session {self.label}>"

    # -- called by other threads -----------------------------------------

    def lend(self, items: list[tuple[int, str]], direct: bool) -> None:
        """Send ``lend`` frames for items the lender assigned to this session: at once from its own
        thread (a refill), else through its sender; the first frame, and any after the number of
        volunteers changed enough, says how long results should gather between frames."""
        told = spacing(self._job.lender.volunteers())
        say = changed(self._spacing, told)
        if say:
            self._spacing = told  # a racing lend may say it again: harmless
        for group in protocol.pack(items):
            text = protocol.encode(protocol.Lend(group, told if say else None))
            say = False
            if direct:
                self._send(text)
            else:
                self._outbox.put(text)

    def join(self, join: protocol.Join) -> None:
        """Pass a joiner's offer down to this (relay) volunteer."""
        self._outbox.put(protocol.encode(join))

    def reset(self) -> None:
        """Everything lent to this volunteer is void: its relay lost its own parent."""
        self._outbox.put(protocol.encode(protocol.Reset()))

    def finish(self) -> None:
        """The job is over: say bye, then close."""
        self._outbox.put(protocol.encode(protocol.Bye("done")))
        self._outbox.put(_Close())

    def abort(self, reason: str) -> None:
        """Drop a peer that stopped answering, without waiting for it."""
        self._job.log(f"pando: dropping {self.label}: {reason}")
        self._connection.abort()

    # -- the connection's thread -----------------------------------------

    def serve(self) -> None:
        """Run the session until the connection ends; its items then go back to the lender."""
        job = self._job
        try:
            hello = self._handshake()
        except (protocol.ProtocolError, TimeoutError):
            self._connection.close(1008, "a hello first")  # never joined: nothing to give back
            hello = None
        except (ConnectionClosed, OSError):
            hello = None
        if hello is None:
            job.ids.free(self.id)
            if self._child and job.junction is not None:
                job.junction.join_ended()  # the slot its join held is free again
            return
        self._sender.start()
        local = hello.role == "local"
        job.monitor.joined(self, self.id, hello.name, hello.workers, local)
        self._workers = hello.workers
        self.capacity = hello.workers * (job.batch_size or START_PER_WORKER)
        job.lender.join(self, self.capacity, workers=hello.workers, name=self.label, local=local)
        if self._child and job.junction is not None:
            job.junction.joined(self, Subtree(hello.node, hello.relay, hello.workers))
        LOG.debug("%s joined with %d worker(s)", self.label, hello.workers)
        closing: _Close | None = None
        try:
            dispatch(job.lender, self)
            self._connection.direct(self._hot)
            for message in self._connection:
                self.last_seen = time.monotonic()
                closing = self._handle(protocol.decode(message, protocol.FROM_VOLUNTEER))
                if closing is not None:
                    break
        except protocol.ProtocolError as exc:
            job.log(f"pando: {self.label} sent a bad frame ({printable(str(exc))}); closing its session")
            closing = _Close(1008, "bad frame")
        except ConnectionClosed:
            pass
        finally:
            # A session we close ourselves (bad frame, module that cannot run here)
            # says nothing about its items: only a vanished one counts against them.
            held = len(job.lender.held(self))
            for failure in job.lender.leave(self, blame_items=closing is None and not self._relay):
                job.sink.fail(failure)
            dispatch(job.lender)  # what it held, to the others
            job.monitor.left(self)
            job.ids.free(self.id)
            if self._child and job.junction is not None:
                job.junction.left(self)
            LOG.debug("%s left; %d item(s) it held go back to the lender", self.label, held)
            self._outbox.put(None)
            if closing is not None:
                # Here, not in the sender: when this method returns, websockets closes with 1000.
                self._connection.close(closing.code, closing.reason)

    def _handshake(self) -> protocol.Hello | None:
        """The hello, if the peer was invited; then the session may hold ``workers × batch`` items."""
        job = self._job
        wait = min(protocol.GREETING_SECONDS, job.heartbeat_ms / 1000)
        frame = protocol.decode(self._connection.recv(timeout=wait), protocol.FROM_VOLUNTEER)
        if not isinstance(frame, protocol.Hello):
            raise protocol.ProtocolError("the first frame must be hello")
        if frame.protocol != protocol.VERSION:
            self._refuse(f"this root speaks Pando protocol {protocol.VERSION}, not {frame.protocol}; "
                         "update the volunteer")
            return None
        if not job.access.admits(frame.key, frame.role):
            self._refuse(_NO_KEY)
            return None
        if job.raw and not frame.raw:
            self._refuse("this run gives the function its items as text (--raw), which this volunteer would not; "
                         "update the volunteer")
            return None
        if job.over.is_set():  # a staying volunteer looking for the next run found this one still closing
            self._connection.send(protocol.encode(protocol.Bye("done")))
            self._connection.close(1000, "the job is over")
            return None
        self._connection.limit(protocol.frame_limit(frame.workers * (job.batch_size or MAX_PER_WORKER)))
        self.id = job.ids.new(frame.node if self._child else "")
        if frame.role == "local":
            self.label = f"the root's own helper {self.id}"
        else:
            name = printable(frame.name, protocol.MAX_NAME)
            frame = protocol.Hello(name, frame.workers, "", frame.role, frame.protocol, frame.node, frame.relay, frame.raw)
            self.label = f"volunteer {self.id}" + (f" ({name})" if name else "")
        module = protocol.Module(
            self.id, job.filename, job.source, job.heartbeat_ms, job.batch_size or START_PER_WORKER,
            job.reporting_interval, timeout=job.timeout, tree=job.tree if self._child else None,
            adaptive=job.batch_size is None, raw=job.raw, bundle=job.bundle, native_only=job.native_only, run=job.run,
        )
        self._connection.send(protocol.encode(module))
        return frame

    def _refuse(self, message: str) -> None:
        """Tell an uninvited peer why, and nothing else."""
        LOG.debug("refused a peer: %s", message)
        refuse(self._connection, message)

    def _resize(self, capacity: int) -> None:
        self.capacity = capacity
        self._job.lender.resize(self, capacity, self._workers)

    def _hot(self, text: str) -> bool:
        """Results and heartbeats, in the link's reading thread; False for any other frame (or a bad
        one), which the session's thread reads as usual."""
        try:
            frame = protocol.decode(text, protocol.FROM_VOLUNTEER)
        except protocol.ProtocolError:
            return False
        if not isinstance(frame, (protocol.Result, protocol.Heartbeat)):
            return False
        self.last_seen = time.monotonic()
        self._handle(frame)
        return True

    def _handle(self, frame: protocol.Frame) -> _Close | None:
        job = self._job
        if isinstance(frame, protocol.Result) or (isinstance(frame, protocol.Error) and frame.id is not None):
            capacity = None
            if isinstance(frame, protocol.Result) and frame.want is not None and job.batch_size is None:
                capacity = self.capacity = min(frame.want, self._workers * MAX_PER_WORKER)
            settle(job, self, frame, capacity)
        elif isinstance(frame, protocol.Status) and self._child and job.junction is not None:
            self._relay = frame.nodes > 1
            self._workers = max(1, frame.workers)
            self._resize(self.capacity if job.batch_size is None else self._workers * job.batch_size)
            dispatch(job.lender, self)
            job.monitor.subtree(self, frame)
            job.junction.status(self, Summary(frame.nodes, frame.workers, frame.free, frame.depth, frame.nearest))
        elif isinstance(frame, protocol.Answer) and self._child and job.junction is not None:
            job.junction.answered(frame)
        elif isinstance(frame, protocol.Report):
            job.monitor.reported(self, frame)
        elif isinstance(frame, protocol.Heartbeat):
            self._send(_HEARTBEAT)
        elif isinstance(frame, protocol.Error):
            details = f"\n{printable(frame.traceback, MAX_DETAILS, multiline=True)}" if frame.traceback else ""
            job.log(f"pando: {self.label} cannot run the module: {printable(frame.message, 2000)}{details}")
            return _Close(1000, "cannot run the module")
        else:
            raise protocol.ProtocolError(f"unexpected {frame.type} frame")
        return None

    def wait_finished(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the bye to be sent."""
        if self._sender.is_alive():
            self._sender.join(timeout)

    def _send(self, text: str) -> None:
        """Send from the session's own thread; a closed link is the reading side's to see."""
        try:
            self._connection.send(text)
        except (ConnectionClosed, OSError):
            pass

    def _send_loop(self) -> None:
        while (outgoing := self._outbox.get()) is not None:
            try:
                if isinstance(outgoing, _Close):
                    self._connection.close(outgoing.code, outgoing.reason)
                    return
                self._connection.send(outgoing)
            except (ConnectionClosed, OSError):
                return  # the reading side sees the end and cleans up
