"""Churn: volunteers are killed, frozen and added while a stream flows; the output stays exact,
with the defaults (adaptive batching)."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import pytest

from conftest import Processes, lines, slow_module

pytestmark = pytest.mark.timeout(240)

ITEMS = 20_000

SLOW_SQUARE = slow_module(0.0005, sleep=True)


def test_kills_freezes_and_joins_lose_and_duplicate_nothing(procs: Processes) -> None:
    path = procs.tmp / "slow_square.py"
    path.write_text(SLOW_SQUARE)
    expected = procs.local(str(path), lines(*range(ITEMS)))
    assert len(expected.splitlines()) == ITEMS

    root = procs.pando(
        str(path), "--stdin", "--start-idle", "--heartbeat", "1000",
        stdin=lines(*range(ITEMS)),
    )
    port = root.port
    rng = random.Random(20261125)

    def join() -> subprocess.Popen[bytes]:
        return procs.volunteer(port, "--workers", "1")

    # Victims are volunteers up for a second at least: one killed while its worker is still
    # starting has its first item counted lost though it never ran it (the loss rule cannot
    # tell), and on a loaded machine three such deaths in a row would fail an innocent item.
    live = [(join(), time.monotonic()) for _ in range(3)]
    actions = {"kill": 0, "stop": 0, "join": 0}
    while root.popen.poll() is None and sum(actions.values()) < 40:
        time.sleep(rng.uniform(0.1, 0.3))
        ripe = [entry for entry in live if time.monotonic() - entry[1] >= 1.0]
        action = rng.choice(["kill", "stop", "join"]) if len(live) > 1 and ripe else "join"
        if action == "join":
            live.append((join(), time.monotonic()))
        else:
            victim = rng.choice(ripe)
            live.remove(victim)
            os.kill(victim[0].pid, signal.SIGKILL if action == "kill" else signal.SIGSTOP)
        actions[action] += 1
    assert root.wait(180) == 0, root.err
    assert actions["kill"] >= 3 and actions["stop"] >= 3, f"too little churn happened before the end: {actions}"
    assert root.out == expected
