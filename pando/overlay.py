"""One node's view of the tree: its children, their subtrees, and where a join goes.

Pure bookkeeping under a lock, like the lender: sessions report children
joining, leaving and sending status; the node asks where to send a joiner.
The root and every relay hold one.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Generic, Hashable, TypeVar

#: A join passed down more often than this is refused (the tree is never this deep).
MAX_HOPS = 32

K = TypeVar("K", bound=Hashable)


@dataclass
class Subtree:
    """A child and what hangs under it, from its latest status."""

    node: str
    relay: bool
    workers: int
    nodes: int = 1
    free: int = 0
    depth: int = 0
    #: Levels below the child to its nearest free slot (0: the child has room; None: no room below).
    nearest: int | None = None


@dataclass(frozen=True)
class Accept:
    """Take the joiner as a child here."""


@dataclass(frozen=True)
class Forward(Generic[K]):
    """Pass the join to this child."""

    child: K


@dataclass(frozen=True)
class Wait:
    """No room here or below yet: hold the join until the tree changes (joins under way become
    children with room of their own; statuses bring news of room below)."""


@dataclass(frozen=True)
class Refuse:
    """Nobody here can take it."""

    message: str


Route = Accept | Forward[K] | Wait | Refuse


@dataclass(frozen=True)
class Summary:
    """A node's subtree, as its status frame tells its parent."""

    nodes: int
    workers: int
    free: int
    depth: int
    nearest: int | None


class Overlay(Generic[K]):
    """The children of one node (keys: its sessions) and the joins it has taken but not yet seen open."""

    def __init__(self, degree: int, relay: bool = True) -> None:
        self._degree = degree if relay else 0
        self._lock = threading.Lock()
        self._children: dict[K, Subtree] = {}
        self._joining = 0

    def add(self, key: K, child: Subtree, joined: bool = False) -> None:
        """A child joined; a relay has this node's degree of free slots until its first status says otherwise.

        ``joined``: it is a join this node accepted (:meth:`route`), which stops counting as under way at
        the same moment, so that no other join takes its slot in between.
        """
        with self._lock:
            if child.relay:
                child.free, child.nearest = self._degree, 0
            self._children[key] = child
            if joined:
                self._joining = max(0, self._joining - 1)

    def remove(self, key: K) -> None:
        with self._lock:
            self._children.pop(key, None)

    def update(self, key: K, summary: Summary) -> None:
        """A child's status."""
        with self._lock:
            child = self._children.get(key)
            if child is not None:
                child.nodes, child.workers, child.free = summary.nodes, summary.workers, summary.free
                child.depth, child.nearest = summary.depth, summary.nearest

    def join_ended(self) -> None:
        """A join this node accepted failed (no answer, no channel, no hello): its slot is free again."""
        with self._lock:
            self._joining = max(0, self._joining - 1)

    def route(self, nodes: int, avoid: tuple[str, ...] = (), hops: int = 0) -> Route[K]:
        """Where a joiner bringing ``nodes`` goes: here while there is room, else toward the nearest free
        slot below (the most free slots, then the smallest subtree, among equals): the tree stays shallow.
        With no room known anywhere below, the join waits (:class:`Wait`) for the tree to change.

        Accepting counts the join against this node's room until :meth:`join_ended`.
        """
        with self._lock:
            if hops > MAX_HOPS:
                return Refuse(f"the join went down {MAX_HOPS} levels without finding room")
            if len(self._children) + self._joining < self._degree:
                self._joining += 1
                return Accept()
            candidates = [(child.nearest, -child.free, child.nodes, key) for key, child in self._children.items()
                          if child.relay and child.node not in avoid and child.nearest is not None]
            if not candidates:
                # A crowd arrives faster than statuses climb: holding its joins until room shows
                # costs one routing each, where refusing them cost a retry and its back-off each.
                return Wait() if self._degree else Refuse("this volunteer takes no children")
            key = min(candidates, key=lambda c: c[:3])[3]
            # Until its next status, count the slot this join will take: a burst of joins
            # spreads over the children instead of piling onto the one that looked roomiest.
            child = self._children[key]
            child.free = max(0, child.free - 1)
            if not child.free:
                child.nearest = None
            return Forward(key)

    def summary(self, own_workers: int) -> Summary:
        """This node's subtree: itself with ``own_workers`` and everything below."""
        with self._lock:
            children = list(self._children.values())
            room = max(0, self._degree - len(children) - self._joining)
            below = [c.nearest for c in children if c.relay and c.nearest is not None]
            return Summary(
                nodes=1 + sum(c.nodes for c in children),
                workers=own_workers + sum(c.workers for c in children),
                free=room + sum(c.free for c in children),
                depth=1 + max(c.depth for c in children) if children else 0,
                nearest=0 if room else (1 + min(below) if below else None),
            )

    def children(self) -> dict[K, Subtree]:
        with self._lock:
            return {key: Subtree(**vars(child)) for key, child in self._children.items()}
