"""Property-based tests of the lender's bookkeeping (pando/lender.py).

A ``RuleBasedStateMachine`` drives one ``Lender`` through random schedules of
batches added, holders joining (some local) and leaving, assignments, right,
late, foreign and duplicate results, ``lost`` reports and item failures, and
checks every answer against a small model of what the lender must do.  Its
teardown drives the run to completion and checks that nothing was lost.
"""
from __future__ import annotations

import itertools
import math
import sys
import time

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from pando.lender import Failure, Lender

pytestmark = pytest.mark.timeout(120)

MAX_LOSSES = 3  # the lender's default

values = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n"), max_size=6)


class _Holder:
    """A model holder: what the lender must believe about one session."""

    def __init__(self, key: object, capacity: int, local: bool, name: str) -> None:
        self.key = key
        self.capacity = max(1, capacity)  # the lender never lets a holder hold nothing
        self.local = local
        self.name = name
        self.workers = self.capacity  # joined without saying: as many as its capacity
        self.held: set[int] = set()
        self.order: list[int] = []  # what it holds, in the order it got it
        self.ever_held: set[int] = set()
        self.shrunk = False  # its capacity was cut below what it held: nothing is taken back

    def __repr__(self) -> str:
        return f"<holder {self.key!r}{' local' if self.local else ''} capacity {self.capacity}>"


class LenderMachine(RuleBasedStateMachine):
    """The lender against a model, rule by rule."""

    def __init__(self) -> None:
        super().__init__()
        self.lender = Lender(retries=0)  # the model fails an item on its first error
        self.keys = itertools.count()
        self.values: dict[int, str] = {}  # every id ever added
        self.fresh: list[int] = []  # never lent, ascending
        self.again: set[int] = set()  # lent, holder lost, to lend again
        self.losses: dict[int, int] = {}
        self.live: dict[object, _Holder] = {}  # joined and not left, in join order
        self.gone: list[_Holder] = []  # left, with what they held when they left
        self.accepted: dict[int, str] = {}  # id -> line accepted
        self.accepted_by: dict[int, object] = {}
        self.failed: dict[int, Failure] = {}
        self.forgotten: set[int] = set()  # items dropped by clear()
        self.failed_before_clear: set[int] = set()
        self.stop_after: int | None = None
        self.counts = {"lent": 0, "relent": 0, "done": 0, "failed": 0, "speculative": 0, "timed_out": 0,
                       "retried": 0, "disagreements": 0}

    # -- the model's derived views ----------------------------------------

    def pool(self) -> list[int]:
        """Ids the lender may lend now, in the order it must lend them."""
        limit = self.stop_after
        again = sorted(i for i in self.again if limit is None or i <= limit)
        fresh = [i for i in self.fresh if limit is None or i <= limit]
        return again + fresh

    def eligible(self) -> list[_Holder]:
        """Holders that may get items now: locals only while no one else is joined."""
        others = any(not h.local for h in self.live.values())
        return [h for h in self.live.values() if not (h.local and others)]

    def held_anywhere(self) -> set[int]:
        return set().union(*(h.held for h in self.live.values()))

    @staticmethod
    def release(holder: _Holder, item_id: int) -> None:
        if item_id in holder.held:
            holder.held.discard(item_id)
            holder.order.remove(item_id)

    def lose(self, item_id: int, holder: _Holder) -> int | None:
        """The model's ``_lost``: the id if it must fail now, else None."""
        self.losses[item_id] = self.losses.get(item_id, 0) + 1
        if self.losses[item_id] >= MAX_LOSSES:
            return item_id
        self.again.add(item_id)
        self.counts["relent"] += 1
        return None

    def record_failure(self, failure: Failure, expected_id: int, holder: _Holder) -> None:
        assert failure.id == expected_id
        assert failure.value == self.values[expected_id]
        assert failure.holder == holder.name
        assert expected_id not in self.failed and expected_id not in self.accepted
        self.failed[expected_id] = failure
        self.counts["failed"] += 1
        self.losses.pop(expected_id, None)
        if self.stop_after is None or expected_id < self.stop_after:
            self.stop_after = expected_id

    def snapshot(self) -> tuple[object, ...]:
        """What the lender shows from outside: used to check that a call changed nothing."""
        return (
            self.lender.pending(),
            tuple(self.lender.holders()),
            tuple(frozenset(self.lender.held(h.key)) for h in self.live.values()),
            self.lender.held_counts(),
            self.lender.counts(),
        )

    # -- the reader -------------------------------------------------------

    @initialize(batch=st.lists(values, max_size=6))
    def first_batch(self, batch: list[str]) -> None:
        self.add(batch)

    @rule(batch=st.lists(values, min_size=1, max_size=6))
    def add(self, batch: list[str]) -> None:
        start = len(self.values)
        items = list(zip(range(start, start + len(batch)), batch))
        self.lender.add(items)
        for item_id, value in items:
            self.values[item_id] = value
            self.fresh.append(item_id)

    # -- holders ----------------------------------------------------------

    @rule(capacity=st.integers(0, 4), local=st.booleans(), named=st.booleans())
    def join(self, capacity: int, local: bool, named: bool) -> None:
        number = next(self.keys)
        key = ("session", number)
        name = f"volunteer {number}" if named else str(key)
        if named:
            self.lender.join(key, capacity, name=name, local=local)
        else:
            self.lender.join(key, capacity, local=local)
        self.live[key] = _Holder(key, capacity, local, name)

    @precondition(lambda self: self.live)
    @rule(data=st.data(), capacity=st.integers(0, 5))
    def resize(self, data: st.DataObject, capacity: int) -> None:
        """A relay's subtree changed: its capacity follows, and nothing it holds is taken back."""
        holder = data.draw(st.sampled_from(list(self.live.values())), label="resized")
        self.lender.resize(holder.key, capacity)
        holder.capacity = max(1, capacity)
        holder.shrunk = len(holder.held) > holder.capacity

    @rule()
    def clear(self) -> None:
        """A relay lost its parent: every item is forgotten, holders stay, holding nothing."""
        self.lender.clear()
        self.forgotten |= set(self.values) - set(self.accepted) - set(self.failed)
        self.failed_before_clear = set(self.failed)
        self.fresh, self.again, self.stop_after = [], set(), None
        self.losses.clear()
        for holder in self.live.values():
            holder.held = set()
            holder.order = []
            holder.shrunk = False

    @precondition(lambda self: self.live)
    @rule(data=st.data(), blame=st.sampled_from([True, True, True, False]))
    def leave(self, data: st.DataObject, blame: bool) -> None:
        """A session ends; ``blame`` False (it broke the protocol) lends its items again without counting a loss."""
        self.leave_holder(data.draw(st.sampled_from(list(self.live.values())), label="leaver"), blame)

    def leave_holder(self, holder: _Holder, blame: bool = True) -> None:
        if blame:
            failures = self.lender.leave(holder.key)
        else:
            failures = self.lender.leave(holder.key, blame_items=False)
        del self.live[holder.key]
        self.gone.append(holder)
        # Only the items it could have been computing (its first, one per worker) count the loss.
        running = set(holder.order[: holder.workers]) if blame else set()
        expected = [item_id for item_id in sorted(running) if self.lose(item_id, holder) is not None]
        self.again |= holder.held - running
        self.counts["relent"] += len(holder.held - running)
        assert [f.id for f in failures] == expected
        for failure in failures:
            self.record_failure(failure, failure.id, holder)
            assert f"lost {MAX_LOSSES} times" in failure.details and "disconnected" in failure.details
        assert holder.key not in self.lender.holders()
        assert self.lender.held(holder.key) == set()
        holder.held = set()
        holder.order = []

    def leave_again(self, data: st.DataObject) -> None:
        """A holder that already left leaves again: nothing happens."""
        holder = data.draw(st.sampled_from(self.gone), label="gone")
        before = self.snapshot()
        assert self.lender.leave(holder.key) == []
        assert self.snapshot() == before

    # -- the dispatcher ---------------------------------------------------

    @rule()
    def assign(self) -> None:
        pool = self.pool()
        eligible = self.eligible()
        room = sum(max(0, h.capacity - len(h.held)) for h in eligible)
        already = self.held_anywhere()
        out = self.lender.assign()

        given_ids: list[int] = []
        seen_holders = set()
        for key, items in out:
            assert key in self.live, f"items lent to {key!r}, which is not joined"
            assert key not in seen_holders, "one holder listed twice in one assignment"
            seen_holders.add(key)
            holder = self.live[key]
            assert items, "an empty assignment was listed"
            assert holder in eligible, (
                f"local holder {key!r} got {items} while a non-local holder is joined"
            )
            for item_id, value in items:
                assert value == self.values[item_id]
                assert item_id not in already, f"item {item_id} lent to {key!r} while another live holder holds it"
                assert item_id not in self.accepted and item_id not in self.failed
                given_ids.append(item_id)
                holder.held.add(item_id)
                holder.order.append(item_id)
                holder.ever_held.add(item_id)
            assert len(holder.held) <= holder.capacity, f"{key!r} holds {len(holder.held)} > {holder.capacity}"
            holder.shrunk = False
        assert len(given_ids) == len(set(given_ids)), f"an item lent twice in one assignment: {given_ids}"
        if self.stop_after is not None:
            assert all(i <= self.stop_after for i in given_ids), (
                f"items after the failed item {self.stop_after} lent: {given_ids}"
            )
        # Lost items before new ones, the oldest of each kind first, and every
        # eligible holder filled while there is something to lend (which holder
        # gets which depends on its idle workers when items are scarce).
        expected = pool[: min(room, len(pool))]
        assert sorted(given_ids) == sorted(expected), f"lent {given_ids}, expected {expected} (pool {pool}, room {room})"
        self.counts["lent"] += len(given_ids)
        for item_id in given_ids:
            self.again.discard(item_id)
        self.fresh = [i for i in self.fresh if i not in set(given_ids)]

    # -- sessions reporting -----------------------------------------------

    def holders_holding(self) -> list[_Holder]:
        return [h for h in self.live.values() if h.held]

    @precondition(lambda self: any(h.held for h in self.live.values()))
    @rule(data=st.data())
    def complete(self, data: st.DataObject) -> None:
        """Results from the holder, in any order, maybe with foreign ids and repeats in the batch."""
        holder = data.draw(st.sampled_from(self.holders_holding()), label="holder")
        mine = data.draw(st.lists(st.sampled_from(sorted(holder.held)), min_size=1, unique=True), label="mine")
        foreign_ids = sorted(set(self.values) - holder.held) + [len(self.values) + 5]
        foreign = data.draw(st.lists(st.sampled_from(foreign_ids), max_size=3), label="foreign")
        repeats = data.draw(st.lists(st.sampled_from(mine), max_size=2), label="repeats")
        batch_ids = data.draw(st.permutations(mine + foreign + repeats), label="order")
        results = [(i, f"line {i} try {n}") for n, i in enumerate(batch_ids)]
        accepted = self.lender.complete(holder.key, results).accepted
        expected, seen = [], set()
        for item_id, line in results:
            if item_id in holder.held and item_id not in seen:
                seen.add(item_id)
                expected.append((item_id, line))
        assert accepted == expected
        for item_id, line in accepted:
            assert item_id not in self.accepted, f"item {item_id} accepted twice"
            self.accepted[item_id] = line
            self.accepted_by[item_id] = holder.key
            self.counts["done"] += 1
            self.release(holder, item_id)
            self.losses.pop(item_id, None)

    def late_result_from_leaver(self, data: st.DataObject) -> None:
        """A holder that left answers for what it held: dropped, whoever holds it now."""
        holder = data.draw(st.sampled_from(self.gone), label="gone")
        ids = sorted(holder.ever_held) or [0]
        batch = data.draw(st.lists(st.sampled_from(ids), min_size=1, max_size=4), label="ids")
        before = self.snapshot()
        assert self.lender.complete(holder.key, [(i, "late") for i in batch]).accepted == []
        assert self.snapshot() == before

    def result_not_held(self, data: st.DataObject) -> None:
        """A live holder answers for ids it does not hold (someone else's, done, failed, never lent, unknown)."""
        holder = data.draw(st.sampled_from(list(self.live.values())), label="holder")
        ids = sorted(set(self.values) - holder.held) + [len(self.values), len(self.values) + 7]
        batch = data.draw(st.lists(st.sampled_from(ids), min_size=1, max_size=4), label="ids")
        before = self.snapshot()
        assert self.lender.complete(holder.key, [(i, "stray") for i in batch]).accepted == []
        assert self.snapshot() == before

    def duplicate_result(self, data: st.DataObject) -> None:
        """The same result again, from the holder that gave it: dropped."""
        item_id = data.draw(st.sampled_from(sorted(self.accepted)), label="id")
        key = self.accepted_by[item_id]
        before = self.snapshot()
        assert self.lender.complete(key, [(item_id, "again")]).accepted == []
        assert self.lender.fail(key, item_id, "again") is None
        assert self.lender.lost(key, item_id, "again") is None
        assert self.snapshot() == before

    def report_from_stranger(self, data: st.DataObject) -> None:
        """A key that never joined reports anything: dropped."""
        kind = data.draw(st.sampled_from(["complete", "fail", "lost"]), label="kind")
        item_id = data.draw(st.sampled_from(sorted(self.values) or [0]), label="id")
        before = self.snapshot()
        stranger = ("stranger", item_id)
        if kind == "complete":
            assert self.lender.complete(stranger, [(item_id, "x")]).accepted == []
        elif kind == "fail":
            assert self.lender.fail(stranger, item_id, "x") is None
        else:
            assert self.lender.lost(stranger, item_id, "x") is None
        assert self.snapshot() == before

    @precondition(lambda self: any(h.held for h in self.live.values()))
    @rule(data=st.data())
    def lost(self, data: st.DataObject) -> None:
        holder = data.draw(st.sampled_from(self.holders_holding()), label="holder")
        item_id = data.draw(st.sampled_from(sorted(holder.held)), label="id")
        self.lose_one(holder, item_id)

    def most_lost(self) -> int | None:
        """The item lost most often so far and still to do (held or waiting to be lent again)."""
        candidates = [i for i in self.losses if i not in self.accepted and i not in self.failed]
        if not candidates:
            return None
        return max(candidates, key=lambda i: (self.losses[i], -i))

    @precondition(lambda self: self.most_lost() is not None)
    @rule(leaves=st.lists(st.booleans(), min_size=1, max_size=MAX_LOSSES))
    def lose_again(self, leaves: list[bool]) -> None:
        """Lend the item lost most often so far and lose it again, a few times over.

        Each loss is its holder leaving (then a like holder joining) or a lost()
        report. Random schedules rarely lose one item three times; this rule
        makes it common.
        """
        item_id = self.most_lost()
        assert item_id is not None
        for leave in leaves:
            self.assign()
            holder = next((h for h in self.live.values() if item_id in h.held), None)
            if holder is None:
                break  # nobody may hold it now (no room, or past a failure)
            if leave:
                self.leave_holder(holder)
                self.join(holder.capacity, holder.local, False)
            else:
                self.lose_one(holder, item_id)

    def lose_one(self, holder: _Holder, item_id: int) -> None:
        failure = self.lender.lost(holder.key, item_id, "its worker died")
        self.release(holder, item_id)
        should_fail = self.lose(item_id, holder)
        if should_fail is None:
            assert failure is None, f"item {item_id} failed after {self.losses[item_id]} losses"
        else:
            assert failure is not None, f"item {item_id} not failed after {self.losses[item_id]} losses"
            assert f"lost {MAX_LOSSES} times" in failure.details and "its worker died" in failure.details
            self.record_failure(failure, item_id, holder)
        assert item_id not in self.lender.held(holder.key)

    @precondition(lambda self: any(h.held for h in self.live.values()))
    @rule(data=st.data())
    def fail(self, data: st.DataObject) -> None:
        holder = data.draw(st.sampled_from(self.holders_holding()), label="holder")
        item_id = data.draw(st.sampled_from(sorted(holder.held)), label="id")
        failure = self.lender.fail(holder.key, item_id, f"Traceback {item_id}")
        self.release(holder, item_id)
        assert failure is not None
        assert failure.details == f"Traceback {item_id}"
        self.record_failure(failure, item_id, holder)

    def report_not_held(self, data: st.DataObject) -> None:
        """fail()/lost() from a live holder for an id it does not hold: dropped."""
        kind = data.draw(st.sampled_from(["fail", "lost"]), label="kind")
        holder = data.draw(st.sampled_from(list(self.live.values())), label="holder")
        ids = sorted(set(self.values) - holder.held) + [len(self.values) + 3]
        item_id = data.draw(st.sampled_from(ids), label="id")
        before = self.snapshot()
        if kind == "fail":
            assert self.lender.fail(holder.key, item_id, "x") is None
        else:
            assert self.lender.lost(holder.key, item_id, "x") is None
        assert self.snapshot() == before

    def report_from_leaver(self, data: st.DataObject) -> None:
        """fail()/lost() from a holder that left, for what it held: dropped."""
        kind = data.draw(st.sampled_from(["fail", "lost"]), label="kind")
        holder = data.draw(st.sampled_from(self.gone), label="gone")
        item_id = data.draw(st.sampled_from(sorted(holder.ever_held) or [0]), label="id")
        before = self.snapshot()
        if kind == "fail":
            assert self.lender.fail(holder.key, item_id, "x") is None
        else:
            assert self.lender.lost(holder.key, item_id, "x") is None
        assert self.snapshot() == before

    @rule(data=st.data())
    def stray_report(self, data: st.DataObject) -> None:
        """One report the lender must drop, changing nothing (one rule, so they do not crowd out the rest)."""
        kinds = [self.report_from_stranger]
        if self.live:
            kinds += [self.result_not_held, self.report_not_held]
        if self.gone:
            kinds += [self.leave_again, self.late_result_from_leaver, self.report_from_leaver]
        if self.accepted:
            kinds.append(self.duplicate_result)
        data.draw(st.sampled_from(kinds), label="kind")(data)

    # -- invariants -------------------------------------------------------

    @invariant()
    def matches_model(self) -> None:
        assert set(self.lender.holders()) == set(self.live)
        seen: set[int] = set()
        for holder in self.live.values():
            held = self.lender.held(holder.key)
            assert held == holder.held, f"{holder.key!r} holds {held}, expected {holder.held}"
            assert len(held) <= holder.capacity or holder.shrunk
            assert not held & seen, f"items {held & seen} held by two live holders"
            seen |= held
        assert self.lender.pending() == len(self.values) - len(self.accepted) - len(self.failed) - len(self.forgotten)
        assert self.lender.counts() == self.counts
        assert self.lender.held_counts() == {key: len(h.held) for key, h in self.live.items()}

    # -- the end ----------------------------------------------------------

    def teardown(self) -> None:
        """Drive the run to its end with well-behaved holders: every item is done exactly once."""
        if sys.exc_info()[0] is not None:
            return  # a step already failed (or Hypothesis stopped the run): report that, not this
        if not self.live:
            self.join(2, False, False)
        for _ in range(2 * len(self.values) + 2):
            self.assign()
            busy = self.holders_holding()
            if not busy:
                break
            for holder in busy:
                results = [(i, f"line {i}") for i in sorted(holder.held)]
                accepted = self.lender.complete(holder.key, results).accepted
                assert accepted == results
                for item_id, line in accepted:
                    assert item_id not in self.accepted, f"item {item_id} accepted twice"
                    self.accepted[item_id] = line
                    self.counts["done"] += 1
                holder.held.clear()
                holder.order.clear()
        assert not self.held_anywhere()
        assert not set(self.accepted) & set(self.failed)
        if self.stop_after is None:
            missing = sorted(set(self.values) - set(self.accepted) - set(self.failed) - self.forgotten)
            assert not missing, f"items never accepted: {missing}"
            assert self.lender.pending() == 0
            assert self.lender.assign() == []
        else:
            k = self.stop_after
            assert k == min(set(self.failed) - self.failed_before_clear)
            missing = [i for i in range(k) if i not in self.accepted and i not in self.forgotten and i not in self.failed]
            assert not missing, f"items before the failed item {k} never accepted: {missing}"
            # Nothing after the failure is lent again, however long we wait.
            assert self.lender.assign() == []


TestLenderMachine = LenderMachine.TestCase
TestLenderMachine.settings = settings(
    max_examples=500,
    stateful_step_count=50,
    deadline=None,
    report_multiple_bugs=False,  # shrink one failure, quickly, rather than every kind found
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


# -- focused properties, each easy to read on its own ----------------------


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 12),
    capacities=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    lost_picks=st.lists(st.integers(0, 1000), max_size=6),
)
def test_relent_items_go_first_oldest_first(n: int, capacities: list[int], lost_picks: list[int]) -> None:
    """Items a leaver held come back before never-lent ones, each kind oldest first."""
    lender = Lender()
    lender.add((i, str(i)) for i in range(n))
    lender.join("leaver", max(capacities))
    first = lender.assign()
    lent = [i for _, items in first for i, _ in items]
    assert lent == list(range(min(n, max(capacities))))
    # The leaver gives back a few results first, so what it loses has holes.
    done = {lent[p % len(lent)] for p in lost_picks} if lent else set()
    assert [i for i, _ in lender.complete("leaver", [(i, "r") for i in sorted(done)]).accepted] == sorted(done)
    lender.leave("leaver")
    back = sorted(set(lent) - done)
    never = list(range(len(lent), n))
    for number, capacity in enumerate(capacities):
        lender.join(("next", number), capacity)
    order = [i for _, items in lender.assign() for i, _ in items]
    room = sum(capacities)
    assert order == (back + never)[:room]


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 10), local_capacity=st.integers(1, 3), others=st.integers(1, 3))
def test_local_holder_waits_for_others_to_leave(n: int, local_capacity: int, others: int) -> None:
    lender = Lender()
    lender.join("local", local_capacity, local=True)
    for number in range(others):
        lender.join(number, 1)
    lender.add((i, str(i)) for i in range(n))
    for _ in range(3):
        out = lender.assign()
        assert all(holder != "local" for holder, _ in out)
        assert lender.held("local") == set()
        for holder, items in out:
            lender.complete(holder, items)
    for number in range(others):
        lender.leave(number)
        if number < others - 1:
            assert all(holder != "local" for holder, _ in lender.assign())
    out = lender.assign()
    remaining = lender.pending()
    if remaining:
        assert out and out[0][0] == "local"
        assert len(lender.held("local")) == min(remaining, local_capacity)
    # A non-local holder joining again shuts the local one out of new items.
    lender.join("late", 1)
    assert all(holder != "local" for holder, _ in lender.assign())


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(2, 10),
    k=st.integers(0, 9),
    how=st.sampled_from(["fail", "lost", "leave", "mixed"]),
)
def test_failure_stops_lending_after_it(n: int, k: int, how: str) -> None:
    """Three lost holders (or one failure) fail item k; ids below k still go out, ids above do not."""
    k = k % n
    lender = Lender()
    lender.add((i, f"v{i}") for i in range(n))
    failure = None
    for attempt in range(3):
        holder = ("h", attempt)
        lender.join(holder, n)
        lent = {i for _, items in lender.assign() for i, _ in items}
        assert k in lent
        # Give back everything but k and the items below it (they will need lending later).
        lender.complete(holder, [(i, "r") for i in lent if i > k])
        if how == "fail":
            failure = lender.fail(holder, k, "boom")
            lender.leave(holder)
            break
        use_lost = how == "lost" or (how == "mixed" and attempt % 2 == 0)
        if use_lost:
            result = lender.lost(holder, k, "worker died")
            lender.complete(holder, [(i, "r") for i in lent if i < k])
            assert lender.leave(holder) == []
            failure = result
        else:
            lender.complete(holder, [(i, "r") for i in lent if i < k])
            failures = lender.leave(holder)
            failure = failures[0] if failures else None
        if attempt < 2:
            assert failure is None
    assert failure is not None, f"item {k} not failed"
    assert (failure.id, failure.value) == (k, f"v{k}")
    # Now add more; nothing past k is lent, even though the lender has it. In the
    # "fail" case the items below k went back with their holder: they still go out.
    lender.add((i, f"v{i}") for i in range(n, n + 3))
    lender.join("after", 100)
    lent = [i for _, items in lender.assign() for i, _ in items]
    assert lent == (list(range(k)) if how == "fail" else [])
    assert lender.pending() == 3 + len(lent)


def test_failure_below_keeps_earlier_items_lendable() -> None:
    """After item 3 fails, a lost item 1 is lent again; lost item 5 is not."""
    lender = Lender()
    lender.add((i, str(i)) for i in range(8))
    lender.join("a", 8)
    lender.assign()
    assert lender.fail("a", 3, "boom") is not None
    assert lender.lost("a", 1, "died") is None
    assert lender.lost("a", 5, "died") is None
    lender.join("b", 8)
    out = lender.assign()
    assert [items for _, items in out] == [[(1, "1")]]


def test_scarce_items_go_one_per_idle_worker_first() -> None:
    """Fewer items than room: every idle worker gets one before any holder gets one to queue."""
    lender: Lender[str] = Lender()
    for name in "abcd":
        lender.join(name, 4, workers=2)  # two workers, and room to queue two more items
    lender.add((i, str(i)) for i in range(7))
    assert [(holder, [i for i, _ in items]) for holder, items in lender.assign()] == [
        ("a", [0, 1]), ("b", [2, 3]), ("c", [4, 5]), ("d", [6])]
    lender.add((i, str(i)) for i in range(7, 20))
    lent = dict(lender.assign())
    assert {holder: len(items) for holder, items in lent.items()} == {"a": 2, "b": 2, "c": 2, "d": 3}
    assert lender.pending() == 20 and sum(lender.held_counts().values()) == 16


def test_a_vanished_holder_costs_a_loss_only_to_the_items_it_could_have_been_computing() -> None:
    """Its first items, one per worker, in the order it got them; those queued behind go back unblamed."""
    lender: Lender[str] = Lender(max_losses=1, halt_on_failure=False)
    lender.join("deep", 6, workers=2)
    lender.add((i, str(i)) for i in range(6))
    lender.assign()
    assert [f.id for f in lender.leave("deep")] == [0, 1]  # one loss was all these could take
    lender.join("next", 6, workers=2)
    assert [i for _, items in lender.assign() for i, _ in items] == [2, 3, 4, 5]


# -- leases, stragglers, retries and verification -------------------------


class Clock:
    """The lender's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class RulesMachine(RuleBasedStateMachine):
    """Timeouts, straggler copies and copies of queued items at the end, retries and --verify votes,
    with honest and lying holders.

    The model does not predict every choice the lender makes; it checks what
    must always hold: a holder never gets a second live copy of an item (nor,
    with verification, any item it answered before), no item is accepted or
    failed twice, a line is accepted only from holders that were lent the item
    (with verification, from at least K distinct ones agreeing, a strict
    majority of the answers), capacities hold, and honest holders finish the run.
    """

    @initialize(verify=st.sampled_from([1, 1, 2, 3]), retries=st.integers(0, 2),
                timeout=st.sampled_from([None, 5.0, 20.0]))
    def start(self, verify: int, retries: int, timeout: float | None) -> None:
        self.clock = Clock()
        self.verify = verify
        self.retries = retries
        self.lender: Lender[tuple[str, int]] = Lender(retries=retries, verify=verify, timeout=timeout,
                                                      straggler_floor=2.0, clock=self.clock)
        self.keys = itertools.count()
        self.values: dict[int, str] = {}
        self.capacity: dict[tuple[str, int], int] = {}
        self.liars: set[tuple[str, int]] = set()
        self.lent: dict[int, set[tuple[str, int]]] = {}  # every holder ever lent the item
        self.answers: dict[int, list[tuple[tuple[str, int], str]]] = {}
        self.accepted: dict[int, str] = {}
        self.failed: set[int] = set()
        self.ended = False

    def line(self, holder: tuple[str, int], item_id: int) -> str:
        return f"lie {holder[1]}" if holder in self.liars else f"good {item_id}"

    @precondition(lambda self: not self.ended)
    @rule(count=st.integers(1, 5))
    def add(self, count: int) -> None:
        start = len(self.values)
        batch = [(i, f"v{i}") for i in range(start, start + count)]
        self.lender.add(batch)
        self.values.update(batch)

    @rule()
    def end(self) -> None:
        """The input ends: idle workers may take copies of items queued elsewhere."""
        self.lender.end()
        self.ended = True

    @rule(capacity=st.integers(1, 3), workers=st.integers(1, 3), liar=st.booleans())
    def join(self, capacity: int, liar: bool, workers: int = 3) -> None:
        key = ("holder", next(self.keys))
        self.lender.join(key, capacity, workers=min(workers, capacity))
        self.capacity[key] = capacity
        if liar:
            self.liars.add(key)

    @precondition(lambda self: self.capacity)
    @rule(data=st.data())
    def leave(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.capacity)))
        self.record(self.lender.leave(key))
        del self.capacity[key]

    @rule()
    def assign(self) -> None:
        for key, items in self.lender.assign():
            for item_id, value in items:
                assert value == self.values[item_id]
                assert item_id not in self.accepted and item_id not in self.failed
                if self.verify > 1:
                    assert key not in self.lent.get(item_id, set()), f"{key} lent {item_id} twice under --verify"
                self.lent.setdefault(item_id, set()).add(key)

    @rule(seconds=st.sampled_from([0.5, 3.0, 30.0]))
    def time_passes(self, seconds: float) -> None:
        self.clock.now += seconds
        self.record(self.lender.sweep())

    @precondition(lambda self: any(self.lender.held(k) for k in self.capacity))
    @rule(data=st.data(), kind=st.sampled_from(["complete", "complete", "fail", "lost"]))
    def report(self, data: st.DataObject, kind: str) -> None:
        key = data.draw(st.sampled_from([k for k in sorted(self.capacity) if self.lender.held(k)]))
        item_id = data.draw(st.sampled_from(sorted(self.lender.held(key))))
        if kind == "complete":
            self.complete(key, [item_id])
        elif kind == "fail":
            self.record([f for f in [self.lender.fail(key, item_id, "Traceback")] if f is not None])
        else:
            self.record([f for f in [self.lender.lost(key, item_id, "worker died")] if f is not None])

    def complete(self, key: tuple[str, int], ids: list[int]) -> None:
        results = [(i, self.line(key, i)) for i in ids]
        for item_id, line in results:
            self.answers.setdefault(item_id, []).append((key, line))
        outcome = self.lender.complete(key, results)
        self.record(outcome.failures)
        for item_id, line in outcome.accepted:
            assert item_id not in self.accepted and item_id not in self.failed, f"item {item_id} ended twice"
            voters = {holder for holder, given in self.answers[item_id] if given == line}
            assert voters <= self.lent[item_id], "a line accepted from a holder never lent the item"
            assert len(voters) >= self.verify, f"item {item_id} accepted with {len(voters)} votes"
            self.accepted[item_id] = line
        for loser, _, item_id in outcome.losers:
            assert (loser, self.accepted[item_id]) not in self.answers[item_id]

    def record(self, failures: list[Failure]) -> None:
        for failure in failures:
            assert failure.id not in self.accepted and failure.id not in self.failed, f"item {failure.id} ended twice"
            self.failed.add(failure.id)

    @invariant()
    def capacities_hold(self) -> None:
        counts = self.lender.held_counts()
        assert set(counts) == set(self.capacity)
        for key, held in counts.items():
            assert held <= self.capacity[key]

    def teardown(self) -> None:
        """Honest holders join and everyone answers everything (liars lie): every item ends, each exactly once."""
        if sys.exc_info()[0] is not None or not hasattr(self, "lender"):
            return
        self.end()
        for _ in range(self.verify + 1):
            self.join(2, False)
        for _ in range(20 * (len(self.values) + 2)):
            self.assign()
            for key in sorted(self.capacity):
                if held := sorted(self.lender.held(key)):
                    self.complete(key, held)
            if self.lender.pending() == 0 or self.failed:
                break
            self.clock.now += 30.0  # liars' and stuck copies time out or get a straggler's copy
            self.record(self.lender.sweep())
        if not self.failed:
            assert self.lender.pending() == 0, "items never ended with honest holders at work"
            assert set(self.accepted) == set(self.values)


TestRulesMachine = RulesMachine.TestCase
TestRulesMachine.settings = settings(max_examples=300, stateful_step_count=40, deadline=None,
                                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def test_a_straggler_gets_one_extra_copy_and_the_first_answer_wins() -> None:
    clock = Clock()
    lender: Lender[str] = Lender(straggler_floor=1.0, clock=clock)
    lender.add([(0, "a"), (1, "b")])
    lender.join("slow", 1)
    lender.join("fast", 1)
    assert sorted((k, [i for i, _ in items]) for k, items in lender.assign()) == [("fast", [1]), ("slow", [0])]
    clock.now += 0.5
    assert lender.complete("fast", [(1, "B")]).accepted == [(1, "B")]
    lender.sweep()
    assert lender.assign() == []  # 0 is not late yet
    clock.now += 2.0
    lender.sweep()
    lender.sweep()  # a second sweep adds no second extra copy
    assert lender.assign() == [("fast", [(0, "a")])]
    assert lender.counts()["speculative"] == 1
    assert lender.complete("fast", [(0, "A")]).accepted == [(0, "A")]
    assert lender.complete("slow", [(0, "late")]).accepted == []  # the straggler's answer is dropped
    assert lender.pending() == 0


def test_at_the_end_an_idle_worker_takes_a_copy_of_an_item_queued_elsewhere() -> None:
    """The input has ended and nothing is left to lend: a queued item is not left behind a running one."""
    lender: Lender[str] = Lender(straggler_floor=math.inf)
    lender.join("busy", 3, workers=1)  # one worker: what it holds past its first item waits
    lender.join("quick", 2, workers=1)
    lender.add((i, str(i)) for i in range(5))
    assert [(k, [i for i, _ in items]) for k, items in lender.assign()] == [("busy", [0, 1, 2]), ("quick", [3, 4])]
    assert lender.complete("quick", [(3, "3"), (4, "4")]).accepted == [(3, "3"), (4, "4")]
    assert lender.assign() == []  # the input may go on: no copies yet
    lender.end()
    # One idle worker: one copy, of the item that would start the latest.
    assert lender.assign() == [("quick", [(2, "2")])]
    assert lender.assign() == []
    assert lender.complete("quick", [(2, "Q")]).accepted == [(2, "Q")]
    assert lender.assign() == [("quick", [(1, "1")])]
    assert lender.complete("busy", [(0, "0"), (1, "B"), (2, "late")]).accepted == [(0, "0"), (1, "B")]
    assert lender.complete("quick", [(1, "late")]).accepted == []  # each item is written once
    assert lender.pending() == 0 and lender.counts()["speculative"] == 2


def test_at_the_end_copies_go_to_the_items_that_would_start_the_latest() -> None:
    """Across holders, by the turn an item would start at on its own: the last of the longest queue
    first, then the next latest wherever it waits; never a running item."""
    lender: Lender[str] = Lender(straggler_floor=math.inf)
    lender.join("long", 5, workers=1)  # items 0 (running), 1, 2, 3, 4 (starts fifth)
    lender.join("short", 3, workers=1)  # items 5 (running), 6, 7 (starts third)
    lender.add((i, str(i)) for i in range(8))
    lender.end()
    assert [(k, [i for i, _ in items]) for k, items in lender.assign()] == [("long", [0, 1, 2, 3, 4]),
                                                                           ("short", [5, 6, 7])]
    lender.join("idle", 3, workers=3)
    assert [(k, sorted(i for i, _ in items)) for k, items in lender.assign()] == [("idle", [3, 4, 7])]
    assert lender.complete("idle", [(3, "3"), (4, "4"), (7, "7")]).accepted == [(3, "3"), (4, "4"), (7, "7")]
    assert [(k, sorted(i for i, _ in items)) for k, items in lender.assign()] == [("idle", [1, 2, 6])]
    assert lender.complete("idle", [(1, "1"), (2, "2"), (6, "6")]).accepted == [(1, "1"), (2, "2"), (6, "6")]
    assert lender.assign() == []  # items 0 and 5 run: no copies of them
    assert lender.counts()["speculative"] == 6


@settings(max_examples=500, deadline=None)
@given(shapes=st.lists(st.tuples(st.integers(1, 3), st.integers(0, 3)), min_size=2, max_size=5),
       count=st.integers(1, 30), picks=st.lists(st.integers(0, 10**6), min_size=200, max_size=200))
# Found in CI: a copy given to an item listed as queued that its holder had started meanwhile.
@example(shapes=[(1, 0), (1, 0), (3, 3), (3, 1), (1, 1)], count=28, picks=[0] * 15 + [6368, 33553] + [0] * 183)
def test_at_the_end_no_worker_idles_while_an_item_waits_in_a_queue_without_a_copy(
        shapes: list[tuple[int, int]], count: int, picks: list[int]) -> None:
    """Holders (workers, room to queue) answer one running item at a time, in random order: every
    item ends once, and after each answer either nothing waits in a queue or no worker is idle."""
    lender: Lender[int] = Lender(straggler_floor=math.inf)
    workers = {}
    for holder, (n, extra) in enumerate(shapes):
        lender.join(holder, n + extra, workers=n)
        workers[holder] = n
    lender.add((i, str(i)) for i in range(count))
    lender.end()
    order: dict[int, list[int]] = {holder: [] for holder in workers}  # what each holder got, in order
    accepted: list[int] = []
    for pick in itertools.cycle(picks):
        for holder, items in lender.assign():
            order[holder] += [i for i, _ in items]
        busy = [holder for holder in workers if order[holder]]
        if not busy:
            break
        holder = busy[pick % len(busy)]
        item_id = order[holder].pop(pick % min(workers[holder], len(order[holder])))  # one of its running items
        accepted += [i for i, _ in lender.complete(holder, [(item_id, "x")]).accepted]
        for other, items in lender.assign():
            order[other] += [i for i, _ in items]
        live = {i for held in order.values() for i in held} - set(accepted)
        idle = sum(max(0, workers[h] - len(order[h])) for h in workers)
        waiting = [i for h in workers for i in order[h][workers[h]:]
                   if i in live and sum(i in order[o] for o in workers) == 1]
        assert not (idle and waiting), f"workers idle while {waiting} wait in a queue with no other copy"
    assert sorted(accepted) == list(range(count)) and lender.pending() == 0


def test_under_verify_the_copy_of_a_queued_item_goes_to_a_holder_that_never_had_it() -> None:
    lender: Lender[str] = Lender(verify=2, straggler_floor=math.inf)
    lender.join("busy", 3, workers=1)
    lender.join("a", 1, workers=1)
    lender.join("b", 1, workers=1)
    lender.add([(0, "0"), (1, "1")])
    lender.end()
    lent = {k: [i for i, _ in items] for k, items in lender.assign()}
    assert lent["busy"] == [0, 1] and sorted(lent["a"] + lent["b"]) == [0, 1]
    for holder in "ab":
        lender.complete(holder, [(lent[holder][0], "x")])
    newcomer = "a" if lent["a"] == [0] else "b"  # the one that never had item 1
    assert lender.assign() == [(newcomer, [(1, "1")])]
    assert lender.complete(newcomer, [(1, "x")]).accepted == [(1, "x")]  # two votes agree
    assert lender.complete("busy", [(0, "x"), (1, "x")]).accepted == [(0, "x")]


def test_no_copies_of_queued_items_past_a_failure() -> None:
    lender: Lender[str] = Lender(straggler_floor=math.inf)
    lender.join("busy", 4, workers=1)
    lender.join("quick", 2, workers=1)
    lender.add((i, str(i)) for i in range(6))
    lender.end()
    assert [(k, [i for i, _ in items]) for k, items in lender.assign()] == [("busy", [0, 1, 2, 3]), ("quick", [4, 5])]
    assert lender.fail("quick", 4, "Traceback") is not None  # nothing past item 4 is written
    lender.complete("quick", [(5, "5")])
    assert lender.assign() == [("quick", [(3, "3")])]  # a copy of what comes before the failure
    lender.complete("quick", [(3, "3")])
    assert lender.fail("busy", 0, "Traceback") is not None  # now nothing past item 0
    assert lender.assign() == []  # items 1 and 2 wait at busy, and quick idles: no copy
    assert lender.counts()["speculative"] == 1  # no copy was even asked for past the failure


def test_an_error_is_retried_on_another_holder_then_fails_with_every_attempt() -> None:
    lender: Lender[str] = Lender(retries=1)
    lender.add([(0, "a")])
    lender.join("one", 1, name="volunteer one")
    lender.join("two", 1, name="volunteer two")
    [(first, _)] = lender.assign()
    assert lender.fail(first, 0, "Traceback one") is None
    [(second, _)] = lender.assign()
    assert second != first  # another holder, while there is one
    failure = lender.fail(second, 0, "Traceback two")
    assert failure is not None
    assert "attempt 1, on volunteer" in failure.details and "Traceback one" in failure.details
    assert "attempt 2, on volunteer" in failure.details and "Traceback two" in failure.details


def test_a_lone_holder_retries_an_error_itself() -> None:
    lender: Lender[str] = Lender(retries=2)
    lender.add([(0, "a")])
    lender.join("alone", 1)
    for _ in range(2):
        assert lender.assign() == [("alone", [(0, "a")])]
        assert lender.fail("alone", 0, "Traceback") is None
    assert lender.assign() == [("alone", [(0, "a")])]
    assert lender.fail("alone", 0, "Traceback") is not None


def test_timeout_takes_a_copy_back_and_counts_a_loss() -> None:
    clock = Clock()
    lender: Lender[str] = Lender(timeout=4.0, clock=clock, straggler_floor=100.0)  # leases last 4 + 1 s
    lender.add([(0, "a")])
    lender.join("stuck", 1, name="volunteer stuck")
    lender.join("other", 1)
    lender.assign()
    holder = next(k for k in ("stuck", "other") if lender.held(k))
    clock.now += 6.0
    assert lender.sweep() == []
    assert lender.counts()["timed_out"] == 1
    assert lender.held(holder) == {0}  # counted against its holder until it answers
    [(again, _)] = lender.assign()
    assert again != holder
    clock.now += 6.0
    assert lender.sweep() == []
    lender.join("third", 1)  # the first two are stuck with their stale copies
    assert lender.assign() == [("third", [(0, "a")])]
    clock.now += 6.0
    failures = lender.sweep()
    assert len(failures) == 1 and "lost 3 times" in failures[0].details and "--timeout 4 s" in failures[0].details


def test_verify_accepts_agreement_and_names_the_outvoted() -> None:
    lender: Lender[str] = Lender(verify=2)
    lender.add([(0, "x")])
    for name in ("a", "b", "c"):
        lender.join(name, 1, name=f"volunteer {name}")
    first = lender.assign()
    assert len(first) == 2  # two distinct holders at once
    (h1, _), (h2, _) = first
    assert lender.complete(h1, [(0, "right")]).accepted == []
    assert lender.complete(h2, [(0, "wrong")]).accepted == []  # a disagreement: a third holder is asked
    [(h3, _)] = lender.assign()
    assert h3 not in (h1, h2)
    outcome = lender.complete(h3, [(0, "right")])
    assert outcome.accepted == [(0, "right")]
    assert [(who, item) for who, _, item in outcome.losers] == [(h2, 0)]


def test_the_item_holding_the_output_back_gets_its_copy_while_everyone_is_busy() -> None:
    clock = Clock()
    lender: Lender[str] = Lender(straggler_floor=1.0, clock=clock)
    lender.add((i, str(i)) for i in range(100))
    lender.join("frozen", 1)
    lender.join("busy", 1)
    lender.assign()
    frozen_item = next(iter(lender.held("frozen")))
    busy_got = []
    for _ in range(5):  # "busy" answers and is refilled with new items, never idle at a sweep
        clock.now += 0.5
        (done,) = lender.held("busy")
        lender.complete("busy", [(done, "r")])
        lender.assign()  # the dispatcher refills at once: at the sweep, nobody has room
        busy_got += lender.held("busy")
        lender.sweep()
    assert frozen_item in busy_got  # its copy went before the new items
    assert lender.counts()["speculative"] == 1


def test_a_relay_lender_passes_failures_up_and_goes_on_lending() -> None:
    lender: Lender[str] = Lender(retries=0, halt_on_failure=False)
    lender.add([(10, "a"), (11, "b"), (12, "c")])
    lender.join("child", 1)
    assert lender.assign() == [("child", [(10, "a")])]
    failure = lender.fail("child", 10, "Traceback")
    assert failure is not None and failure.id == 10
    assert lender.assign() == [("child", [(11, "b")])]  # the root decides about item 10, not the relay
