"""Adaptive batching (--batch-size auto, the default): who gets what, never how fast.

What a volunteer asks for (pando.pace) follows from its measures; what it gets
is the lender's to decide: one item per idle worker first, so slow items are
never piled on one volunteer while another idles, however much anyone asked
for. Exactness under churn with the defaults is in test_churn.py, the want
frames in test_protocol.py.
"""
from __future__ import annotations

import os
from collections import Counter

import pytest

from conftest import Processes, lines

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

