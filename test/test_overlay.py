"""The tree's routing (pando/overlay.py) against a model tree: random joins, leaves and interior deaths.

Each model node has its own Overlay, as each volunteer does; statuses go up
after every change (the nodes send them within 0.2 s). Whatever happens, the
tree stays a tree under the root, no node holds more than D children, a
join never lands under a node it must avoid, and an orphan's subtree comes
back whole.
"""
from __future__ import annotations

import itertools
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from pando.overlay import Accept, Forward, Overlay, Refuse, Subtree, Wait

ROOT = "root"


class Tree:
    """Model volunteers, each with the overlay its process would hold."""

    def __init__(self, degree: int) -> None:
        self.degree = degree
        self.parent: dict[str, str | None] = {ROOT: None}
        self.relay: dict[str, bool] = {ROOT: True}
        self.overlays: dict[str, Overlay[str]] = {ROOT: Overlay(degree)}
        self.names = (f"n{i}" for i in itertools.count())

    def children(self, node: str) -> list[str]:
        return [child for child, parent in self.parent.items() if parent == node]

    def subtree(self, node: str) -> list[str]:
        found = [node]
        for child in self.children(node):
            found += self.subtree(child)
        return found

    def route(self, nodes: int, avoid: tuple[str, ...]) -> str | None:
        """Where a join lands: the node that accepts it, or None if it must wait or is refused."""
        node, hops = ROOT, 0
        while True:
            route = self.overlays[node].route(nodes, avoid, hops)
            if isinstance(route, Accept):
                return node  # attach() adds it, ending the join
            if isinstance(route, (Wait, Refuse)):
                return None
            assert isinstance(route, Forward)
            assert route.child in self.children(node), f"{node} passed a join to {route.child}, not its child"
            assert route.child not in avoid, f"a join passed to {route.child}, which it avoids"
            node, hops = route.child, hops + 1

    def attach(self, node: str, parent: str) -> None:
        self.parent[node] = parent
        workers = len(self.subtree(node))
        self.overlays[parent].add(node, Subtree(node, self.relay[node], workers), joined=True)
        self.refresh(node)  # a joined node sends its status at once

    def detach(self, node: str) -> None:
        parent = self.parent[node]
        assert parent is not None
        self.overlays[parent].remove(node)
        self.parent[node] = None
        self.refresh(parent)

    def refresh(self, node: str | None) -> None:
        """Statuses up the path from ``node`` to the root (one worker per node)."""
        while node is not None and node != ROOT and self.parent.get(node) is not None:
            parent = self.parent[node]
            assert parent is not None
            self.overlays[parent].update(node, self.overlays[node].summary(1))
            node = parent

    def depth(self, node: str) -> int:
        depth = 0
        while (parent := self.parent[node]) is not None:
            node, depth = parent, depth + 1
            assert depth <= len(self.parent), "a cycle"
        return depth


class TreeMachine(RuleBasedStateMachine):
    @initialize(degree=st.integers(1, 4))
    def start(self, degree: int) -> None:
        self.tree = Tree(degree)
        self.lost: list[tuple[str, tuple[str, ...]]] = []  # orphans that could not re-join yet

    @rule(relay=st.booleans())
    def join(self, relay: bool) -> None:
        name = next(self.tree.names)
        self.tree.relay[name] = relay
        self.tree.overlays[name] = Overlay(self.tree.degree, relay=relay)
        parent = self.tree.route(1, ())
        if parent is None:
            assert not self.has_room(), "a join was refused while a relay had room"
            del self.tree.relay[name], self.tree.overlays[name]
            return
        self.tree.attach(name, parent)

    def attached(self) -> list[str]:
        """Nodes in the tree under the root (not an orphan's subtree still waiting to re-join)."""
        return self.tree.subtree(ROOT)[1:]

    def has_room(self) -> bool:
        return any(self.tree.relay[n] and len(self.tree.children(n)) < self.tree.degree
                   for n in [ROOT, *self.attached()])

    @precondition(lambda self: any(not self.tree.children(n) for n in self.attached()))
    @rule(data=st.data())
    def leaf_leaves(self, data: st.DataObject) -> None:
        leaf = data.draw(st.sampled_from([n for n in self.attached() if not self.tree.children(n)]))
        self.tree.detach(leaf)
        del self.tree.parent[leaf]

    @precondition(lambda self: any(self.tree.children(n) for n in self.attached()))
    @rule(data=st.data())
    def interior_dies(self, data: st.DataObject) -> None:
        """An interior node dies: each orphan re-joins with its subtree, avoiding the dead node."""
        dead = data.draw(st.sampled_from([n for n in self.attached() if self.tree.children(n)]))
        orphans = self.tree.children(dead)
        self.tree.detach(dead)
        for orphan in orphans:
            self.tree.overlays[dead].remove(orphan)
            self.tree.parent[orphan] = None
        del self.tree.parent[dead]
        for orphan in orphans:
            self.rejoin(orphan, (dead,))

    def rejoin(self, orphan: str, avoid: tuple[str, ...]) -> None:
        before = set(self.tree.subtree(orphan))
        parent = self.tree.route(len(before), avoid)
        if parent is None:
            self.lost.append((orphan, avoid))
            return
        assert parent not in avoid and parent not in before, f"{orphan} would hang under {parent}"
        self.tree.attach(orphan, parent)
        assert set(self.tree.subtree(orphan)) == before, "the subtree did not come back whole"

    @precondition(lambda self: self.lost)
    @rule()
    def lost_ones_try_again(self) -> None:
        waiting, self.lost = self.lost, []
        for orphan, avoid in waiting:
            self.rejoin(orphan, avoid)

    @invariant()
    def a_tree_within_degree(self) -> None:
        tree = getattr(self, "tree", None)
        if tree is None:
            return
        for node in [ROOT, *self.attached()]:
            assert len(tree.children(node)) <= tree.degree, f"{node} holds {len(tree.children(node))}"
            assert tree.relay[node] or not tree.children(node), f"{node} cannot relay yet has children"
            tree.depth(node)  # reaches the root, with no cycle
            children = tree.overlays[node].children()
            assert set(children) == set(tree.children(node))
        summary = tree.overlays[ROOT].summary(0)
        assert summary.nodes == 1 + len(self.attached())


TestTree = TreeMachine.TestCase
TestTree.settings = settings(max_examples=300, stateful_step_count=40, deadline=None,
                             suppress_health_check=[HealthCheck.too_slow])


@settings(max_examples=60, deadline=None)
@given(degree=st.integers(2, 6), count=st.integers(1, 150))
def test_balanced_without_churn(degree: int, count: int) -> None:
    """Joins one at a time with fresh statuses fill the tree level by level: depth stays logarithmic."""
    tree = Tree(degree)
    for _ in range(count):
        name = next(tree.names)
        tree.relay[name] = True
        tree.overlays[name] = Overlay(degree)
        parent = tree.route(1, ())
        assert parent is not None
        tree.attach(name, parent)
    deepest = max(tree.depth(node) for node in tree.parent)
    assert deepest <= math.ceil(math.log(count * (degree - 1) + 1, degree)) + 1, deepest


def test_a_slot_stays_taken_from_the_accepted_join_to_its_child() -> None:
    """Between a join's channel opening and its hello, nobody else takes the slot."""
    overlay: Overlay[str] = Overlay(2)
    assert overlay.route(1) == Accept() and overlay.route(1) == Accept()
    assert overlay.route(1) == Wait()  # both slots are under way
    overlay.add("first", Subtree("a" * 16, False, 1), joined=True)
    assert overlay.route(1) == Wait()  # still full: one child, one join under way
    overlay.join_ended()  # the second join failed
    assert overlay.route(1) == Accept()


def test_a_join_past_the_hop_limit_is_refused() -> None:
    overlay: Overlay[str] = Overlay(1)
    overlay.add("child", Subtree("c" * 16, True, 1))
    assert isinstance(overlay.route(1, (), hops=40), Refuse)
    assert overlay.route(1, ("c" * 16,)) == Wait()  # room may come elsewhere


def test_a_volunteer_that_takes_no_children_refuses_joins() -> None:
    assert Overlay(3, relay=False).route(1) == Refuse("this volunteer takes no children")
