"""Property-based tests of the reorder buffer (pando/reorder.py).

Results reach the buffer in random permutations and groupings, the end of the
input at a random point, the thread started before, during or after the
deliveries; the output must be exactly the lines in input order, up to the
first failed item, and the window must get its room back as lines are written.
"""
from __future__ import annotations

import re
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import KeptOutput
from pando import status
from pando.lender import Failure
from pando.reorder import Reorder, describe_failure
from pando.window import Window

pytestmark = pytest.mark.timeout(120)

WAIT = 10  # seconds; the buffer needs milliseconds
HUNG_WAIT = 0.5  # once the buffer hung, later examples (Hypothesis shrinking) wait only this long
_hung = False


def wait_done(reorder: Reorder) -> bool:
    """Wait for the buffer to stop; a hang makes later waits short, so a hanging bug fails fast."""
    global _hung
    if reorder.done.wait(HUNG_WAIT if _hung else WAIT):
        return True
    _hung = True
    return False


# Output lines: any Unicode text without a line break (lone surrogates are refused where a line is made).
line_text = st.lists(
    st.one_of(st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)), st.sampled_from(["\r", "é"])),
    max_size=8,
).map("".join)


class Output(KeptOutput):
    """stdout as the buffer sees it; at every flush it notes how many lines are out and the window's count."""

    def __init__(self, window: Window) -> None:
        super().__init__()
        self.window = window
        self.flushes: list[tuple[int, int]] = []
        self.partial_writes: list[bytes] = []

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if not bytes(data).endswith(b"\n"):
            self.partial_writes.append(bytes(data))
        return super().write(data)

    def flush(self) -> None:
        self.flushes.append((self.getvalue().count(b"\n"), self.window.used))
        super().flush()


def encoded(line: str) -> bytes:
    return line.encode("utf-8", "replace") + b"\n"


def groups_of(draw: st.DrawFn, entries: list) -> list[list]:
    """Cut ``entries`` into consecutive groups of random sizes (each at least one entry)."""
    groups, rest = [], list(entries)
    while rest:
        size = draw(st.integers(1, max(1, min(len(rest), 6))))
        groups.append(rest[:size])
        rest = rest[size:]
    return groups


def run(
    draw: st.DrawFn,
    n: int,
    deliveries: list[list[tuple[int, object]]],
    send_end: bool,
) -> tuple[Reorder, Output, Window, list[str]]:
    """Feed a Reorder as the reader and the sessions would, at random moments; wait until it stops."""
    window = Window(max(1, n), 1 << 30)
    window.take(n, n)  # the reader takes room before it hands the items on
    out = Output(window)
    logs: list[str] = []
    reorder = Reorder(out, window, logs.append)
    messages: list[tuple[str, object]] = [("deliver", group) for group in deliveries]
    if send_end:
        messages.insert(draw(st.integers(0, len(messages)), label="end at"), ("end", n))
    start_at = draw(st.integers(0, len(messages)), label="start at")
    pauses = draw(st.lists(st.booleans(), min_size=len(messages), max_size=len(messages)), label="pauses")
    try:
        for index, (kind, payload) in enumerate(messages):
            if index == start_at:
                reorder.start()
            if kind == "end":
                reorder.end(payload)  # type: ignore[arg-type]
            else:
                group = payload
                if len(group) == 1 and isinstance(group[0][1], Failure):
                    reorder.fail(group[0][1])
                else:
                    reorder.deliver(group)  # type: ignore[arg-type]
            if pauses[index] and index >= start_at:
                time.sleep(0.0005)  # let the thread catch up sometimes, so batching varies
        if start_at == len(messages):
            reorder.start()
        assert wait_done(reorder), f"the reorder buffer did not stop; wrote {out.getvalue()!r}"
        reorder.join(WAIT)
    finally:
        reorder.stop()  # never leave a thread waiting behind a failed test
    return reorder, out, window, logs


def check_window(out: Output, window: Window, n: int) -> None:
    """Every write gave its lines' room back, and nothing else did."""
    assert not out.partial_writes, f"a write ended inside a line: {out.partial_writes!r}"
    written = [count for count, _ in out.flushes]
    assert written == sorted(written)
    for count, used in out.flushes:
        assert used == n - count, f"{count} lines written but the window still counts {used} of {n}"
    assert window.used == n - out.getvalue().count(b"\n")


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_output_is_in_input_order(data: st.DataObject) -> None:
    lines = data.draw(st.lists(line_text, max_size=30), label="lines")
    n = len(lines)
    order = data.draw(st.permutations(range(n)), label="arrival order")
    deliveries = groups_of(data.draw, [(i, lines[i]) for i in order])

    reorder, out, window, logs = run(data.draw, n, deliveries, send_end=True)

    assert out.getvalue() == b"".join(encoded(line) for line in lines)
    assert reorder.status == status.OK
    assert reorder.written == n
    assert logs == []
    check_window(out, window, n)
    assert window.used == 0


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_output_stops_before_the_first_failure(data: st.DataObject) -> None:
    lines = data.draw(st.lists(line_text, min_size=1, max_size=30), label="lines")
    n = len(lines)
    k = data.draw(st.integers(0, n - 1), label="failed id")
    value = data.draw(st.one_of(st.text(max_size=10), st.text(min_size=195, max_size=260)), label="value")
    details = data.draw(st.sampled_from(["", "boom", "Traceback (most recent call last):\n  x\nValueError: 7"]))
    holder = data.draw(st.sampled_from(["", "volunteer 3 (laptop)"]), label="holder")
    failure = Failure(k, value, details, holder)

    # Everything before k arrives; after k, only some results (the lender stops
    # lending) and maybe more failures of items that were already out.
    after = [i for i in range(k + 1, n) if data.draw(st.booleans(), label=f"deliver {i}")]
    later_failures = [
        i for i in range(k + 1, n) if i not in after and data.draw(st.booleans(), label=f"fail {i}")
    ]
    entries: list[tuple[int, object]] = [(i, lines[i]) for i in [*range(k), *after]]
    entries.append((k, failure))
    entries += [(i, Failure(i, f"v{i}", "later", "")) for i in later_failures]
    entries = data.draw(st.permutations(entries), label="arrival order")
    # A failure travels alone (Reorder.fail), results in groups (Reorder.deliver).
    deliveries: list[list[tuple[int, object]]] = []
    run_of_results: list[tuple[int, object]] = []
    for entry in entries:
        if isinstance(entry[1], Failure):
            deliveries += groups_of(data.draw, run_of_results)
            deliveries.append([entry])
            run_of_results = []
        else:
            run_of_results.append(entry)
    deliveries += groups_of(data.draw, run_of_results)
    send_end = data.draw(st.booleans(), label="input ended")

    reorder, out, window, logs = run(data.draw, n, deliveries, send_end=send_end)

    assert out.getvalue() == b"".join(encoded(line) for line in lines[:k])
    assert reorder.status == status.FAILED
    assert reorder.written == k
    assert len(logs) == 1, logs
    message = logs[0]
    assert re.search(rf"\bitem {k + 1}\b", message), message
    shown = value if len(value) <= 200 else value[:200] + "…"
    assert repr(shown) in message
    assert f"item {k + 1} (value {shown!r}) failed" in message
    if holder:
        assert holder in message
    for line in details.splitlines():
        assert line in message
    assert message == describe_failure(failure)
    check_window(out, window, n)
    assert window.used == n - k


def test_empty_input_ends_at_once() -> None:
    window = Window(4, 1 << 20)
    out = Output(window)
    reorder = Reorder(out, window, lambda text: pytest.fail(text))
    reorder.start()
    reorder.end(0)
    assert reorder.done.wait(WAIT)
    assert out.getvalue() == b""
    assert reorder.status == status.OK
    assert out.ended  # the results' reader sees their end at once, not when the root exits


def test_waits_for_the_missing_line() -> None:
    """Until the first result arrives nothing is written, whatever else did."""
    window = Window(10, 1 << 20)
    window.take(3, 3)
    out = Output(window)
    reorder = Reorder(out, window, lambda text: pytest.fail(text))
    reorder.start()
    try:
        reorder.deliver([(2, "c"), (1, "b")])
        reorder.end(3)
        assert not reorder.done.wait(0.2)
        assert out.getvalue() == b""
        assert window.used == 3
        reorder.deliver([(0, "a")])
        assert reorder.done.wait(WAIT)
    finally:
        reorder.stop()
    assert out.getvalue() == b"a\nb\nc\n"
    assert window.used == 0


def test_the_window_bounds_bytes_as_well_as_items() -> None:
    """Big items or results waiting for an earlier one stop the reader, however few they are."""
    window = Window(100, 1000)
    window.take(2, 1500)  # one batch may overshoot the bound
    taken = threading.Event()
    reader = threading.Thread(target=lambda: (window.take(1, 10), taken.set()), daemon=True)
    reader.start()
    assert not taken.wait(0.2)
    window.give(1)  # half the batch is written: its bytes are still held
    assert not taken.wait(0.2)
    window.give(1)
    assert taken.wait(WAIT)
    window.waiting(5000)  # results held back by a slow item count too
    second = threading.Event()
    threading.Thread(target=lambda: (window.take(1, 10), second.set()), daemon=True).start()
    assert not second.wait(0.2)
    window.waiting(0)
    assert second.wait(WAIT)
    assert window.used == 2
