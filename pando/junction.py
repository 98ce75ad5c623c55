"""Where joins meet the tree at one node (the root, or a relay): taken here, or passed to a child.

A join taken here is answered by this node's gateway; one passed down waits
for the child's ``answer`` frame, which goes back the way the offer came.
One that finds no room yet waits here, in order of arrival, and is routed
again whenever the tree here changes (a child joins or leaves, a join ends,
a status arrives). The overlay says which; the junction does it and
remembers the replies owed.
"""
from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from pando import protocol
from pando.gateway import Gateway, Reply
from pando.overlay import Accept, Forward, Overlay, Subtree, Summary, Wait

if TYPE_CHECKING:
    from pando.session import Session

#: Most joins passed down and not yet answered, and most waiting for room (each expires after the
#: bootstrap timeout anyway).
MAX_PASSED = 1024
MAX_WAITING = 1024


@dataclass
class _Waiting:
    join: protocol.Join
    reply: Reply
    deadline: float


class Junction:
    """Routes joins at one node; ``changed`` is called whenever this node's subtree changes.

    Every change to the overlay goes through here, so that joins waiting for room are routed again.
    """

    def __init__(self, overlay: Overlay[Session], gateway: Gateway, changed: Callable[[], None]) -> None:
        self.overlay = overlay
        self._gateway = gateway
        self._changed = changed
        self._lock = threading.Lock()
        self._passed: dict[str, tuple[float, Reply]] = {}  # joiner -> (deadline, reply)
        self._waiting: collections.deque[_Waiting] = collections.deque()

    def offer(self, join: protocol.Join, reply: Reply) -> None:
        """A joiner's offer: taken here, passed down, held until there is room, or refused (through ``reply``)."""
        deadline = time.monotonic() + self._gateway.config["bootstrap_timeout"]
        with self._lock:
            full = len(self._waiting) >= MAX_WAITING
            if not full:
                self._waiting.append(_Waiting(join, reply, deadline))
        if full:
            reply(join.joiner, "", "too many joins under way; try again shortly")
        self._route_waiting()

    def _route_waiting(self) -> None:
        """Route the waiting joins in order, until one must wait on."""
        while True:
            now = time.monotonic()
            with self._lock:
                expired = [w for w in self._waiting if w.deadline < now]
                for waiting in expired:
                    self._waiting.remove(waiting)
                if not self._waiting:
                    route = None
                else:
                    waiting = self._waiting[0]
                    join = waiting.join
                    route = self.overlay.route(join.nodes, join.avoid, join.hops)
                    if not isinstance(route, Wait):
                        self._waiting.popleft()
            for stale in expired:
                stale.reply(stale.join.joiner, "", "no room in the tree before the bootstrap timeout")
            if route is None or isinstance(route, Wait):
                return
            if isinstance(route, Accept):
                self._gateway.offer(join.joiner, join.sdp, waiting.reply)
                self._changed()
            elif isinstance(route, Forward):
                self._pass(route.child, join, waiting.reply)
            else:
                waiting.reply(join.joiner, "", route.message)

    def _pass(self, child: Session, join: protocol.Join, reply: Reply) -> None:
        now = time.monotonic()
        with self._lock:
            for joiner, (deadline, _) in list(self._passed.items()):
                if deadline < now:
                    del self._passed[joiner]
            full = len(self._passed) >= MAX_PASSED
            if not full:
                self._passed[join.joiner] = (now + self._gateway.config["bootstrap_timeout"], reply)
        if full:
            reply(join.joiner, "", "too many joins under way; try again shortly")
            return
        child.join(protocol.Join(join.joiner, join.sdp, join.nodes, join.avoid, join.hops + 1))

    def answered(self, answer: protocol.Answer) -> None:
        """A child's answer to a join passed down: back the way it came."""
        with self._lock:
            entry = self._passed.pop(answer.joiner, None)
        if entry is not None:
            entry[1](answer.joiner, answer.sdp, answer.message)

    def joined(self, session: Session, child: Subtree) -> None:
        """A child said hello: the join this node accepted for it is over."""
        self.overlay.add(session, child, joined=True)
        self._tree_changed()

    def join_ended(self) -> None:
        """A join this node accepted failed: its slot is free again."""
        self.overlay.join_ended()
        self._route_waiting()

    def status(self, session: Session, summary: Summary) -> None:
        """A child's status: its subtree now."""
        self.overlay.update(session, summary)
        self._tree_changed()

    def forget(self) -> None:
        """This node lost its parent: the replies owed for joins held or passed down go nowhere now."""
        with self._lock:
            self._waiting.clear()
            self._passed.clear()

    def left(self, session: Session) -> None:
        self.overlay.remove(session)
        self._tree_changed()

    def _tree_changed(self) -> None:
        self._changed()
        self._route_waiting()
