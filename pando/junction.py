"""Where joins meet the tree at one node (the root, or a relay): taken here, or passed to a child.

A join taken here is answered by this node's gateway; one passed down waits
for the child's ``answer`` frame, which goes back the way the offer came.
The overlay says which; the junction does it and remembers the replies owed.
"""
from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Callable

from pando import protocol
from pando.gateway import Gateway, Reply
from pando.overlay import Accept, Forward, Overlay

if TYPE_CHECKING:
    from pando.session import Session

#: Most joins passed down and not yet answered (each expires after the bootstrap timeout anyway).
MAX_PASSED = 1024


class Junction:
    """Routes joins at one node; ``changed`` is called whenever this node's subtree changes."""

    def __init__(self, overlay: Overlay[Session], gateway: Gateway, changed: Callable[[], None]) -> None:
        self.overlay = overlay
        self._gateway = gateway
        self._changed = changed
        self._lock = threading.Lock()
        self._passed: dict[str, tuple[float, Reply]] = {}  # joiner -> (deadline, reply)

    def offer(self, join: protocol.Join, reply: Reply) -> None:
        """A joiner's offer: take it here, pass it down, or refuse it (through ``reply``)."""
        route = self.overlay.route(join.nodes, join.avoid, join.hops)
        if isinstance(route, Accept):
            self._gateway.offer(join.joiner, join.sdp, reply)
            self._changed()
        elif isinstance(route, Forward):
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
            route.child.join(protocol.Join(join.joiner, join.sdp, join.nodes, join.avoid, join.hops + 1))
        else:
            reply(join.joiner, "", route.message)

    def answered(self, answer: protocol.Answer) -> None:
        """A child's answer to a join passed down: back the way it came."""
        with self._lock:
            entry = self._passed.pop(answer.joiner, None)
        if entry is not None:
            entry[1](answer.joiner, answer.sdp, answer.message)

    def left(self, session: Session) -> None:
        self.overlay.remove(session)
        self._changed()

    def changed(self) -> None:
        self._changed()
