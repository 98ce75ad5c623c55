"""Never stuck, never fooled: stragglers, errors on one volunteer only, retries and --verify, end to end."""
from __future__ import annotations

import json
import os
import re
import time

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from conftest import KEY, PANDO, Processes, lines, squares

pytestmark = pytest.mark.timeout(120)

# Volunteers differ by their environment: HANG makes item 5 never finish (while the volunteer
# keeps heartbeating), FLAKY makes every item raise, LIE makes every answer wrong in its own way.
MODULE = """
import os
import time
import pando

@pando.function
def square(x):
    time.sleep(float(os.environ.get("DELAY", "0")))
    if os.environ.get("HANG") and x == 5:
        time.sleep(3600)
    if os.environ.get("FLAKY"):
        raise RuntimeError("no GPU on " + os.environ["FLAKY"])
    if x == 13 and os.environ.get("UNLUCKY", "1") == "1":
        raise ValueError("unlucky 13")
    if os.environ.get("LIE"):
        return f"lie from {os.environ['LIE']}"
    return x * x
"""


def module(procs: Processes) -> str:
    path = procs.tmp / "rules.py"
    path.write_text(MODULE)
    return str(path)


def test_a_volunteer_hung_inside_an_item_does_not_hold_the_run(procs: Processes) -> None:
    # The hung volunteer keeps heartbeating (its collector thread is fine): only the
    # straggler rule can take item 5 elsewhere. The heartbeat sets the straggler floor.
    root = procs.pando(module(procs), "--stdin", "--start-idle", "--heartbeat", "1000", "--batch-size", "4",
                       stdin=lines(*range(1, 13)), UNLUCKY="0")
    procs.volunteer(root.port, "--workers", "1", HANG="1", UNLUCKY="0")
    time.sleep(1.5)  # the hung one takes the first items, item 5 among them
    procs.volunteer(root.port, "--workers", "1", UNLUCKY="0")
    assert root.wait(60) == 0, root.err
    assert root.out == squares(range(1, 13))


def test_an_error_on_one_volunteer_only_is_tried_on_another(procs: Processes) -> None:
    read, write = os.pipe()
    with os.fdopen(read, "rb") as stdin:
        root = procs.pando(module(procs), "--stdin", "--start-idle", stdin=stdin, UNLUCKY="0", PANDO_DEBUG="session")
    procs.volunteer(root.port, "--workers", "1", FLAKY="the laptop", UNLUCKY="0")
    procs.volunteer(root.port, "--workers", "1", UNLUCKY="0")
    deadline = time.monotonic() + 30
    while root.err.count("joined with") < 2:  # both are there before the first item
        assert time.monotonic() < deadline, root.err
        time.sleep(0.1)
    with os.fdopen(write, "wb") as feed:
        feed.write(lines(*range(1, 11)))
    assert root.wait(60) == 0, root.err
    assert root.out == squares(range(1, 11))
    assert "no GPU on the laptop" not in root.err


def test_a_deterministic_error_fails_after_the_retries_with_every_attempt(procs: Processes) -> None:
    root = procs.pando(module(procs), "--stdin", "--start-idle", "--retries", "2", stdin=lines(*range(1, 20)))
    for _ in range(2):
        procs.volunteer(root.port, "--workers", "1")
    assert root.wait(60) == 1
    assert root.out == squares(range(1, 13))
    assert "item 13 (value '13') failed" in root.err
    for attempt in (1, 2, 3):
        assert f"attempt {attempt}, on volunteer" in root.err
    assert root.err.count("ValueError: unlucky 13") == 3


def test_the_root_alone_retries_an_error_itself(procs: Processes) -> None:
    root = procs.pando(module(procs), "12", "13", "14")
    assert root.wait(60) == 1
    assert root.out == b"144\n"
    assert "attempt 2, on the root's own helper" in root.err


@pytest.mark.parametrize("verify, honest, liars", [(2, 2, 1), (3, 3, 2)])
def test_verify_outvotes_lying_volunteers(procs: Processes, verify: int, honest: int, liars: int) -> None:
    root = procs.pando(module(procs), "--stdin", "--verify", str(verify), "--reporting-interval", "0.3",
                       stdin=lines(*range(1, 31)), UNLUCKY="0", PANDO_DEBUG="monitoring")
    root.wait_for_stderr(f"waits for {verify} volunteers")
    for number in range(liars):
        procs.volunteer(root.port, "--workers", "1", "--name", f"liar{number}", LIE=f"liar{number}", UNLUCKY="0",
                        DELAY="0.05")
    for number in range(honest):
        procs.volunteer(root.port, "--workers", "1", "--name", f"honest{number}", UNLUCKY="0", DELAY="0.05")
    assert root.wait(90) == 0, root.err
    assert root.out == squares(range(1, 31))
    outvoted = set(re.findall(r"volunteer \w+ \((liar\d|honest\d)\) disagreed with the majority", root.err))
    assert outvoted and all(name.startswith("liar") for name in outvoted), outvoted
    statuses = [json.loads(line) for line in root.err.splitlines() if line.startswith("{")]
    assert max(status["items"]["disagreements"] for status in statuses) > 0
    assert any(d["disagreements"] > 0 and d["name"].startswith("liar") for s in statuses for d in s["devices"])
    assert not any(d["disagreements"] for s in statuses for d in s["devices"] if d["name"].startswith("honest"))


def test_verify_with_no_agreement_fails_the_item_with_every_answer(procs: Processes) -> None:
    root = procs.pando(module(procs), "--stdin", "--verify", "2", stdin=lines(1, 2), UNLUCKY="0")
    for number in range(5):
        procs.volunteer(root.port, "--workers", "1", "--name", f"liar{number}", LIE=f"liar{number}", UNLUCKY="0")
    assert root.wait(60) == 1
    assert root.out == b""
    assert "no 2 of 5 volunteers agreed" in root.err
    assert all(f"'lie from liar{n}'" in root.err for n in range(5))


@pytest.mark.parametrize("args, message", [
    (["--verify", "1"], "--verify must be between 2 and 100"),
    (["--verify", "2", "--local"], "--verify needs volunteers"),
    (["--retries", "-1"], "--retries must be between 0 and 100"),
    (["--timeout", "0"], "--timeout must be between"),
])
def test_bad_rule_options(procs: Processes, args: list[str], message: str) -> None:
    done = procs.run([PANDO, module(procs), *args, "1"])
    assert done.returncode == 2 and message in done.stderr.decode()


def test_timeout_takes_an_item_back_from_a_volunteer_that_never_answers(procs: Processes) -> None:
    # A fake volunteer that takes items and heartbeats but never answers: only --timeout (or the
    # straggler rule, kept out of the way by a long heartbeat) gets its item back.
    root = procs.pando(module(procs), "--stdin", "--start-idle", "--timeout", "1", "--heartbeat", "60000",
                       stdin=lines(*range(1, 6)), UNLUCKY="0")
    with connect(f"ws://127.0.0.1:{root.port}/volunteer", proxy=None) as ws:
        ws.send(json.dumps({"type": "hello", "protocol": 2, "name": "mute", "workers": 1, "key": KEY}))
        while json.loads(ws.recv(timeout=10))["type"] != "lend":
            pass
        procs.volunteer(root.port, "--workers", "1", UNLUCKY="0")
        deadline = time.monotonic() + 30
        while root.popen.poll() is None and time.monotonic() < deadline:
            try:
                ws.send(json.dumps({"type": "heartbeat"}))
            except ConnectionClosed:
                break  # the run is over: the root said bye
            time.sleep(0.2)
        root.wait(5)
        assert root.popen.poll() is not None, "the run waited for the mute volunteer"
    assert root.wait(30) == 0, root.err
    assert root.out == squares(range(1, 6))


def test_timeout_counts_each_item_not_the_queue_before_it(procs: Processes) -> None:
    # Four items queued on one worker, each well within --timeout, the last done long after it was
    # lent: none of them is taken back.
    root = procs.pando(module(procs), "--stdin", "--start-idle", "--timeout", "1", "--batch-size", "4",
                       "--heartbeat", "60000", "--reporting-interval", "0.2", stdin=lines(*range(1, 9)),
                       UNLUCKY="0", PANDO_DEBUG="monitoring")
    procs.volunteer(root.port, "--workers", "1", UNLUCKY="0", DELAY="0.6")
    assert root.wait(60) == 0, root.err
    assert root.out == squares(range(1, 9))
    statuses = [json.loads(line) for line in root.err.splitlines() if line.startswith("{")]
    assert statuses and all(status["items"]["timed_out"] == 0 and status["items"]["relent"] == 0
                            for status in statuses)


def test_a_result_is_sent_even_while_the_next_item_hangs(procs: Processes) -> None:
    # Items 1..4 in one batch on one worker; item 5 hangs. The first four answers must not wait
    # for it (a worker groups its answers, but never behind an item that does not end).
    root = procs.pando(module(procs), "--stdin", "--start-idle", "--batch-size", "8", "--heartbeat", "60000",
                       stdin=lines(*range(1, 6)), UNLUCKY="0")
    procs.volunteer(root.port, "--workers", "1", HANG="1", UNLUCKY="0")
    deadline = time.monotonic() + 20
    while root.out != squares(range(1, 5)):
        assert time.monotonic() < deadline, f"got {root.out!r}; stderr:\n{root.err}"
        time.sleep(0.1)
