"""Adaptive batching (--batch-size auto, the default): who gets what, never how fast.

What a volunteer asks for (pando.pace) follows from its measures; what it gets
is the lender's to decide: one item per idle worker first, so slow items are
never piled on one volunteer while another idles, however much anyone asked
for. Exactness under churn with the defaults is in test_churn.py, the want
frames in test_protocol.py.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from collections import Counter

import pytest

from conftest import REPO, Processes, lines
from pando import pace

pytestmark = pytest.mark.timeout(120)

# Slow items that say which volunteer computed them: a worker's parent is its pando-volunteer.
WHO = """
import os
import time
import pando

@pando.function
def who(x):
    time.sleep(0.5)
    return f"{x} {os.getppid()}"
"""


def test_slow_items_are_shared_one_per_idle_worker(procs: Processes) -> None:
    """8 items of 0.5 s, 4 one-worker volunteers that joined first: each computes 2, never 3 or more."""
    path = procs.tmp / "who.py"
    path.write_text(WHO)
    read, write = os.pipe()
    with os.fdopen(read, "rb") as stdin:
        root = procs.pando(str(path), "--stdin", "--start-idle", "--reporting-interval", "0.1", stdin=stdin,
                           PANDO_DEBUG="monitoring")
    volunteers = [procs.volunteer(root.port, "--workers", "1") for _ in range(4)]
    root.wait_for_stderr(r'"volunteers": \{"now": 4,', timeout=60)
    with os.fdopen(write, "wb") as items:
        items.write(lines(*range(8)))
    assert root.wait(60) == 0, root.err
    answers = [line.split() for line in root.out.decode().splitlines()]
    assert [int(x) for x, _ in answers] == list(range(8))
    assert sorted(Counter(int(pid) for _, pid in answers).items()) == sorted((v.pid, 2) for v in volunteers)



# -- what a volunteer asks for (pando.pace; protocol.js's Pace follows the same rules) ------------

class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_volunteer_asks_for_what_covers_its_refill_wait() -> None:
    clock = FakeClock()
    paced = pace.Pace(2, clock=clock)
    assert paced.want(0) is None  # nothing timed yet: the parent's start holds
    paced.round_trip(0.004)
    paced.computed(100, 0.1)  # 1 ms an item
    own = 2 * (1 + math.ceil(2 * (0.004 + 2 * pace.FLUSH_SECONDS) / 0.001))
    assert paced.own() == own and paced.want(0) == own
    assert paced.want(0) is None  # said already
    paced.computed(10, 10.0)  # items turned slow: the estimate follows, and a worker holds two
    for _ in range(40):
        paced.computed(1, 1.0)
    assert paced.want(0) == paced.own() == 2 * 2
    assert pace.per_worker(0.0, 1e-12) == pace.MAX_PER_WORKER


def test_a_relay_asks_for_its_children_too() -> None:
    clock = FakeClock()
    paced = pace.Pace(1, clock=clock)
    paced.round_trip(0.01)
    paced.computed(1, 1.0)
    paced.relayed(500)
    clock.now = 1.0  # the children answered 500 items in a second
    wanted = paced.want(30)
    assert wanted == 2 + 30 + math.ceil(2 * 250 * (0.01 + 2 * pace.FLUSH_SECONDS))
    paced.reset()  # a new parent hears it all again
    assert paced.want(30) is not None


def test_protocol_js_pace_follows_pace_py() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("no `node` on PATH: protocol.js's Pace is NOT checked against pando/pace.py")
    script = """
import { Pace, perWorker } from './pando/web/protocol.js';
let now = 0;
const p = new Pace(3, () => now);
const out = [p.want(0)];
p.roundTrip(0.004); p.computed(50, 0.02); out.push(p.own(), p.want(5), p.want(5));
p.relayed(300); now = 0.5; out.push(p.want(40));
p.computed(2, 4); out.push(p.own(), p.want(40));
out.push(perWorker(0.02, 0.003), perWorker(0, 1e-12));
console.log(JSON.stringify(out));
"""
    done = subprocess.run([node, "--input-type=module", "-e", script], cwd=REPO, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    clock = FakeClock()
    p = pace.Pace(3, clock=clock)
    expected: list[object] = [p.want(0)]
    p.round_trip(0.004)
    p.computed(50, 0.02)
    expected += [p.own(), p.want(5), p.want(5)]
    p.relayed(300)
    clock.now = 0.5
    expected.append(p.want(40))
    p.computed(2, 4)
    expected += [p.own(), p.want(40), pace.per_worker(0.02, 0.003), pace.per_worker(0, 1e-12)]
    assert json.loads(done.stdout) == expected
