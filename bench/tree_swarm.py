"""Many real tree volunteers (:class:`pando.node.Node`) in one process, over real data channels.

    python bench/tree_swarm.py URL KEY --nodes K --task SECONDS [--first-index I] [--sources 127.0.1]
                               [--start-at MONOTONIC] [--gap S] [--timeout S]

Each volunteer is an unmodified ``pando.node.Node`` (``--protocol webrtc``,
one worker) run in a thread of its own: it joins the root's rendezvous at
URL (``ws://HOST:PORT/``) through ``pando.joiner.join``, takes children,
answers and passes down joins, relays items down and results up, re-joins
with its subtree when its parent dies, all through the product's code
(pando/node.py, overlay.py, junction.py, gateway.py, session.py, lender.py,
dispatcher.py, rtc.py). Three things are swapped, in this process only:

- its worker processes: ``pando.node.Workers`` becomes :class:`EmulatedWorkers`,
  which *emulates* the benchmark's function (``x * x`` answered ``SECONDS``
  after the worker starts the item, one item at a time per worker, one answer
  per item, as a real one-worker volunteer on slow items answers) on one
  timer thread for the whole process, instead of a process per worker;
- the asyncio thread: every ``pando.rtc.RtcLoop`` a node makes (one for its
  own joins, one for its children's) is a view on one loop shared by the
  process (it closes only its own peer connections);
- the signal socket's source address: each join opens it from the next
  address of ``--sources`` (``127.0.1.1`` …, all on loopback), as volunteers
  on separate hosts would, so the rendezvous' limit of 32 sockets per
  address does not throttle a crowd that really comes from one machine.

To record, a subclass overrides ``Node.log`` (its messages become timed
events) and a wrapper around ``_Running.attached`` notes each attach;
neither changes what the node does.

``--calibrate ROUNDS`` measures one join's steps and one frame's latency
between two peers of this process instead; ``--warm`` joins the root once
and leaves (its first offer makes the root import aiortc).

Volunteers start at ``--start-at`` (CLOCK_MONOTONIC, shared by the
machine's processes), or ``--gap`` seconds apart; without ``--start-at``
the process says ``ready`` on stderr and reads that time from stdin. It
prints ``{"ids": [...]}`` on stderr once the nodes exist, and one JSON
object on stdout at the end (when every node's run returned, at
``--timeout``, or on SIGTERM): per node, its events (joined, joined again,
lost, join failures), every attach (time, parent id, depth), and its
worker's items and idle gaps (time it waited for its next item).
"""
from __future__ import annotations

import argparse
import asyncio
import heapq
import inspect
import itertools
import json
import queue
import resource
import signal
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pando.joiner  # noqa: E402
import pando.node  # noqa: E402
from pando import protocol, rtc  # noqa: E402

ANNOUNCE = [False]
_SAY = threading.Lock()


def say(line: str) -> None:
    """One whole line on stderr (print from many threads interleaves a line's text and its newline)."""
    with _SAY:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


def cpu_now() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- one timer thread for every emulated worker ----------------------------


class Timers:
    """Calls functions at given monotonic times, from one thread, in time order."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self.late: list[float] = []  # how late each call ran (the process's own lag)
        threading.Thread(target=self._run, name="bench-timers", daemon=True).start()

    def at(self, when: float, fn: Callable[[], None]) -> None:
        with self._cond:
            heapq.heappush(self._heap, (when, next(self._seq), fn))
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._cond.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                when, _, fn = heapq.heappop(self._heap)
            lag = time.monotonic() - when
            if len(self.late) < 200_000:
                self.late.append(lag)
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - one node's trouble is its own
                print(f"tree_swarm: timer call failed: {exc!r}", file=sys.stderr, flush=True)


TIMERS: Timers | None = None
TASK = 1.0


class EmulatedWorkers:
    """Stands for ``pando.workers.Workers``: ``count`` workers that answer ``x * x`` TASK seconds after starting it."""

    def __init__(self, count: int, source: str, filename: str, on_answers: Callable[[list[Any], float], None],
                 on_report: Callable[[dict[str, Any]], None], report_seconds: float, timeout: float | None = None,
                 raw: bool = False, files: str | None = None):
        # ``raw`` and ``files`` as Workers takes them: the emulation squares the item whatever they say.
        assert TIMERS is not None
        self._on_answers = on_answers
        self._on_report = on_report
        self._report_seconds = report_seconds
        self._free_at = [0.0] * max(1, count)
        self._started = [False] * max(1, count)
        self._lock = threading.Lock()
        self._closed = False
        self._items = 0
        self.done = 0
        #: (time the worker started the item, seconds it had been idle waiting for it), after its first item.
        self.gaps: list[tuple[float, float]] = []
        self.first_item: float | None = None
        TIMERS.at(time.monotonic() + report_seconds, self._report)

    def submit(self, batch: list[tuple[int, str]]) -> None:
        now = time.monotonic()
        with self._lock:
            for item_id, text in batch:
                index = self._free_at.index(min(self._free_at))
                start = max(now, self._free_at[index])
                if self._started[index] and start == now:
                    self.gaps.append((now, now - self._free_at[index]))
                self._started[index] = True
                if self.first_item is None:
                    self.first_item = now
                self._free_at[index] = start + TASK
                TIMERS.at(start + TASK, lambda i=item_id, t=text: self._answer(i, t))

    def _answer(self, item_id: int, text: str) -> None:
        if self._closed:
            return
        self.done += 1
        self._items += 1
        value = int(text)
        self._on_answers([("ok", item_id, str(value * value))], TASK)  # TASK seconds of a worker's time

    def _report(self) -> None:
        if self._closed:
            return
        items, self._items = self._items, 0
        self._on_report({"interval": self._report_seconds, "items": items, "cpu_time": 0.0,
                         "data_transfer_time": 0.0, "units": float(items)})
        TIMERS.at(time.monotonic() + self._report_seconds, self._report)

    def close(self) -> None:
        self._closed = True



# -- one asyncio loop for every node's peer connections --------------------

_RealLoop = rtc.RtcLoop


class SharedLoop:
    """What a node takes for its own ``RtcLoop``: a view on the process's one loop."""

    loop: Any = None

    def __init__(self, name: str = "pando-webrtc") -> None:
        if SharedLoop.loop is None:
            SharedLoop.loop = _RealLoop("pando-webrtc")
        self._shared = SharedLoop.loop
        self._mine: set[Any] = set()

    def run(self, coroutine: Any, timeout: float | None) -> Any:
        return self._shared.run(coroutine, timeout)

    def submit(self, coroutine: Any) -> Any:
        return self._shared.submit(coroutine)

    def call(self, function: Callable[..., Any], *args: Any) -> None:
        self._shared.call(function, *args)

    def peer(self, ice_servers: list[dict[str, Any]]) -> Any:
        connection = self._shared.peer(ice_servers)
        self._mine.add(connection)

        @connection.on("connectionstatechange")
        def _forget() -> None:
            if connection.connectionState == "closed":
                self._mine.discard(connection)

        return connection

    def stop(self, timeout: float = 3.0) -> None:
        """Close this node's peer connections; the shared loop goes on."""
        async def close_mine() -> None:
            await asyncio.gather(*(c.close() for c in list(self._mine)), return_exceptions=True)
        try:
            self._shared.run(close_mine(), timeout)
        except (TimeoutError, RuntimeError):
            pass


# -- the signal socket's source address ------------------------------------

_real_connect = pando.joiner.connect
_sources: list[str] = []
_next_source = itertools.count()


def connect_from_next_source(url: str, **kwargs: Any) -> Any:
    address = _sources[next(_next_source) % len(_sources)]
    return _real_connect(url, source_address=(address, 0), **kwargs)


# -- what each node did ----------------------------------------------------

_real_attached = pando.node._Running.attached


def attached(self: Any, module: Any) -> None:
    node = self._node
    if isinstance(node, BenchNode) and module.tree is not None:
        node.record["attaches"].append([time.monotonic(), module.tree.node, module.tree.depth])
    _real_attached(self, module)


class BenchNode(pando.node.Node):
    def __init__(self, index: int, url: str, key: str, name: str) -> None:
        super().__init__(url, key, 1, name, quiet=True, transport="webrtc")
        self.record: dict[str, Any] = {"index": index, "id": self.id, "name": name, "attaches": [], "events": []}

    def log(self, text: str) -> None:
        now = time.monotonic()
        for prefix, kind in (("joined as", "joined"), ("joined again", "rejoined"), ("connection lost", "lost"),
                             ("the root went silent", "silent"), ("could not join", "join_failed"),
                             ("cannot reach", "unreachable"), ("the root sent a bad frame", "bad_frame"),
                             ("the job is over", "done")):
            if text.startswith(prefix):
                entry: list[Any] = [now, kind]
                if kind in ("join_failed", "unreachable", "bad_frame"):
                    entry.append(text[:160])
                self.record["events"].append(entry)
                if kind == "joined" and ANNOUNCE[0]:
                    say(json.dumps({"joined": self.id, "at": now}))
                return
        if not text.startswith("retrying"):
            self.record["events"].append([now, "log", text[:200]])

    def run_recorded(self) -> None:
        self.record["start"] = time.monotonic()
        try:
            self.record["exit"] = self.run()
        except Exception as exc:  # noqa: BLE001 - a harness reports, it does not crash
            self.record["error"] = f"{type(exc).__name__}: {exc}"
        self.record["end"] = time.monotonic()


def calibrate(rounds: int, frames: int) -> dict[str, Any]:
    """What one join and one frame cost here, both ends in this process on one loop, nothing else running:
    seconds for the offer, the answer, answer → channel open; one frame's one-way latency (ping-pong ÷ 2)."""
    loop = rtc.RtcLoop()
    warm = loop.run(rtc.offer(loop, []), 30)
    loop.run(warm.cancel(), 5)
    out: dict[str, list[float]] = {"offer_s": [], "answer_s": [], "open_s": [], "offer_cpu_s": [], "answer_cpu_s": [],
                                   "open_cpu_s": [], "frame_one_way_s": [], "frame_cpu_s": []}
    for _ in range(rounds):
        opened: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        t, c = time.monotonic(), time.process_time()
        offer = loop.run(rtc.offer(loop, []), 30)
        out["offer_s"].append(time.monotonic() - t)
        out["offer_cpu_s"].append(time.process_time() - c)
        t, c = time.monotonic(), time.process_time()
        answer = loop.run(rtc.answer(loop, offer.sdp, [], protocol.MAX_FRAME_BYTES, 30, opened=opened.put,
                                     expired=lambda: None), 30)
        out["answer_s"].append(time.monotonic() - t)
        out["answer_cpu_s"].append(time.process_time() - c)
        t, c = time.monotonic(), time.process_time()
        near = loop.run(offer.accept(answer, 30), 31)
        far = opened.get(timeout=30)
        out["open_s"].append(time.monotonic() - t)
        out["open_cpu_s"].append(time.process_time() - c)
        lend = protocol.encode(protocol.Lend([(123456, "123456")]))
        result = protocol.encode(protocol.Result([(123456, "15241383936")]))

        def echo() -> None:
            for _ in range(frames):
                far.recv(timeout=10)
                far.send(result)

        thread = threading.Thread(target=echo, daemon=True)
        thread.start()
        t, c = time.monotonic(), time.process_time()
        for _ in range(frames):
            near.send(lend)
            near.recv(timeout=10)
        elapsed, cpu = time.monotonic() - t, time.process_time() - c
        thread.join(5)
        out["frame_one_way_s"].append(elapsed / frames / 2)
        out["frame_cpu_s"].append(cpu / frames / 2)  # per frame: its sending and its receiving
        near.abort()
        far.abort()
    loop.stop()
    return {key: statistics.median(values) for key, values in out.items()} | {"rounds": rounds, "frames": frames,
                                                                                "raw": out}


def warm(url: str, key: str) -> dict[str, Any]:
    """Join the root once and leave: it imports aiortc and starts its loop on its first offer, not in a measurement."""
    loop = rtc.RtcLoop()
    t = time.monotonic()
    link = pando.joiner.join(url.rstrip("/") + "/rendezvous/signal", loop)
    link.send(protocol.encode(protocol.Hello("warm-up", 1, key)))
    module = protocol.decode(link.recv(timeout=30), protocol.FROM_ROOT)
    out = {"joined_s": time.monotonic() - t, "module": isinstance(module, protocol.Module)}
    link.abort()
    loop.stop()
    return out


def main() -> None:
    global TIMERS, TASK
    parser = argparse.ArgumentParser()
    parser.add_argument("url", help="the root: ws://HOST:PORT/")
    parser.add_argument("key")
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--task", type=float, required=True)
    parser.add_argument("--first-index", type=int, default=0)
    parser.add_argument("--name-prefix", default="tree")
    parser.add_argument("--sources", default="127.0.1", help="signal sockets come from PREFIX.1 … PREFIX.254")
    parser.add_argument("--start-at", type=float, default=0.0)
    parser.add_argument("--gap", type=float, default=0.0)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--loop-per-node", action="store_true", help="each node its own RtcLoop(s), as in production")
    parser.add_argument("--calibrate", type=int, default=0, help="measure ROUNDS joins and frames, print, exit")
    parser.add_argument("--announce", action="store_true", help="say on stderr when each node first joins")
    parser.add_argument("--warm", action="store_true", help="join the root once, leave, print, exit")
    args = parser.parse_args()
    if args.calibrate:
        print(json.dumps(calibrate(args.calibrate, 200)), flush=True)
        return
    if args.warm:
        print(json.dumps(warm(args.url, args.key)), flush=True)
        return
    ANNOUNCE[0] = args.announce

    TASK = args.task
    TIMERS = Timers()
    _sources.extend(f"{args.sources}.{i}" for i in range(1, 255))
    pando.joiner.connect = connect_from_next_source
    # A stand-in that drifted from what node.py passes Workers would crash every node at its module
    # frame, which the run would only show as joins that never end: refuse to start instead.
    missing = set(inspect.signature(pando.node.Workers).parameters) - set(inspect.signature(EmulatedWorkers).parameters)
    if missing:
        sys.exit(f"tree_swarm: EmulatedWorkers lacks Workers' parameters {sorted(missing)}")
    pando.node.Workers = EmulatedWorkers
    pando.node._Running.attached = attached
    if not args.loop_per_node:
        rtc.RtcLoop = SharedLoop  # node.py and gateway.py look it up here
        SharedLoop()  # import aiortc and start the loop before the clock starts
    # The first offer of a process pays one-time costs (lazy imports, the first certificate): not in the joins.
    first = rtc.RtcLoop()
    offer = first.run(rtc.offer(first, []), 30)  # type: ignore[arg-type]
    first.run(offer.cancel(), 5)
    if args.loop_per_node:
        first.stop()

    nodes = [BenchNode(args.first_index + i, args.url, args.key, f"{args.name_prefix}-{args.first_index + i}")
             for i in range(args.nodes)]
    say(json.dumps({"ids": [n.id for n in nodes]}))
    start_at = args.start_at
    if not start_at:
        say("ready")
        start_at = float(sys.stdin.readline())
    out: dict[str, Any] = {"start_at": start_at, "nodes": args.nodes, "task": args.task}
    done = threading.Event()

    def finish(*_: Any) -> None:
        if done.is_set():
            return
        done.set()
        out["cpu_s"] = cpu_now()
        out["records"] = []
        for node, workers in zip(nodes, _stats_by_node(nodes)):
            record = dict(node.record)
            if workers is not None:
                record["items"] = workers.done
                record["first_item"] = workers.first_item
                record["gaps"] = workers.gaps
            out["records"].append(record)
        late = sorted(TIMERS.late) if TIMERS else []
        out["timer_late_p50_s"] = late[len(late) // 2] if late else None
        out["timer_late_p99_s"] = late[int(len(late) * 0.99)] if late else None
        out["timer_late_max_s"] = late[-1] if late else None
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()

    signal.signal(signal.SIGTERM, lambda *_: (finish(), sys.exit(0)))
    delay = start_at - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    threads = []
    for i, node in enumerate(nodes):
        if args.gap and i:
            time.sleep(args.gap)
        thread = threading.Thread(target=node.run_recorded, name=f"bench-node-{i}", daemon=True)
        thread.start()
        threads.append(thread)
    deadline = time.monotonic() + args.timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    finish()


def _stats_by_node(nodes: list[BenchNode]) -> list[EmulatedWorkers | None]:
    out = []
    for node in nodes:
        running = node._running
        out.append(running._workers if running is not None else None)  # type: ignore[union-attr]
    return out


if __name__ == "__main__":
    main()
