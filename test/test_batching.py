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
import threading
import time
from collections import Counter

import pytest
from websockets.sync.server import ServerConnection, serve

from conftest import KEY, REPO, VOLUNTEER, Processes, join_url, lines
from pando import pace, protocol

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



def result_frames(procs: Processes, seconds: float, count: int, spacing: float | None) -> list[protocol.Result]:
    """The result frames a real one-worker ``pando-volunteer`` sends a root (this test) that lends it
    ``count`` items of ``seconds`` each at once, saying ``spacing``."""
    frames: list[protocol.Result] = []
    done = threading.Event()

    def root(connection: ServerConnection) -> None:
        protocol.decode(connection.recv(timeout=30), protocol.FROM_VOLUNTEER)
        module = f"import time\nimport pando\n\n@pando.function\ndef f(x):\n    time.sleep({seconds})\n    return x\n"
        connection.send(protocol.encode(protocol.Module("1", "slow.py", module, 30_000, count)))
        connection.send(protocol.encode(protocol.Lend([(n, str(n)) for n in range(count)], spacing)))
        answered: set[int] = set()
        while len(answered) < count:
            frame = protocol.decode(connection.recv(timeout=30), protocol.FROM_VOLUNTEER)
            if isinstance(frame, protocol.Result):
                frames.append(frame)
                answered.update(item for item, _ in frame.results)
        connection.send(protocol.encode(protocol.Bye("done")))
        done.set()

    with serve(root, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        procs.popen([VOLUNTEER, join_url(server.socket.getsockname()[1], KEY), "--workers", "1",
                     "--protocol", "websocket"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        assert done.wait(60), f"only {len(frames)} result frames came"
        server.shutdown()
    assert sorted(pair for frame in frames for pair in frame.results) == [(n, str(n)) for n in range(count)]
    return frames


@pytest.mark.parametrize("spacing, most", [(None, 7), (1.0, 4)])
def test_results_of_slow_items_share_frames(procs: Processes, spacing: float | None, most: int) -> None:
    """A volunteer answering ten results a second lets each wait for a few others (Pace.window), or
    as long as its parent asks (spacing): its parent reads a frame per few results, not one per
    result; the last goes at once."""
    frames = result_frames(procs, 0.1, 12, spacing)
    # Once an item's time is known, results wait up to 0.25 s: two or three share a frame. Asked
    # to wait 1 s: the first result, the ten before the last item starts, the last.
    assert len(frames) <= most, [len(frame.results) for frame in frames]


def test_a_volunteer_about_to_run_out_of_work_sends_at_once(procs: Processes) -> None:
    """Three items of 0.5 s, a 1 s window: the second result goes as soon as the last item starts
    (nothing else is left to lend, the worker has no item waiting), not with the third."""
    frames = result_frames(procs, 0.5, 3, 1.0)
    assert [[item for item, _ in frame.results] for frame in frames] == [[0], [1], [2]]


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
    own = 2 * (1 + math.ceil(2 * (0.004 + 2 * pace.FLUSH_SECONDS) / 0.001))  # cheap: the shortest window
    assert paced.own() == own and paced.want(0) == own
    assert paced.want(0) is None  # said already
    paced.computed(10, 10.0)  # items turned slow: the estimate follows, and a worker holds two
    for _ in range(40):
        paced.computed(1, 1.0)
    assert paced.want(0) == paced.own() == 2 * 2
    assert paced.window() == pace.MAX_WINDOW  # two results a second: each waits as long as it may
    assert pace.per_worker(0.0, 1e-12) == pace.MAX_PER_WORKER


def test_the_window_holds_a_few_results_within_bounds() -> None:
    assert pace.window(0) == pace.window(1e6) == pace.FLUSH_SECONDS
    assert pace.window(10) == pace.MAX_WINDOW
    assert pace.window(40) == pace.RESULTS_PER_FRAME / 40
    # What a worker holds covers the window too (once: it is known): 0.1 s items, a 20 ms round
    # trip, a 0.25 s window.
    wait = 2 * (0.02 + 2 * pace.FLUSH_SECONDS) + 0.25 - pace.FLUSH_SECONDS
    assert pace.per_worker(0.02, 0.1, 0.25) == 1 + math.ceil(wait / 0.1) == 5


def test_a_parent_of_many_asks_each_for_fewer_frames() -> None:
    """The spacing grows with the children, up to MAX_SPACING; it is said again only when it changed enough."""
    assert pace.spacing(0) == 0 and pace.spacing(4) < pace.FLUSH_SECONDS  # a few volunteers: the window rules
    assert pace.spacing(pace.FRAMES_PER_SECOND) == protocol.MAX_SPACING == pace.spacing(10**6)
    assert pace.changed(None, 0.0) and not pace.changed(0.1, 0.11) and pace.changed(0.1, 0.2)
    paced = pace.Pace(1)
    paced.round_trip(0.01)
    paced.computed(1, 0.1)
    before = paced.own()
    paced.lent(1.0)
    assert paced.window() == 1.0 and paced.own() == 1 + math.ceil((2 * (0.01 + 2 * pace.FLUSH_SECONDS) + 1.0 - pace.FLUSH_SECONDS) / 0.1)
    assert before is not None and paced.own() > before  # it holds enough to cover the longer wait


def test_a_relay_asks_for_its_children_too() -> None:
    clock = FakeClock()
    paced = pace.Pace(1, clock=clock)
    paced.round_trip(0.01)
    paced.computed(1, 1.0)
    paced.relayed(500)
    clock.now = 1.0  # the children answered 500 items in a second
    wanted = paced.want(30)
    window = pace.window(1 + 250)  # its own result a second and the children's 250
    assert wanted == 2 + 30 + math.ceil(250 * (2 * (0.01 + 2 * pace.FLUSH_SECONDS) + window - pace.FLUSH_SECONDS))
    paced.reset()  # a new parent hears it all again
    assert paced.want(30) is not None


def test_protocol_js_pace_follows_pace_py() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("no `node` on PATH: protocol.js's Pace is NOT checked against pando/pace.py")
    script = """
import { Pace, perWorker, resultWindow } from './pando/web/protocol.js';
let now = 0;
const p = new Pace(3, () => now);
const out = [p.want(0)];
p.roundTrip(0.004); p.computed(50, 0.02); out.push(p.own(), p.want(5), p.want(5));
p.relayed(300); now = 0.5; out.push(p.want(40));
p.computed(2, 4); out.push(p.own(), p.want(40), p.window());
p.lent(0.75); out.push(p.window(), p.own()); p.lent(); out.push(p.window()); p.reset(); out.push(p.window());
out.push(perWorker(0.02, 0.003), perWorker(0, 1e-12), perWorker(0.02, 0.1, 0.25), resultWindow(40));
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
    expected += [p.own(), p.want(40), p.window()]
    p.lent(0.75)  # the parent asks for longer spacing than the window: it is the window now
    expected += [p.window(), p.own()]
    p.lent()  # a lend frame that does not say keeps it
    expected.append(p.window())
    p.reset()  # a new parent has asked nothing yet
    expected.append(p.window())
    assert expected[-4] == expected[-2] == 0.75 and expected[-1] < 0.75
    expected += [pace.per_worker(0.02, 0.003), pace.per_worker(0, 1e-12),
                 pace.per_worker(0.02, 0.1, 0.25), pace.window(40)]
    assert json.loads(done.stdout) == expected
