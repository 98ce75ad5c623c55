"""``--timeout``, where items run: ``--local``, native workers (the root's helper too) and browser tabs.

An item that runs longer than the timeout on a worker is given up there: with
``--local`` the function is interrupted and the item tried again (3 tries in
all), a native worker is killed and replaced, a browser worker terminated and
started again, and the root hears the item was lost, with the timeout named.
After 3 losses the item fails. Without ``--timeout`` nothing changes (the
rest of the suite runs without it).
"""
from __future__ import annotations

import json
import os
import re
import signal
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from browser_helpers import missing_requirements, wait_until, write_module
from conftest import Processes, lines, squares
from pando import module as pando_module
from pando import protocol
from pando.workers import Workers

pytestmark = pytest.mark.timeout(120)


def module(tmp: Path, name: str, body: str) -> str:
    path = tmp / name
    path.write_text(textwrap.dedent(body))
    return str(path)


# Item 3 never ends, in each form a function can take. Every process that computes
# an item notes its pid and its parent's (a worker, and its volunteer), so a test
# can check that none is left behind.
HANGS = {
    "sleeps": """
        import os, time
        import pando

        @pando.function
        def f(x):
            with open(os.environ["PIDS"], "a") as note:
                note.write(f"{os.getpid()} {os.getppid()}\\n")
            if x == 3:
                time.sleep(3600)
            return x * x
    """,
    "never calls back": """
        import os

        def f(x, callback):
            with open(os.environ["PIDS"], "a") as note:
                note.write(f"{os.getpid()} {os.getppid()}\\n")
            if x != 3:
                callback(None, x * x)

        globals()['/pando/1.0.0'] = f
    """,
    "awaits for ever": """
        import asyncio, os
        import pando

        @pando.function
        async def f(x):
            with open(os.environ["PIDS"], "a") as note:
                note.write(f"{os.getpid()} {os.getppid()}\\n")
            if x == 3:
                await asyncio.sleep(3600)
            return x * x
    """,
    "spins, swallowing Exception": """
        import os
        import pando

        @pando.function
        def f(x):
            with open(os.environ["PIDS"], "a") as note:
                note.write(f"{os.getpid()} {os.getppid()}\\n")
            while x == 3:
                try:
                    sum(range(1000))
                except Exception:
                    pass
            return x * x
    """,
}

# Item 3 hangs on its first try only: a marker file says it was tried before.
HANGS_ONCE = """
    import os, time
    import pando

    @pando.function
    def f(x):
        marker = os.path.join(os.environ["MARKERS"], str(x))
        if x == 3 and not os.path.exists(marker):
            open(marker, "w").close()
            time.sleep(3600)
        return x * x
"""


def gone(pids: set[int], timeout: float = 10) -> set[int]:
    """The pids among ``pids`` still alive after waiting up to ``timeout`` s for them to end."""
    deadline = time.monotonic() + timeout
    while True:
        alive = set()
        for pid in pids:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            alive.add(pid)
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def noted_pids(path: Path) -> set[int]:
    return {int(pid) for line in path.read_text().splitlines() for pid in line.split()}


# -- the protocol ------------------------------------------------------------------------------


def test_the_module_frame_carries_the_timeout_and_stays_optional() -> None:
    frame = protocol.Module("ab12", "f.py", "", 30000, 1, 3.0, timeout=1.5)
    body = json.loads(protocol.encode(frame))
    assert body["timeout"] == 1.5
    assert protocol.decode(protocol.encode(frame), protocol.FROM_ROOT) == frame
    # Without a timeout the frame is what it always was, and such frames (or null) still parse.
    plain = protocol.Module("ab12", "f.py", "", 30000, 1)
    assert "timeout" not in json.loads(protocol.encode(plain))
    old = '{"type":"module","id":"a","filename":"f.py","source":"","heartbeat":1000,"batch_size":1}'
    assert protocol.decode(old, protocol.FROM_ROOT).timeout is None  # type: ignore[union-attr]
    null = old[:-1] + ',"timeout":null}'
    assert protocol.decode(null, protocol.FROM_ROOT).timeout is None  # type: ignore[union-attr]
    assert protocol.VERSION == 2


@pytest.mark.parametrize("value", ["0", "-1", '"2"', "true", "[1]", "1e300"])
def test_a_bad_timeout_in_the_module_frame_is_refused(value: str) -> None:
    text = ('{"type":"module","id":"a","filename":"f.py","source":"","heartbeat":1000,"batch_size":1,'
            f'"timeout":{value}}}')
    with pytest.raises(protocol.ProtocolError):
        protocol.decode(text, protocol.FROM_ROOT)


# -- module.call with a timeout, in this process -------------------------------------------------


def test_call_interrupts_a_function_and_puts_sigalrm_back() -> None:
    def forever(value: Any, callback: Any) -> None:
        try:
            time.sleep(3600)
        except Exception:  # the interruption is not an Exception: this does not swallow it
            callback(None, "swallowed")

    before = signal.getsignal(signal.SIGALRM)
    started = time.monotonic()
    with pytest.raises(pando_module.Overrun, match=r"took longer than --timeout 0\.2 s"):
        pando_module.call(forever, 1, timeout=0.2)
    assert time.monotonic() - started < 2
    assert signal.getsignal(signal.SIGALRM) is before
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_call_waits_at_most_the_timeout_for_a_callback() -> None:
    started = time.monotonic()
    with pytest.raises(pando_module.Overrun):
        pando_module.call(lambda value, callback: None, 1, timeout=0.2)
    assert time.monotonic() - started < 2


def test_call_within_the_timeout_answers_as_before() -> None:
    assert pando_module.call(lambda value, callback: callback(None, value * 2), 21, timeout=5) == (None, 42)
    err, result = pando_module.call(lambda value, callback: callback(ValueError("no"), None), 1, timeout=5)
    assert isinstance(err, ValueError) and result is None
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


# -- --local ---------------------------------------------------------------------------------


@pytest.mark.parametrize("form", HANGS)
def test_local_fails_an_item_that_overruns_three_times(procs: Processes, form: str) -> None:
    path = module(procs.tmp, "hangs.py", HANGS[form])
    started = time.monotonic()
    root = procs.pando(path, "--stdin", "--local", "--timeout", "0.5", stdin=lines(*range(1, 7)),
                       PIDS=str(procs.tmp / "pids"))
    assert root.wait(30) == 1, root.err
    assert time.monotonic() - started < 10
    assert root.out == lines(1, 4)
    assert "pando: item 3 (value '3') failed" in root.err
    assert "took longer than --timeout 0.5 s, on each of its 3 tries" in root.err
    assert root.err.count("trying it again") == 2


def test_local_tries_an_item_again_after_it_overran(procs: Processes) -> None:
    path = module(procs.tmp, "once.py", HANGS_ONCE)
    (procs.tmp / "markers").mkdir()
    root = procs.pando(path, "--stdin", "--local", "--timeout", "0.5", stdin=lines(*range(1, 7)),
                       MARKERS=str(procs.tmp / "markers"))
    assert root.wait(30) == 0, root.err
    assert root.out == squares(range(1, 7))
    assert "item 3: it took longer than --timeout 0.5 s; trying it again (2 of 3)" in root.err


# -- native workers -------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["sleeps", "never calls back"])
def test_workers_kill_a_worker_that_overruns_and_report_its_item_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    monkeypatch.setenv("PIDS", str(tmp_path / "pids"))  # the spawned workers inherit it
    got: list[Any] = []
    done = threading.Event()

    def on_answers(answers: list[Any], busy: float) -> None:
        got.extend(answers)
        if len(got) == 6:
            done.set()

    workers = Workers(1, textwrap.dedent(HANGS[form]), "hangs.py", on_answers, lambda report: None, 60.0,
                      timeout=0.5)
    try:
        started = time.monotonic()
        # One worker holds all six: items 3 to 5 wait behind the one that hangs.
        workers.submit([(n, str(n + 1)) for n in range(6)])
        assert done.wait(20), got
        assert time.monotonic() - started < 10
    finally:
        workers.close()
    assert ("lost", 2, "it took longer than --timeout 0.5 s; its worker was replaced") in got
    computed = sorted(answer[1:] for answer in got if answer[0] == "ok")
    assert computed == [(n, str((n + 1) ** 2)) for n in (0, 1, 3, 4, 5)]
    assert len({line.split()[0] for line in (tmp_path / "pids").read_text().splitlines()}) == 2  # replaced once


@pytest.mark.parametrize("form", ["sleeps", "never calls back"])
def test_the_roots_helper_gives_up_an_item_that_overruns_and_it_fails_after_three_losses(
    procs: Processes, form: str
) -> None:
    path = module(procs.tmp, "hangs.py", HANGS[form])
    pids = procs.tmp / "pids"
    started = time.monotonic()
    root = procs.pando(path, "--stdin", "--timeout", "1", stdin=lines(*range(1, 7)), PIDS=str(pids))
    assert root.wait(40) == 1, root.err
    assert time.monotonic() - started < 25
    assert root.out == lines(1, 4)
    assert "pando: item 3 (value '3') failed" in root.err
    # The root may take an item back itself when its lease runs out; either way the timeout is named.
    assert re.search(r"lost 3 times; the last time .*--timeout 1 s", root.err), root.err
    # Every worker that computed (three of them were killed) and its helper are gone.
    noted = noted_pids(pids)
    assert len({line.split()[0] for line in pids.read_text().splitlines()}) >= 3
    assert not gone(noted), f"processes left behind: {gone(noted)}"


def test_a_volunteer_replaces_a_worker_that_overruns_and_the_item_is_lent_again(procs: Processes) -> None:
    path = module(procs.tmp, "once.py", HANGS_ONCE)
    markers = procs.tmp / "markers"
    markers.mkdir()
    # Items 4 and 5 wait behind item 3 on the same worker: they go to its replacement.
    root = procs.pando(path, "--stdin", "--start-idle", "--timeout", "1", "--batch-size", "3",
                       stdin=lines(*range(1, 11)))
    volunteer = procs.volunteer(root.port, "--workers", "1", MARKERS=str(markers))
    started = time.monotonic()
    assert root.wait(40) == 0, root.err
    assert time.monotonic() - started < 20
    assert root.out == squares(range(1, 11))
    assert (markers / "3").exists()
    assert volunteer.wait(10) == 0  # the job is over for it too: a replaced worker is no crash


# -- browser volunteers -------------------------------------------------------------------------

# A Pyodide worker cannot be interrupted: only terminated from the page.
SPINS = """
    import pando

    @pando.function
    def f(x):
        while x == 2:
            pass
        return x * x
"""


@pytest.mark.skipif(missing_requirements() is not None, reason=f"BROWSER TEST SKIPPED: {missing_requirements()}")
@pytest.mark.timeout(120)
def test_a_tab_terminates_a_worker_that_overruns_and_the_item_fails_after_three_losses(
    tmp_path: Path, tabs: Any, start_root: Any
) -> None:
    path = write_module(tmp_path, "spins.py", SPINS)
    # The tab holds three items: item 3 waits behind item 2 and goes to the fresh worker.
    root = start_root(path, "--timeout", "1", "--batch-size", "3")
    page = tabs.open(root.page_url("tab", 1))
    wait_until(lambda: page.evaluate("() => pando.pool ? pando.pool.readyCount : 0") >= 1, 90, "a Pyodide worker")
    started = time.monotonic()
    root.feed([str(n) for n in range(1, 6)])
    assert root.wait(90) == 1, root.stderr.text
    print(f"three overruns in a tab: {time.monotonic() - started:.1f} s")
    stderr = root.stderr.text
    assert "pando: item 2 (value '2') failed" in stderr, stderr
    assert re.search(r"lost 3 times; the last time .*--timeout 1 s", stderr), stderr
    assert root.output == "1\n"
    log = page.inner_text("#log")
    assert log.count("a worker stopped: item 2 took longer than --timeout 1 s; starting a new one") >= 2, log
    # (Three on an idle machine; on a loaded one a new Pyodide worker can take longer to start than
    # the root's lease on the item, and the root takes the third copy back itself: still 3 losses.)
    # The other items the tab held were computed, by the fresh workers.
    assert page.evaluate("() => pando.computed") >= 3
