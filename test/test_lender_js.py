"""pando/web/lender.js against pando/lender.py: the same calls must give the same answers.

A page that relays lends with lender.js what a Python relay lends with
``Lender(retries=0, halt_on_failure=False, straggler_floor=math.inf)``. Each
example draws a random call sequence (items added, some lent again by the
parent, held, done or not; holders joining, leaving with or without blame,
resized, cleared; assignments; results, errors and losses for held, foreign
and repeated ids), plays it on the Python lender, then on lender.js in one
``node`` process (test/lender_check.mjs) shared by the whole run, and compares
every call's answer, the pending count, the counts and every holder's held ids.
Hand-written cases then take the paths random sequences seldom reach.
"""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pando.lender import Failure, Lender

pytestmark = pytest.mark.timeout(120)

DRIVER = Path(__file__).with_name("lender_check.mjs")
HOLDERS = 6  # holders are the integers below this, on both sides
FOREIGN = 10**6  # an id never added
COUNTS = ("lent", "relent", "done", "failed")  # the counts a relay's lender keeps

Call = list[Any]
Record = dict[str, Any]

texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=4)  # JSON both ways: no lone surrogates
# Details and names with ':\n' in them: Python's failure text cuts at the first one.
labels = st.text(alphabet="ab :\n", max_size=6)
names = st.none() | st.sampled_from(["", "volunteer 7 (kim)", "a:\nb"]) | labels
workers = st.none() | st.integers(0, 3)  # a holder's workers: its capacity unless given
# How often each kind of call comes up.
KINDS = [kind for kind, weight in (("add", 3), ("relend", 2), ("join", 2), ("leave", 1), ("resize", 2), ("clear", 1),
                                   ("assign", 6), ("complete", 6), ("fail", 2), ("lost", 3)) for _ in range(weight)]


@pytest.fixture(scope="module")
def node_lender() -> Iterator[Callable[[int, list[Call]], list[Record]]]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("no `node` on PATH: pando/web/lender.js is NOT checked against pando/lender.py")
    process = subprocess.Popen([node, str(DRIVER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True, encoding="utf-8")
    requests, answers = process.stdin, process.stdout
    assert requests is not None and answers is not None

    def run(max_losses: int, calls: list[Call]) -> list[Record]:
        requests.write(json.dumps({"maxLosses": max_losses, "holders": HOLDERS, "calls": calls}) + "\n")
        requests.flush()
        line = answers.readline()
        assert line, f"node exited ({process.poll()}); its stderr is above"
        result: list[Record] = json.loads(line)
        return result

    yield run
    requests.close()
    process.wait(10)


def python_lender(max_losses: int) -> Lender[int]:
    return Lender(max_losses=max_losses, retries=0, halt_on_failure=False, straggler_floor=math.inf)


def play(lender: Lender[int], call: Call) -> Any:
    """One call on the Python lender; its answer as lender.js gives it."""
    op, *args = call
    if op == "add":
        lender.add(args[0])
    elif op == "join":
        try:
            lender.join(args[0], args[1], workers=args[3] if len(args) > 3 else None, **({} if args[2] is None else {"name": args[2]}))
        except ValueError:
            return "error"
    elif op == "leave":
        return [dataclasses.asdict(failure) for failure in lender.leave(args[0], blame_items=args[1])]
    elif op == "resize":
        lender.resize(args[0], args[1], args[2] if len(args) > 2 else None)
    elif op == "clear":
        lender.clear()
    elif op == "assign":
        return lender.assign()
    elif op == "complete":
        return lender.complete(args[0], args[1]).accepted
    elif op in ("fail", "lost"):
        failure: Failure | None = getattr(lender, op)(*args)
        return None if failure is None else dataclasses.asdict(failure)
    else:
        raise AssertionError(f"unknown call {op}")
    return None


def observe(lender: Lender[int], result: Any) -> Record:
    """A call's answer and what the lender shows after it, as JSON makes it."""
    counts = lender.counts()
    return json.loads(json.dumps({
        "result": result,
        "pending": lender.pending(),
        "counts": {name: counts[name] for name in COUNTS},
        "held": [sorted(lender.held(holder)) for holder in range(HOLDERS)],
    }))


def draw_call(data: st.DataObject, lender: Lender[int], added: dict[int, str], next_id: int) -> Call:
    """A call that makes sense now, mostly: repeating a list's entries makes them likelier, so holders
    that joined (and hold items) and the ids they hold come up more often than the rest."""
    joined = lender.holders()
    kind = data.draw(st.sampled_from(KINDS)) if joined else "join"
    everyone = list(range(HOLDERS))
    busy = [holder for holder in joined if lender.held(holder)]
    if kind == "add":
        batch = data.draw(st.lists(texts, min_size=1, max_size=5))
        return ["add", [[next_id + offset, value] for offset, value in enumerate(batch)]]
    if kind == "relend":  # an id the parent lent us before (its lease there timed out), held, done or not
        if not added:
            return ["assign"]
        held = sorted({item_id for holder in busy for item_id in lender.held(holder)})
        item_id = data.draw(st.sampled_from(held * 6 + sorted(added)))
        return ["add", [[item_id, added[item_id]]]]
    if kind == "join":
        absent = [holder for holder in everyone if holder not in joined]
        return ["join", data.draw(st.sampled_from(absent * 3 + everyone)), data.draw(st.integers(0, 4)),
                data.draw(names), data.draw(workers)]
    if kind == "leave":
        return ["leave", data.draw(st.sampled_from(busy * 8 + joined + everyone)), data.draw(st.booleans())]
    if kind == "resize":
        return ["resize", data.draw(st.sampled_from(joined * 3 + everyone)), data.draw(st.integers(0, 4)),
                data.draw(workers)]
    if kind in ("clear", "assign"):
        return [kind]
    holder = data.draw(st.sampled_from(busy * 4 + everyone))
    ids = st.sampled_from(sorted(lender.held(holder)) * 4 + sorted(added)[:3] + [FOREIGN])
    if kind == "complete":
        return ["complete", holder, data.draw(st.lists(st.tuples(ids, texts).map(list), max_size=4))]
    return [kind, holder, data.draw(ids), data.draw(labels)]


@settings(max_examples=200, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_lender_js_answers_as_the_python_lender(node_lender: Callable[[int, list[Call]], list[Record]],
                                                data: st.DataObject) -> None:
    max_losses = data.draw(st.sampled_from([3, 2, 1]), label="max_losses")
    lender = python_lender(max_losses)
    added: dict[int, str] = {}  # every item added since the last clear, to draw ids from
    next_id = 0
    calls: list[Call] = []
    expected: list[Record] = []
    for _ in range(data.draw(st.integers(10, 60), label="calls")):
        call = draw_call(data, lender, added, next_id)
        result = play(lender, call)
        calls.append(call)
        expected.append(observe(lender, result))
        if call[0] == "add":
            added.update(call[1])
            next_id = max(next_id, max(item_id for item_id, _ in call[1]) + 1)
        elif call[0] == "clear":
            added.clear()
            next_id = data.draw(st.integers(0, next_id), label="first id after clear")  # the parent's ids again
    got = node_lender(max_losses, calls)
    assert len(got) == len(expected)
    for index, (call, want, have) in enumerate(zip(calls, expected, got)):
        assert have == want, f"call {index} {call!r} (after {calls[:index]!r}):\n python {want!r}\n js     {have!r}"


def python_transcript(max_losses: int, calls: list[Call]) -> list[Record]:
    lender = python_lender(max_losses)
    return [observe(lender, play(lender, call)) for call in calls]


# Paths a random sequence seldom takes: each case checks one call's answer under Python, then
# that lender.js answers every call the same.
RELENT_DONE: list[Call] = [["join", 0, 1, None], ["join", 1, 1, None], ["add", [[5, "x"]]], ["assign"],
               ["add", [[5, "x"], [6, "y"]]], ["assign"],  # the parent lent 5 again: 1 gets a second copy
               ["complete", 0, [[5, "A"]]], ["assign"],  # 1's copy of 5 is stale: it gets nothing
               ["add", [[5, "x"], [7, "z"]]], ["join", 2, 1, None], ["assign"]]  # 5 again, to 2
SCENARIOS: dict[str, tuple[int, list[Call], int, Any]] = {  # max_losses, calls, the call to check, its answer
    "a stale copy's answer is dropped": (3, RELENT_DONE + [["complete", 1, [[5, "B"]]]], -1, []),
    "a stale copy is counted until its holder answers": (
        3, RELENT_DONE + [["complete", 1, [[5, "B"]]], ["assign"]], -1, [[1, [[7, "z"]]]]),
    "a stale copy reported lost frees its room": (
        3, RELENT_DONE + [["lost", 1, 5, "gone"], ["assign"]], -1, [[1, [[7, "z"]]]]),
    "an id lent twice to one holder counts twice against its room": (
        3, [["join", 0, 2, None], ["add", [[1, "a"]]], ["assign"], ["add", [[1, "a"], [2, "b"]]], ["assign"],
            ["assign"]], -1, []),
    "resizing below what is held takes nothing back": (
        3, [["join", 0, 3, None], ["add", [[1, "a"], [2, "b"], [3, "c"], [4, "d"]]], ["assign"], ["resize", 0, 1],
            ["complete", 0, [[1, "A"]]], ["assign"], ["complete", 0, [[2, "B"], [3, "C"]]], ["assign"]],
        -3, []),
    "holders are served in the order they got room": (
        3, [["join", 0, 1, None], ["join", 1, 1, None], ["add", [[1, "a"], [2, "b"], [3, "c"], [4, "d"]]],
            ["assign"], ["complete", 1, [[2, "B"]]], ["complete", 0, [[1, "A"]]], ["assign"]],
        -1, [[1, [[3, "c"]]], [0, [[4, "d"]]]]),
    "after a clear, holders that had room keep their turn": (
        3, [["join", 0, 1, None], ["join", 1, 1, None], ["add", [[1, "a"], [2, "b"], [3, "c"]]], ["assign"],
            ["complete", 1, [[2, "B"]]], ["clear"], ["add", [[1, "a"], [2, "b"]]], ["assign"]],
        -1, [[1, [[1, "a"]]], [0, [[2, "b"]]]]),
    "items lent again go first, the smallest id first": (
        3, [["join", 0, 2, None], ["join", 1, 2, None], ["add", [[1, "a"], [2, "b"], [3, "c"], [4, "d"]]],
            ["assign"], ["add", [[5, "e"]]], ["lost", 1, 4, "r"], ["lost", 0, 1, "r"], ["assign"]],
        -1, [[1, [[1, "a"]]], [0, [[4, "d"]]]]),  # and 5, new, waits
    "a leaving holder's items fail in id order": (
        1, [["join", 1, 1, None], ["add", [[1, "a"], [2, "b"]]], ["assign"], ["join", 0, 2, None], ["assign"],
            ["leave", 1, False], ["assign"], ["leave", 0, True]],
        -1, [{"id": 1, "value": "a", "details": "lost 1 times; the last time its volunteer disconnected (0)",
              "holder": "0"},
             {"id": 2, "value": "b", "details": "lost 1 times; the last time its volunteer disconnected (0)",
              "holder": "0"}]),
    "an error's details follow Python's wording for any name": (
        3, [["join", 0, 1, "a:\nb"], ["add", [[1, "a"]]], ["assign"], ["fail", 0, 1, "boom"]],
        -1, {"id": 1, "value": "a", "details": "b:\nboom", "holder": "a:\nb"}),
    "lost max_losses times, an item fails": (
        2, [["join", 0, 1, "kid"], ["add", [[1, "a"]]], ["assign"], ["lost", 0, 1, "x"], ["assign"],
            ["lost", 0, 1, "its worker died"]],
        -1, {"id": 1, "value": "a", "details": "lost 2 times; the last time its worker died (kid)", "holder": "kid"}),
}


@pytest.mark.parametrize("case", SCENARIOS)
def test_lender_js_on_shared_cases(node_lender: Callable[[int, list[Call]], list[Record]], case: str) -> None:
    max_losses, calls, index, result = SCENARIOS[case]
    expected = python_transcript(max_losses, calls)
    assert expected[index]["result"] == result, expected[index]
    assert node_lender(max_losses, calls) == expected


def test_an_id_lent_twice_and_done_before_its_second_copy(
        node_lender: Callable[[int, list[Call]], list[Record]]) -> None:
    calls: list[Call] = [["join", 0, 1, None], ["join", 1, 1, None], ["add", [[5, "x"]]], ["assign"],
                         ["add", [[5, "x"]]], ["complete", 0, [[5, "X"]]], ["assign"]]
    got = node_lender(3, calls)
    assert got[-1]["result"] == [] and got[-1]["held"][1] == []
    assert python_transcript(3, calls) == got
