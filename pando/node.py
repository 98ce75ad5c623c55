"""A volunteer: computes what its parent lends it and, over WebRTC, takes children of its own.

Toward its parent (the root, or a relay) a node is an ordinary volunteer:
hello, module, then lend/result/error/report/heartbeat. Toward its children
it is what the root is to its own: a session per child, a lender over the
items its parent lent it, a dispatcher, and a junction that takes joins or
passes them down. Its own worker processes are one more holder of that
lender, so a relay keeps computing.

Its parent's lease is all a node holds: when the parent goes, the node
forgets every item (the parent's side lends them again), tells its children
to do the same, and joins the tree again with its whole subtree.
"""
from __future__ import annotations

import importlib.util
import json
import math
import random
import secrets
import sys
import tempfile
import threading
import time
import urllib.request
from typing import Any, Callable, ContextManager, Hashable
from urllib.parse import urlsplit, urlunsplit

from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import connect

from pando import bundle, protocol, rendezvous, rtc, status
from pando.access import Access
from pando.bundle import BundleError
from pando.dispatcher import Dispatcher
from pando.gateway import Gateway
from pando.joiner import JoinFailed, join
from pando.junction import Junction
from pando.lender import Failure, Lender
from pando.link import Duplex
from pando.overlay import Overlay, Summary
from pando.pace import START_PER_WORKER, Pace
from pando.printable import printable
from pando.session import Holder, Job, Session, SessionIds, dispatch, finish_all, settle
from pando.supervisor import Supervisor
from pando.workers import Answer, ModuleBroken, Workers

FIRST_BACKOFF = 0.5
MAX_BACKOFF = 10.0
#: Longest pause between two looks for the next run, for a volunteer that stays.
NEXT_JOB_BACKOFF = 5.0
#: Most rows and bytes of device rows a status frame carries (global monitoring).
MAX_ROWS_BYTES = 48 * 1024
#: A subtree change reaches the parent within this many seconds.
STATUS_DELAY = 0.2
#: Longest the node waits for its results' thread when it stops.
STOP_SECONDS = 2.0


def with_path(url: str, path: str) -> str:
    """``url`` with its path replaced, query and fragment dropped."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


class Upstream:
    """The link to the parent, for whoever has something to send up; it changes when the node joins again.

    Results go up from a thread of their own, at most one frame per
    :meth:`pando.pace.Pace.window` while the node still has items to answer
    (:attr:`busy`): those that come meanwhile share it. One that comes after a
    quiet spell, the last the node owes, or any while the node is
    :attr:`hungry`, goes at once: its refill must not wait. The frame carries
    :attr:`want` when that has something to say.
    """

    def __init__(self, pace: Pace) -> None:
        self._pace = pace
        self._link: Duplex | None = None
        self._cond = threading.Condition()
        self._results: list[tuple[int, str]] = []
        self._sent = 0.0  # time.monotonic() of the last result frame
        self._stopping = False
        #: What to ask the parent for now (see Pace.want); None: nothing to say.
        self.want: Callable[[], int | None] = lambda: None
        #: Whether more results are to come.
        self.busy: Callable[[], bool] = lambda: False
        #: Whether the node is about to run out of work: nothing left to lend, no item queued at a worker.
        self.hungry: Callable[[], bool] = lambda: False
        self._thread = threading.Thread(target=self._flush, name="pando-upstream", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.ident is not None:
            self._thread.join(STOP_SECONDS)  # it may be stuck sending to a parent that stopped reading

    def attach(self, link: Duplex | None) -> None:
        with self._cond:
            self._link = link
            self._results.clear()  # for the old parent's items: its lease is void
        self._pace.reset()

    def send(self, frame: protocol.Frame) -> None:
        link = self._link
        if link is None:
            return  # between parents: what would go up belongs to a void lease
        try:
            link.send(protocol.encode(frame))
        except ConnectionClosed:
            pass  # the reading side sees the end and joins again

    def deliver(self, results: list[tuple[int, str]]) -> None:
        with self._cond:
            self._cond.notify()  # with the first result, or when the node turns hungry
            self._results.extend(results)

    def fail(self, failure: Failure) -> None:
        self.send(protocol.Error(id=failure.id, message="failed below", traceback=failure.details))

    def _flush(self) -> None:
        while True:
            with self._cond:
                while not self._results and not self._stopping:
                    self._cond.wait()
                while (not self._stopping and (wait := self._sent + self._pace.window() - time.monotonic()) > 0
                       and self.busy() and not self.hungry()):
                    self._cond.wait(wait)
                if self._stopping:
                    return
                results, self._results = self._results, []
                self._sent = time.monotonic()
            want = self.want()
            for group in protocol.pack(results):
                self.send(protocol.Result(group, want))
                want = None
            self._pace.sent()


class OwnWorkers:
    """This node's worker processes, as one holder of its lender."""

    last_seen = math.inf  # never silent: the dispatcher's sweep leaves it alone

    def __init__(self, workers: Workers) -> None:
        self.workers = workers

    def __repr__(self) -> str:
        return "<this volunteer's workers>"

    def lend(self, items: list[tuple[int, str]], direct: bool) -> None:
        self.workers.submit(items)  # never waits long: each worker reads its pipe from a thread of its own

    def abort(self, reason: str) -> None:
        pass  # the node's own processes: Workers replaces one that dies

    def finish(self) -> None:
        pass

    def wait_finished(self, timeout: float) -> None:
        pass


class Tally:
    """What the node's children tell it: their reports to pass up, their rows for global monitoring,
    and how many results they send (to ``relayed``)."""

    def __init__(self, relayed: Callable[[int], None]) -> None:
        self._relayed = relayed
        self._lock = threading.Lock()
        self._rows: dict[Hashable, dict[str, Any]] = {}
        self._below: dict[Hashable, list[dict[str, Any]]] = {}
        self._figures = dict.fromkeys(("items", "cpu_time", "data_transfer_time", "units"), 0.0)

    def joined(self, key: Hashable, session_id: str, name: str, workers: int, local: bool) -> None:
        with self._lock:
            self._rows[key] = {"id": session_id, "name": name, "depth": 1, "items": 0, "workers": workers}

    def left(self, key: Hashable) -> None:
        with self._lock:
            self._rows.pop(key, None)
            self._below.pop(key, None)

    def accepted(self, key: Hashable, count: int) -> None:
        with self._lock:
            row = self._rows.get(key)
            if row is None:
                return  # the node's own workers
            row["items"] += count
        self._relayed(count)

    def disagreed(self, key: Hashable) -> None:
        pass  # a relay does not verify: the root does

    def reported(self, key: Hashable, report: protocol.Report) -> None:
        with self._lock:
            for name in self._figures:
                self._figures[name] += getattr(report, name)

    def subtree(self, key: Hashable, status: protocol.Status) -> None:
        with self._lock:
            self._below[key] = status.devices or []

    def take_figures(self) -> dict[str, float]:
        """The children's figures since the last call."""
        with self._lock:
            figures, self._figures = self._figures, dict.fromkeys(self._figures, 0.0)
            return figures

    def rows(self, parent: str) -> tuple[list[dict[str, Any]], int]:
        """Rows for every device below, depth counted from this node; and how many did not fit."""
        with self._lock:
            rows = []
            for key, row in self._rows.items():
                rows.append({**row, "parent": parent})
                rows.extend({**below, "depth": below["depth"] + 1} for below in self._below.get(key, []))
        kept, size = [], 0
        for row in rows[: protocol.MAX_DEVICES]:
            size += len(json.dumps(row)) + 1
            if size > MAX_ROWS_BYTES:
                break
            kept.append(row)
        return kept, len(rows) - len(kept)


class Node:
    """Connects, computes, relays, joins again: the life of one volunteer."""

    def __init__(
        self, url: str, key: str, workers: int, name: str, role: str = "volunteer", quiet: bool = False,
        retry: bool = True, transport: str = "websocket", stay: bool = False,
    ) -> None:
        """``stay``: when a job is over, wait for the next run at the same address instead of ending."""
        self._url = url
        self._key = key
        self._workers_count = workers
        self._name = name
        self._role = role
        self._quiet = quiet
        self._retry = retry
        self._transport = transport
        self._stay = stay
        self._waiting = False  # between two jobs, looking for the next run: quietly
        self.id = secrets.token_hex(8)
        # A relay answers joins over WebRTC: it needs aiortc, and the root's own helper never relays.
        self._relay = role == "volunteer" and importlib.util.find_spec("aiortc") is not None
        self._rtc: rtc.RtcLoop | None = None
        self._pace = Pace(workers)
        self._upstream = Upstream(self._pace)
        self._parent = ""  # the parent's node id, once known
        self._running: _Running | None = None

    def log(self, text: str) -> None:
        if not self._quiet:
            print(f"pando-volunteer: {text}", file=sys.stderr, flush=True)

    def _trouble(self, text: str) -> None:
        """A failed attempt; not worth a line while looking for the next run, which fails until it starts."""
        if not self._waiting:
            self.log(text)

    def run(self) -> int:
        """Work until the job is over; return the exit status."""
        with Supervisor(self.log) as supervisor:
            self._upstream.start()
            try:
                return self._run(supervisor)
            finally:
                self._upstream.stop()
                if self._running is not None:
                    self._running.stop()
                if self._rtc is not None:
                    self._rtc.stop()

    def _run(self, supervisor: Supervisor) -> int:
        delay = FIRST_BACKOFF
        while True:
            try:
                outcome = self._attach(supervisor)
            except (OSError, InvalidHandshake, TimeoutError, ConnectionClosed) as exc:
                self._trouble(f"cannot reach the root at {urlsplit(self._url).netloc}: {exc or type(exc).__name__}")
            except protocol.ProtocolError as exc:
                self._trouble(f"the root sent a bad frame ({exc})")
            except JoinFailed as exc:
                self._trouble(f"could not join through {urlsplit(self._url).netloc}: {printable(str(exc))}")
            else:
                if outcome == status.OK and self._stay:
                    if not self._waiting:  # else the last run is still closing: look again later
                        self._await_next_job()
                        delay = FIRST_BACKOFF
                elif outcome is not None:
                    return outcome
                elif not self._waiting:
                    self.log("connection lost")
                    delay = FIRST_BACKOFF  # we were connected: start the back-off again
            if supervisor.failed.is_set():
                return status.FAILED
            self._orphaned()
            if not self._retry:
                return status.OK
            pause = delay * random.uniform(0.5, 1.0)  # jitter keeps a crowd from reconnecting at once
            if not self._waiting:
                self.log(f"retrying in {pause:.1f} s")
            time.sleep(pause)
            delay = min(delay * 2, NEXT_JOB_BACKOFF if self._waiting else MAX_BACKOFF)

    def _await_next_job(self) -> None:
        """The job is over: its workers and children go, and the next run at the same address starts afresh."""
        if self._running is not None:
            self._running.stop()
            self._running = None
        self._parent = ""
        self._waiting = True
        self.log(f"waiting for the next job at {urlsplit(self._url).netloc} (Ctrl-C to stop)")

    def _orphaned(self) -> None:
        """The parent is gone: its lease is void here and below."""
        self._upstream.attach(None)
        if self._running is not None:
            self._running.reset()

    # -- one parent ----------------------------------------------------------

    def _connect(self) -> ContextManager[Duplex]:
        if self._uses_webrtc():
            if self._rtc is None:
                self._rtc = rtc.RtcLoop()
            nodes = self._running.summary().nodes if self._running is not None else 1
            avoid = (self._parent,) if self._parent else ()
            return join(with_path(self._url, rendezvous.SIGNAL_PATH), self._rtc, nodes, avoid)
        # max_queue=None: frames keep being read (and pings answered) while the
        # main thread is busy starting workers; the root lends no more than it may.
        return connect(self._url, max_size=protocol.MAX_FRAME_BYTES, max_queue=None, compression=None, proxy=None,
                       open_timeout=10)

    def _uses_webrtc(self) -> bool:
        """``auto``: WebRTC when the page's server says so (a pando-server), else WebSocket."""
        if self._transport != "auto":
            return self._transport == "webrtc"
        page = with_path(self._url, rendezvous.CONFIG_PATH).replace("ws", "http", 1)
        try:
            with urllib.request.urlopen(page, timeout=10) as answer:
                return bool(json.loads(answer.read(4096)).get("transport") == "webrtc")
        except (OSError, ValueError, AttributeError):
            return False  # an older root, or not reachable now: WebSocket says why soon enough

    def _attach(self, supervisor: Supervisor) -> int | None:
        """One parent; an exit status when the job is over, None if the link dropped."""
        with self._connect() as link:
            hello = protocol.Hello(self._name, self._workers_count, self._key, self._role, node=self.id,
                                   relay=self._relay, raw=True)
            asked = time.monotonic()
            link.send(protocol.encode(hello))
            frame = protocol.decode(link.recv(timeout=30), protocol.FROM_ROOT)
            self._pace.round_trip(time.monotonic() - asked)
            if isinstance(frame, protocol.Bye):
                return self._bye(frame)
            if not isinstance(frame, protocol.Module):
                raise protocol.ProtocolError(f"expected the module, got {frame.type}")
            self._upstream.attach(link)
            # Heartbeats from their own thread, from now on: starting workers (or a
            # new one after a crash) can take longer than the parent waits in silence.
            ended = threading.Event()
            beats = threading.Thread(target=_beat, args=(self._upstream, frame.heartbeat_ms / 3000, ended),
                                     name="pando-heartbeat", daemon=True)
            beats.start()
            try:
                return self._serve(link, frame, supervisor)
            finally:
                ended.set()
                self._upstream.attach(None)

    def _serve(self, link: Duplex, module: protocol.Module, supervisor: Supervisor) -> int | None:
        """Under a parent that sent the module: compute, relay, until the link or the job ends."""
        self._waiting = False
        if self._running is not None and (module.run, module.source, module.bundle) != (
                self._running.run, self._running.source, self._running.bundle):
            # Joined again and found another run (the last one's root died without a bye): nothing of it stays.
            self.log("another job: starting afresh")
            self._running.stop()
            self._running = None
        if self._running is None:
            try:
                self._running = _Running(self, module, supervisor)
            except ModuleBroken as exc:
                link.send(protocol.encode(protocol.Error(message=str(exc))))
                print(f"pando-volunteer: cannot run the module: {exc}", file=sys.stderr, flush=True)
                return status.FAILED
            self.log(f"joined as {printable(module.id)}; computing {printable(module.filename)} "
                     f"with {self._workers_count} worker(s)")
        else:
            self.log(f"joined again as {printable(module.id)}")
        running = self._running
        running.attached(module)
        self._parent = module.tree.node if module.tree is not None else ""
        running.changed()
        # The parent answers every heartbeat: silence this long means it is gone,
        # even where the transport cannot tell (a data channel to a killed peer).
        silence = 2 * module.heartbeat_ms / 1000
        while not supervisor.failed.is_set():
            try:
                message = link.recv(timeout=silence)
            except TimeoutError:
                self.log("the root went silent")
                return None
            except ConnectionClosed:
                return None
            frame = protocol.decode(message, protocol.FROM_ROOT)
            if isinstance(frame, protocol.Lend):
                self._pace.lent(frame.spacing)
                running.lender.add(frame.items)
                dispatch(running.lender)
            elif isinstance(frame, protocol.Join):
                running.join(frame, self._upstream)
            elif isinstance(frame, protocol.Reset):
                running.reset()
            elif isinstance(frame, protocol.Bye):
                return self._bye(frame)
            elif not isinstance(frame, protocol.Heartbeat):
                raise protocol.ProtocolError(f"unexpected {frame.type} frame")
        return status.FAILED

    def _bye(self, frame: protocol.Bye) -> int:
        if frame.reason == "done":
            if not self._waiting:
                self.log("the job is over")
            return status.OK
        message = printable(frame.message, 500)
        print(f"pando-volunteer: the root refused this volunteer: {message}", file=sys.stderr, flush=True)
        return status.USAGE


class _Running:
    """What a node runs once it has the module: workers, a lender, and (a relay) children."""

    def __init__(self, node: Node, module: protocol.Module, supervisor: Supervisor) -> None:
        self._node = node
        self.source = module.source
        self.bundle = module.bundle
        self.run = module.run
        self.lender: Lender[Holder] = Lender(retries=0, halt_on_failure=False, straggler_floor=math.inf)
        self._files = _unpacked(module.bundle) if module.bundle else None
        try:
            self._workers = Workers(
                node._workers_count, module.source, module.filename, on_answers=self._answers, on_report=self._report,
                report_seconds=module.reporting_interval, timeout=module.timeout, raw=module.raw,
                files=self._files.name if self._files is not None else None,
            )
        except ModuleBroken:
            self._discard_files()
            raise
        self._own = OwnWorkers(self._workers)
        self._pace = node._pace
        self._tally = Tally(self._pace.relayed)
        tree = module.tree
        degree = tree.degree if tree is not None and node._relay else 0
        self._overlay: Overlay[Session] = Overlay(degree, relay=degree > 0)
        self._changed = threading.Event()
        self._stopping = threading.Event()
        self.job: Job  # made below; children's sessions read it when their channel opens
        self._gateway = Gateway(
            tree.payload() if tree is not None else {"ice_servers": [], "bootstrap_timeout": 60},
            supervisor.guard(lambda link: Session(link, self.job, child=True).serve()), ended=lambda: self._junction.join_ended(),
        )
        self._junction = Junction(self._overlay, self._gateway, changed=self.changed)
        self._depth = tree.depth if tree is not None else 1
        self._tree = tree
        # Under an adaptive parent, children hold what they ask for, and so do the own workers.
        self._adaptive = module.adaptive
        self.job = Job(
            module.filename, module.source, module.heartbeat_ms, None if module.adaptive else module.batch_size,
            module.reporting_interval, self.lender, node._upstream, self._tally, SessionIds(), node.log,
            Access(node._key), timeout=module.timeout, junction=self._junction, tree=self._child_tree(),
            raw=module.raw, bundle=module.bundle, native_only=module.native_only, run=module.run,
        )
        self._own_capacity = node._workers_count * (START_PER_WORKER if module.adaptive else module.batch_size)
        self.lender.join(self._own, self._own_capacity, workers=node._workers_count, name="this volunteer's workers")
        if module.adaptive:
            node._upstream.want = self.want
        node._upstream.busy = lambda: self.lender.pending() > 0
        workers = node._workers_count
        node._upstream.hungry = lambda: self.lender.unlent() == 0 and self.lender.holds(self._own) <= workers
        dispatch(self.lender, self._own)
        self._dispatcher = Dispatcher(self.lender, node._upstream, module.heartbeat_ms, None)
        self._dispatcher.start()
        if tree is not None:  # only a tree's parent takes status frames
            threading.Thread(target=self._send_status, name="pando-status", daemon=True).start()

    def _child_tree(self) -> protocol.Tree | None:
        tree = self._tree
        if tree is None:
            return None
        return protocol.Tree(tree.degree, self._node.id, self._depth + 1, tree.ice_servers, tree.bootstrap_timeout,
                             tree.monitoring)

    def attached(self, module: protocol.Module) -> None:
        """Under a (new) parent: children are told their depth in their module frames from now on."""
        if module.tree is not None:
            self._tree, self._depth = module.tree, module.tree.depth
            self.job = Job(**{**vars(self.job), "tree": self._child_tree()})

    def join(self, frame: protocol.Join, upstream: Upstream) -> None:
        self._junction.offer(frame, lambda joiner, sdp, message: upstream.send(protocol.Answer(joiner, sdp, message)))

    def summary(self) -> Summary:
        return self._overlay.summary(self._node._workers_count)

    def want(self) -> int | None:
        """What to ask the parent for: the own workers' share, and the children's."""
        return self._pace.want(sum(child.capacity for child in self._overlay.children()))

    def changed(self) -> None:
        self._changed.set()

    def reset(self) -> None:
        """Every item is void: forget them here, and say so to the children."""
        self.lender.clear()
        self._junction.forget()
        for child in self._overlay.children():
            child.reset()

    def stop(self) -> None:
        self._stopping.set()
        self._changed.set()
        self._dispatcher.stop()
        finish_all(list(self._overlay.children()), 2)
        self._gateway.stop()
        self._workers.close()
        self._discard_files()

    def _discard_files(self) -> None:
        if self._files is not None:
            self._files.cleanup()

    # -- threads -----------------------------------------------------------

    def _answers(self, answers: list[Answer], busy: float) -> None:
        """The own workers' answers (collector thread), settled like a child's frames."""
        self._pace.computed(len(answers), busy)
        if self._adaptive and (own := self._pace.own()) is not None and own != self._own_capacity:
            self._own_capacity = own
            self.lender.resize(self._own, own, self._node._workers_count)
        results = [(answer[1], answer[2]) for answer in answers if answer[0] == "ok"]
        if results:
            settle(self.job, self._own, protocol.Result(results))
        for answer in answers:
            if answer[0] == "error":
                settle(self.job, self._own, protocol.Error(id=answer[1], message=answer[2], traceback=answer[3]))
            elif answer[0] == "lost":
                settle(self.job, self._own, protocol.Error(id=answer[1], message=answer[2], lost=True))

    def _report(self, figures: dict[str, Any]) -> None:
        """The own workers' figures for an interval, and the children's since the last report."""
        below = self._tally.take_figures()
        self._node._upstream.send(protocol.Report(
            interval=figures["interval"], items=int(figures["items"] + below["items"]),
            cpu_time=figures["cpu_time"] + below["cpu_time"],
            data_transfer_time=figures["data_transfer_time"] + below["data_transfer_time"],
            units=figures["units"] + below["units"],
        ))

    def _send_status(self) -> None:
        """The subtree to the parent: soon after each change, and every reporting interval."""
        interval = self.job.reporting_interval
        while not self._stopping.is_set():
            self._changed.wait(interval)
            time.sleep(STATUS_DELAY)  # a burst of changes goes up as one status
            self._changed.clear()
            summary = self.summary()
            rows: list[dict[str, Any]] | None = None
            more = 0
            if self._tree is not None and self._tree.monitoring == "global":
                rows, more = self._tally.rows(self._node.id)
            self._node._upstream.send(protocol.Status(summary.nodes, summary.workers, summary.free, summary.depth,
                                                      summary.nearest, rows, more))


def _unpacked(text: str) -> tempfile.TemporaryDirectory[str]:
    """The module's files from the parent, checked and unpacked in a private folder of this job's."""
    folder = tempfile.TemporaryDirectory(prefix="pando-job-")
    try:
        bundle.unpack(text, folder.name)
    except BundleError as exc:
        folder.cleanup()
        raise ModuleBroken(f"the module's files from the root are refused: {exc}") from None
    return folder


def _beat(upstream: Upstream, seconds: float, ended: threading.Event) -> None:
    while not ended.wait(seconds):
        upstream.send(protocol.Heartbeat())

