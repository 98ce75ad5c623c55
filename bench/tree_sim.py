"""Simulated crowds on the tree (--degree D): the product's routing and lending, modelled time.

Nothing here opens a socket. Every simulated volunteer holds the real
:class:`pando.overlay.Overlay` its process would hold (route, add, update,
summary, join_ended, in the order pando/junction.py, gateway.py, session.py
and node.py call them), and in :func:`flow` the real :class:`pando.lender.Lender`
(on a virtual clock) that a relay or the root lends from. What is *modelled*
is time: a discrete-event clock, and costs calibrated on this machine
(bench/tree.py measures them; :class:`Costs` lists them):

- **join** (:class:`Crowd`): volunteers start at t0 (or spread over a
  window); each opens the root's rendezvous (at most ``rendezvous.MAX_SIGNALS``
  sockets at once: beyond, ``bye limit``), makes its offer, and the root
  routes it (one CPU: ``root_attempt`` per attempt, queued), answers it
  itself or passes it down, hop by hop, to the node that answers (its own
  CPU: ``answer``), whose answer goes back up; then the channel opens
  (``open`` + network round trips), and the join ends when the accepting
  node's session adds the child at its hello (``add(joined=True)``). A join
  with no room known below is held at the node (``Wait``) and routed again
  whenever that node's overlay changes, as pando/junction.py does. Statuses
  go up ``node.STATUS_DELAY`` after a change at each level, as node.py sends
  them. A refusal is retried with node.py's back-off.
- **re-attach** (:meth:`Crowd.kill`): a depth-1 node with a large subtree
  dies; its parent drops it after 1.5 heartbeats of silence (the dispatcher's
  sweep), each orphan notices after 2 heartbeats without a frame, waits
  node.py's first back-off, and joins again through the root with its
  subtree and ``avoid``.
- **flow** (:func:`flow`): the formed tree computing; one worker per node
  answers ``task`` seconds after starting an item; every node spends
  ``frame_cpu`` of its own CPU on each frame it sends or receives (the root
  too: half its measured CPU per item), frames take ``hop`` seconds.

What it cannot show: anything aiortc, the operating system or Python threads
do that the costs do not capture (they are medians; no loss, no jitter beyond
the back-off's), and nodes below the orphans are not modelled as
reconnecting: whether they do is what the real runs check.
"""
from __future__ import annotations

import heapq
import itertools
import math
import random
import statistics
from dataclasses import asdict, dataclass
from typing import Any, Callable

from pando import rendezvous
from pando.lender import Lender
from pando.node import MAX_BACKOFF, STATUS_DELAY
from pando.overlay import Accept, Forward, Overlay, Subtree, Wait

#: The first back-off of a volunteer (node.py's ``delay``), doubled after each failure up to MAX_BACKOFF.
FIRST_BACKOFF = 0.5


@dataclass
class Costs:
    """Seconds; calibrated by bench/tree.py (see its ``calibrate``), ``net`` is the scenario's."""

    #: One-way network latency between any two devices.
    net: float = 0.0005
    #: One frame over an open data channel, beyond ``net`` (aiortc and thread hand-offs at both ends).
    frame: float = 0.001
    #: A joiner's offer (aiortc, its own device).
    offer: float = 0.02
    #: CPU to answer an offer (aiortc), on the answering node's one loop: answers queue there.
    answer: float = 0.01
    #: Answer set → channel open, beyond the round trips (ICE check, DTLS, SCTP, channel open: ``open_trips``).
    open: float = 0.05
    open_trips: int = 4
    #: The root's CPU per join attempt (signal socket, offer, routing, forwarding, reply), queued on one core.
    root_attempt: float = 0.002
    #: The root's CPU for a signal socket turned away (``bye limit``): the WebSocket handshake and the bye.
    root_socket: float = 0.001
    #: CPU per frame sent or received, at every node (the root included) while computing.
    frame_cpu: float = 0.0001

    @property
    def hop(self) -> float:
        return self.net + self.frame


class Clock:
    """A discrete-event clock: functions called at virtual times, in order."""

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = itertools.count()
        self.events = 0

    def at(self, when: float, fn: Callable[..., None], *args: Any) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), fn, args))

    def after(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        self.at(self.now + delay, fn, *args)

    def run(self, until: float = math.inf, stop: Callable[[], bool] | None = None) -> None:
        heap = self._heap
        while heap and heap[0][0] <= until:
            when, _, fn, args = heapq.heappop(heap)
            self.now = when
            self.events += 1
            fn(*args)
            if stop is not None and stop():
                return
        if until != math.inf and self.now < until:
            self.now = until

    def empty(self) -> bool:
        return not self._heap


class Cpu:
    """One core: work queues behind earlier work."""

    def __init__(self) -> None:
        self.busy_until = 0.0
        self.used = 0.0

    def take(self, now: float, cost: float) -> float:
        """When work of ``cost`` seconds asked for at ``now`` is done."""
        start = self.busy_until if self.busy_until > now else now
        self.busy_until = start + cost
        self.used += cost
        return self.busy_until


# -- the crowd joining, and healing ----------------------------------------


class SimNode:
    __slots__ = ("index", "id", "overlay", "parent", "depth", "cpu", "status_pending", "joined_at", "attempts",
                 "delay", "alive", "rejoined_at", "failures", "bring", "avoid", "reattaching", "waiting")

    def __init__(self, index: int, degree: int) -> None:
        self.index = index
        self.id = f"n{index}"
        self.overlay: Overlay[int] = Overlay(degree)
        self.parent: int | None = None
        self.depth = 0
        self.cpu = Cpu()
        self.status_pending = False
        self.joined_at: float | None = None
        self.rejoined_at: float | None = None
        self.attempts = 0
        self.failures = 0
        self.delay = FIRST_BACKOFF
        self.alive = True
        self.bring = 1
        self.avoid: tuple[str, ...] = ()
        self.reattaching = False
        #: Joins held here for room (junction.py): (joiner, hops, path, deadline), in order of arrival.
        self.waiting: list[tuple[SimNode, int, list[SimNode], float]] = []


class Crowd:
    """N volunteers joining a root of degree D through its rendezvous, on modelled time."""

    def __init__(self, n: int, degree: int, costs: Costs, seed: int = 1, spread: float = 0.0,
                 heartbeat: float = 30.0) -> None:
        self.n = n
        self.degree = degree
        self.costs = costs
        self.rng = random.Random(seed)
        self.clock = Clock()
        self.heartbeat = heartbeat
        self.root = SimNode(0, degree)
        self.root.depth = 0
        self.nodes = [self.root] + [SimNode(i, degree) for i in range(1, n + 1)]
        self.root_cpu = Cpu()
        self.signals = 0  # signal sockets open at the rendezvous
        self.signals_max = 0
        self.root_links_max = 0
        self.refusals: dict[str, int] = {}
        self.joined = 0
        for node in self.nodes[1:]:
            self.clock.at(self.rng.uniform(0, spread) if spread else 0.0, self._attempt, node)

    # -- one attempt -------------------------------------------------------

    def _attempt(self, joiner: SimNode) -> None:
        if not joiner.alive:
            return
        c = self.costs
        joiner.attempts += 1
        if self.signals >= rendezvous.MAX_SIGNALS:
            done = self.root_cpu.take(self.clock.now + 4 * c.net, c.root_socket)
            self.clock.at(done + c.net, self._failed, joiner, "bye limit: too many signal sockets", False)
            return
        self.signals += 1
        self.signals_max = max(self.signals_max, self.signals)
        # TCP and the WebSocket upgrade (two round trips), the welcome, the offer, then the offer reaches the root.
        arrive = self.clock.now + 5 * c.net + c.offer + c.net
        self.clock.at(arrive, self._at_root, joiner)

    def _at_root(self, joiner: SimNode) -> None:
        done = self.root_cpu.take(self.clock.now, self.costs.root_attempt)
        self.clock.at(done, self._route, joiner, self.root, 0, [])

    def _route(self, joiner: SimNode, node: SimNode, hops: int, path: list[SimNode]) -> None:
        """Junction.offer at ``node``: take it, pass it down, hold it for room, or refuse it."""
        if not node.alive:  # the join went to a dead node: the joiner gives up after the bootstrap timeout
            self.clock.after(rendezvous.BOOTSTRAP_TIMEOUT, self._failed, joiner, "timeout", True)
            return
        node.waiting.append((joiner, hops, path, self.clock.now + rendezvous.BOOTSTRAP_TIMEOUT))
        self._route_waiting(node)

    def _route_waiting(self, node: SimNode) -> None:
        """Junction._route_waiting: the joins held at ``node``, in order, until one must wait on."""
        while node.waiting:
            joiner, hops, path, deadline = node.waiting[0]
            if deadline < self.clock.now:
                node.waiting.pop(0)
                self.clock.after(len(path) * self.costs.hop + self.costs.net, self._failed, joiner, "timeout", True)
                continue
            route = node.overlay.route(joiner.bring, joiner.avoid, hops)
            if isinstance(route, Wait):
                return
            node.waiting.pop(0)
            self._routed(route, joiner, node, hops, path)

    def _routed(self, route: Any, joiner: SimNode, node: SimNode, hops: int, path: list[SimNode]) -> None:
        c = self.costs
        if isinstance(route, Accept):
            cpu = self.root_cpu if node is self.root else node.cpu
            done = cpu.take(self.clock.now, c.answer)
            self._changed(node)
            # The answer goes up the path, then from the root to the joiner over its signal socket.
            back = len(path) * c.hop + c.net
            self.clock.at(done + back, self._answered, joiner, node)
        elif isinstance(route, Forward):
            child = self.nodes[route.child]
            self.clock.after(c.hop, self._route, joiner, child, hops + 1, path + [node])
        else:
            self.refusals[route.message] = self.refusals.get(route.message, 0) + 1
            self.clock.after(len(path) * c.hop + c.net, self._failed, joiner, route.message, True)

    def _answered(self, joiner: SimNode, parent: SimNode) -> None:
        c = self.costs
        opened = self.clock.now + c.open + c.open_trips * 2 * c.net
        self.clock.at(opened, self._opened, joiner, parent)

    def _opened(self, joiner: SimNode, parent: SimNode) -> None:
        self.signals -= 1  # the joiner closes its signal socket
        if not parent.alive:
            self.clock.after(0.0, self._failed, joiner, "parent died", False)
            return
        self.clock.after(self.costs.hop, self._hello, joiner, parent)

    def _hello(self, joiner: SimNode, parent: SimNode) -> None:
        # Session.serve: the module goes out, then the child takes the slot its join held (junction.joined).
        parent.overlay.add(joiner.index, Subtree(joiner.id, True, 1), joined=True)
        self._route_waiting(parent)
        if parent is self.root:
            self.root_links_max = max(self.root_links_max, len(parent.overlay.children()))
        self.clock.after(self.costs.hop, self._module, joiner, parent)

    def _module(self, joiner: SimNode, parent: SimNode) -> None:
        joiner.parent = parent.index
        joiner.depth = parent.depth + 1
        joiner.delay = FIRST_BACKOFF
        if joiner.reattaching:
            joiner.reattaching = False
            joiner.rejoined_at = self.clock.now
        elif joiner.joined_at is None:
            joiner.joined_at = self.clock.now
            self.joined += 1
        self._changed(joiner)  # its first status

    def _failed(self, joiner: SimNode, why: str, holds_socket: bool) -> None:
        if holds_socket:
            self.signals -= 1
        joiner.failures += 1
        pause = joiner.delay * self.rng.uniform(0.5, 1.0)
        joiner.delay = min(joiner.delay * 2, MAX_BACKOFF)
        self.clock.after(pause, self._attempt, joiner)

    # -- statuses ----------------------------------------------------------

    def _changed(self, node: SimNode) -> None:
        if node is self.root or node.status_pending or not node.alive:
            return
        node.status_pending = True
        self.clock.after(STATUS_DELAY, self._send_status, node)

    def _send_status(self, node: SimNode) -> None:
        node.status_pending = False
        if not node.alive or node.parent is None:
            return
        summary = node.overlay.summary(1)
        self.clock.after(self.costs.hop, self._status_arrives, node, node.parent, summary)

    def _status_arrives(self, node: SimNode, parent_index: int, summary: Any) -> None:
        parent = self.nodes[parent_index]
        if not parent.alive or node.parent != parent_index:
            return
        parent.overlay.update(node.index, summary)
        self._changed(parent)
        self._route_waiting(parent)

    # -- running it --------------------------------------------------------

    def run_join(self, limit: float = 600.0) -> dict[str, Any]:
        self.clock.run(limit, stop=lambda: self.joined == self.n)
        self.clock.run(self.clock.now + 2.0)  # statuses settle
        times = sorted(node.joined_at for node in self.nodes[1:] if node.joined_at is not None)
        return {
            "joined": len(times), "n": self.n,
            "p50_s": percentile(times, 0.5), "p95_s": percentile(times, 0.95),
            "to_95pct_s": times[math.ceil(0.95 * self.n) - 1] if len(times) >= math.ceil(0.95 * self.n) else None,
            "to_100pct_s": times[-1] if len(times) == self.n else None,
            "attempts": sum(node.attempts for node in self.nodes[1:]),
            "failures": sum(node.failures for node in self.nodes[1:]),
            "refusals": self.refusals,
            "signals_max": self.signals_max,
            "root_cpu_s": self.root_cpu.used,
            **self.shape(),
            "events": self.clock.events,
        }

    def shape(self) -> dict[str, Any]:
        children: dict[int, int] = {}
        depths: dict[int, int] = {}
        for node in self.nodes[1:]:
            if node.alive and node.parent is not None:
                children[node.parent] = children.get(node.parent, 0) + 1
                depths[node.depth] = depths.get(node.depth, 0) + 1
        return {"root_links": children.get(0, 0), "root_links_max": self.root_links_max,
                "max_children": max(children.values(), default=0),
                "nodes_over_degree": sum(1 for k in children.values() if k > self.degree),
                "depths": {str(d): k for d, k in sorted(depths.items())},
                "depth": max(depths, default=0)}

    def subtree(self, index: int) -> list[int]:
        below: dict[int, list[int]] = {}
        for node in self.nodes[1:]:
            if node.alive and node.parent is not None:
                below.setdefault(node.parent, []).append(node.index)
        out, todo = [], [index]
        while todo:
            i = todo.pop()
            out.append(i)
            todo.extend(below.get(i, []))
        return out

    def kill(self, task: float, limit: float = 600.0) -> dict[str, Any]:
        """Kill the depth-1 node with the largest subtree; the orphans join again. Times in seconds and heartbeats."""
        h = self.heartbeat
        first = [node for node in self.nodes[1:] if node.parent == 0 and node.alive]
        victim = max(first, key=lambda node: len(self.subtree(node.index)))
        size = len(self.subtree(victim.index))
        orphans = [node for node in self.nodes[1:] if node.parent == victim.index and node.alive]
        t_kill = self.clock.now
        victim.alive = False
        # The root's dispatcher: the victim's last frame (results flow all the time: just now), then a
        # sweep every min(h/4, 1) s drops it once 1.5 h have passed in silence.
        sweep = min(h / 4, 1.0)
        phase = self.rng.uniform(0, sweep)
        drop = t_kill + 1.5 * h
        drop = t_kill + phase + math.ceil((drop - t_kill - phase) / sweep) * sweep
        self.clock.at(drop, self._root_drops, victim)
        for orphan in orphans:
            # Its last frame from the victim: a lend or a heartbeat's answer, at most min(task, h/3) ago.
            last = t_kill - self.rng.uniform(0, min(task, h / 3))
            orphan.reattaching = True
            orphan.bring = len(self.subtree(orphan.index))
            orphan.avoid = (victim.id,)
            orphan.delay = FIRST_BACKOFF
            self.clock.at(last + 2 * h, self._orphaned, orphan)
        self.clock.run(t_kill + limit, stop=lambda: all(not o.reattaching for o in orphans))
        times = sorted(o.rejoined_at - t_kill for o in orphans if o.rejoined_at is not None)
        return {"victim_subtree": size, "orphans": len(orphans), "reattached": len(times),
                "p50_s": percentile(times, 0.5), "p95_s": percentile(times, 0.95),
                "max_s": times[-1] if times else None,
                "p95_heartbeats": None if not times else percentile(times, 0.95) / h,
                "max_heartbeats": None if not times else times[-1] / h,
                "heartbeat_s": h, "attempts": sum(o.attempts for o in orphans),
                "new_parents_depth": sorted(self.nodes[o.parent].depth for o in orphans if o.parent is not None)}

    def _root_drops(self, victim: SimNode) -> None:
        self.root.overlay.remove(victim.index)
        self._route_waiting(self.root)
        self.root_links_max = max(self.root_links_max, len(self.root.overlay.children()))

    def _orphaned(self, orphan: SimNode) -> None:
        orphan.parent = None
        pause = orphan.delay * self.rng.uniform(0.5, 1.0)
        orphan.delay = min(orphan.delay * 2, MAX_BACKOFF)
        self.clock.after(pause, self._attempt, orphan)

    def parents(self) -> dict[int, int]:
        return {node.index: node.parent for node in self.nodes[1:] if node.alive and node.parent is not None}


# -- the formed tree computing ---------------------------------------------

OWN = -1  # a node's own worker, as a holder of its lender


def flow(parents: dict[int, int], task: float, batch: int, costs: Costs, seconds: float, warmup: float,
         heartbeat: float = 30.0, flush: float = 0.0) -> dict[str, Any]:
    """The tree ``parents`` (node → parent; 0 is the root) computing ``task``-second items with batch ``batch``.

    ``flush``: a node sends results up at most one frame per ``flush`` seconds, those
    that come meanwhile sharing it (pando/pace.py's FLUSH_SECONDS); 0: a frame per batch accepted.

    Steady efficiency = results accepted at the root between ``warmup`` and
    ``warmup + seconds`` ÷ (that time × N / task).
    """
    clock = Clock()
    now = lambda: clock.now  # noqa: E731
    n = len(parents)
    children: dict[int, list[int]] = {}
    for child, parent in parents.items():
        children.setdefault(parent, []).append(child)
    size: dict[int, int] = {}

    def count(i: int) -> int:
        total = 1 + sum(count(c) for c in children.get(i, []))
        size[i] = total
        return total

    for root_child in children.get(0, []):
        count(root_child)
    depth = {0: 0}
    order = [0]
    for i in order:
        for c in children.get(i, []):
            depth[c] = depth[i] + 1
            order.append(c)
    lenders: dict[int, Lender[int]] = {}
    cpus = {i: Cpu() for i in order}
    free_at = {i: 0.0 for i in order if i}
    started = {i: False for i in order if i}
    gaps: dict[int, list[float]] = {}
    root = Lender(retries=1, straggler_floor=heartbeat, clock=now)
    lenders[0] = root
    for c in children.get(0, []):
        root.join(c, batch * size[c], workers=size[c], name=f"n{c}")
    for i in order[1:]:
        lender: Lender[int] = Lender(retries=0, halt_on_failure=False, straggler_floor=math.inf, clock=now)
        lender.join(OWN, batch, workers=1, name="own")
        for c in children.get(i, []):
            lender.join(c, batch * size[c], workers=size[c], name=f"n{c}")
        lenders[i] = lender
    total = int(n / task * (warmup + seconds) * 1.3) + n * batch + 100
    root.add((k, str(k)) for k in range(total))
    out: list[float] = []
    frame = costs.frame_cpu
    hop = costs.hop
    outbox: dict[int, list[tuple[int, str]]] = {i: [] for i in order if i}
    last_sent = {i: -math.inf for i in order if i}

    def dispatch(i: int) -> None:
        for holder, items in lenders[i].assign():
            if holder == OWN:
                for item in items:
                    start = free_at[i] if free_at[i] > clock.now else clock.now
                    if started[i] and start == clock.now and clock.now > free_at[i]:
                        if warmup <= clock.now <= warmup + seconds:
                            gaps.setdefault(depth[i], []).append(clock.now - free_at[i])
                    started[i] = True
                    free_at[i] = start + task
                    clock.at(free_at[i], computed, i, item)
            else:
                leave = cpus[i].take(clock.now, frame)
                clock.at(leave + hop, arrive_lend, holder, items)

    def arrive_lend(i: int, items: list[tuple[int, str]]) -> None:
        done = cpus[i].take(clock.now, frame)
        if done > clock.now:
            clock.at(done, take_lend, i, items)
        else:
            take_lend(i, items)

    def take_lend(i: int, items: list[tuple[int, str]]) -> None:
        lenders[i].add(items)
        dispatch(i)

    def computed(i: int, item: tuple[int, str]) -> None:
        value = int(item[1])
        settle(i, OWN, [(item[0], str(value * value))])

    def settle(i: int, holder: int, results: list[tuple[int, str]]) -> None:
        outcome = lenders[i].complete(holder, results)
        if outcome.accepted:
            if i == 0:
                out.extend([clock.now] * len(outcome.accepted))
            else:
                if not outbox[i]:
                    clock.at(max(clock.now, last_sent[i] + flush), send_up, i)
                outbox[i].extend(outcome.accepted)
        dispatch(i)

    def send_up(i: int) -> None:
        results, outbox[i] = outbox[i], []
        last_sent[i] = clock.now
        leave = cpus[i].take(clock.now, frame)
        clock.at(leave + hop, arrive_result, parents[i], i, results)

    def arrive_result(i: int, child: int, results: list[tuple[int, str]]) -> None:
        done = cpus[i].take(clock.now, frame)
        if done > clock.now:
            clock.at(done, settle, i, child, results)
        else:
            settle(i, child, results)

    dispatch(0)
    clock.run(warmup + seconds)
    window = [t for t in out if warmup <= t <= warmup + seconds]
    ideal = n / task
    all_gaps = [g for gs in gaps.values() for g in gs]
    horizon = warmup + seconds

    def busy(cpu: Cpu) -> float:
        """Share of the run the CPU was busy (work queued past the end not counted)."""
        return (cpu.used - max(0.0, cpu.busy_until - horizon)) / horizon
    return {
        "n": n, "task_s": task, "batch": batch, "flush_s": flush, "seconds": seconds, "warmup_s": warmup,
        "items_per_s": len(window) / seconds, "ideal_items_per_s": ideal,
        "efficiency_steady": len(window) / seconds / ideal,
        "root_cpu_share": busy(cpus[0]),
        "busiest_relay_cpu_share": max((busy(cpus[i]) for i in order[1:]), default=0.0),
        "gap_median_s": statistics.median(all_gaps) if all_gaps else None,
        "gap_median_by_depth_s": {str(d): statistics.median(g) for d, g in sorted(gaps.items()) if g},
        "depth": max(depth.values()), "events": clock.events,
    }


def percentile(data: list[float], fraction: float) -> float | None:
    if not data:
        return None
    data = sorted(data)
    return data[min(len(data) - 1, max(0, round(fraction * (len(data) - 1))))]


def costs_dict(costs: Costs) -> dict[str, Any]:
    return {**asdict(costs), "hop": costs.hop}


def balanced(n: int, degree: int) -> dict[int, int]:
    """The tree a level-by-level fill would make: node i's parent, breadth first (0 is the root)."""
    return {i: (i - 1) // degree for i in range(1, n + 1)}
