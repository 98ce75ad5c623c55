"""The wire protocol: frame checks, and a root that survives misbehaving volunteers."""
from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from conftest import EXAMPLES, KEY, Processes, lines, squares
from pando import pace, protocol
from pando.pace import MAX_PER_WORKER, START_PER_WORKER

pytestmark = pytest.mark.timeout(120)

FAST = str(EXAMPLES / "square_fast.py")

FRAMES = [
    protocol.Hello("tablet", 4, "k" * 22),
    protocol.Hello("", 1, "helper-secret", role="local"),
    protocol.Hello("laptop", 2, "k" * 22, raw=True),
    protocol.Watch("k" * 22),
    protocol.Module("ab12", "square.py", "print('hi')\n", 30000, 8),
    protocol.Module("ab12", "square.py", "print('hi')\n", 30000, 8, raw=True),
    protocol.Module("ab12", "square.py", "import helper\n", 30000, 8, bundle="UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA==",
                    native_only=("greenlet (compiled extension modules)",)),
    protocol.Module("ab12", "square.py", "", 30000, 8, run="0123456789abcdef"),
    protocol.Module("ab12", "square.py", "", 30000, 2, adaptive=True),
    protocol.Lend([(0, "1"), (7, "ünïcode"), (12, "")]),
    protocol.Lend([(0, "1")], spacing=0.25),
    protocol.Result([(3, "9"), (1, "{\"a\":1}")]),
    protocol.Result([(3, "9")], want=120),
    protocol.Error("boom", id=4, traceback="Traceback ...\nValueError: boom"),
    protocol.Error("worker died", id=5, lost=True),
    protocol.Error("cannot import numpy"),
    protocol.Heartbeat(),
    protocol.Bye("done"),
    protocol.Bye("refused", "old version"),
]


@pytest.mark.parametrize("frame", FRAMES, ids=lambda frame: f"{frame.type}-{FRAMES.index(frame)}")
def test_frames_round_trip(frame: protocol.Frame) -> None:
    text = protocol.encode(frame)
    assert json.loads(text)["type"] == frame.type
    assert protocol.decode(text, (frame.type,)) == frame


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        '{"type": "result", "results": [[0, "1"]',  # truncated
        "[1, 2]",
        '{"results": []}',
        '{"type": "shout"}',
        '{"type": "result", "results": [[-1, "1"]]}',
        '{"type": "result", "results": [["0", "1"]]}',
        '{"type": "result", "results": [[0, 1]]}',
        '{"type": "result", "results": [[0, "two\\nlines"]]}',
        '{"type": "result", "results": [[0, "1", 2]]}',
        '{"type": "result", "results": {"0": "1"}}',
        '{"type": "result", "results": [], "want": 0}',
        '{"type": "result", "results": [], "want": "more"}',
        '{"type": "hello", "protocol": 2, "workers": 0}',
        '{"type": "hello", "protocol": 2, "workers": true}',
        '{"type": "hello", "protocol": 2, "workers": 1, "role": "king"}',
        '{"type": "hello", "protocol": 2, "workers": 1, "raw": 1}',
        '{"type": "error", "id": 1}',
        '{"type": "error", "message": "x", "lost": "yes"}',
        '{"type": "result", "results": [[0, "\\udcff"]]}',  # a lone surrogate: no UTF-8 line
        '{"type": "hello", "protocol": 2, "workers": 100000, "key": "k"}',
        '{"type": "report", "interval": NaN, "items": 1, "cpu_time": 0}',
        '{"type": "report", "interval": 1e-300, "items": 1, "cpu_time": 0}',
        '{"type": "report", "interval": 1, "items": 1, "cpu_time": 1e400}',
        '{"type": "report", "interval": 1, "items": 100000000000000000000, "cpu_time": 0}',
        '{"type": "result", "results": [[100000000000000000000, "1"]]}',
        '{"type": "heartbeat", "x": ' + "[" * 5000 + "]" * 5000 + "}",
    ],
)
def test_malformed_frames_are_refused(text: str) -> None:
    with pytest.raises(protocol.ProtocolError):
        protocol.decode(text, protocol.FROM_VOLUNTEER)


@pytest.mark.parametrize("fields", ['"bundle": 12', '"native_only": "numpy"', '"native_only": [""]',
                                    '"native_only": [1]', '"native_only": ["x"' + ', "x"' * protocol.MAX_NATIVE_ONLY + "]"])
def test_malformed_module_frames_are_refused(fields: str) -> None:
    text = ('{"type": "module", "id": "ab12", "filename": "f.py", "source": "", "heartbeat": 30000, "batch_size": 1, '
            + fields + "}")
    with pytest.raises(protocol.ProtocolError):
        protocol.decode(text, protocol.FROM_ROOT)


@pytest.mark.parametrize("spacing", ["-0.5", "1.5", '"1"', "true", "1e400"])
def test_a_lend_frame_with_a_bad_spacing_is_refused(spacing: str) -> None:
    with pytest.raises(protocol.ProtocolError, match="spacing"):
        protocol.decode(f'{{"type": "lend", "items": [], "spacing": {spacing}}}', protocol.FROM_ROOT)


@pytest.mark.parametrize("run", ['"ABCDEF0123456789"', '"0123"', "7", "null"])
def test_a_module_frame_with_a_bad_run_id_is_refused(run: str) -> None:
    text = ('{"type": "module", "id": "ab12", "filename": "m.py", "source": "", "heartbeat": 1000, '
            f'"batch_size": 1, "run": {run}}}')
    with pytest.raises(protocol.ProtocolError, match="run id"):
        protocol.decode(text, protocol.FROM_ROOT)


def test_binary_frames_and_frames_for_the_other_side_are_refused() -> None:
    with pytest.raises(protocol.ProtocolError):
        protocol.decode(b'{"type": "heartbeat"}', protocol.FROM_VOLUNTEER)
    with pytest.raises(protocol.ProtocolError):
        protocol.decode(protocol.encode(protocol.Lend([(0, "1")])), protocol.FROM_VOLUNTEER)


def test_pack_keeps_frames_under_the_limit() -> None:
    pairs = [(i, "x" * 1000) for i in range(100)]
    groups = protocol.pack(pairs, limit=10_000)
    assert [pair for group in groups for pair in group] == pairs
    assert all(sum(len(text) for _, text in group) <= 10_000 for group in groups)
    assert protocol.pack([(0, "y" * 50_000)], limit=10_000) == [[(0, "y" * 50_000)]]


# -- a root facing bad volunteers ---------------------------------------------------------------


@contextmanager
def join(port: int, **hello: Any) -> Iterator[ClientConnection]:
    """A fake volunteer that said hello."""
    with connect(f"ws://127.0.0.1:{port}/volunteer", max_size=None, proxy=None) as ws:
        ws.send(json.dumps({"type": "hello", "protocol": 2, "name": "fake", "workers": 1, "key": KEY, **hello}))
        yield ws


def frames_until(ws: ClientConnection, kind: str, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        frame = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        if frame["type"] == kind:
            return frame


def closed_code(ws: ClientConnection) -> int | None:
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv(timeout=10)
    return closed.value.rcvd.code if closed.value.rcvd else None


BAD_FRAMES: list[str | bytes] = [
    "not json at all",
    '{"type": "result", "results": [], "want": -5}',
    '{"type": "result", "results": [[0, "1"]',
    b"\x00\x01binary",
    '{"type": "result", "results": [[0, "two\\nlines"]]}',
    '{"type": "hello", "protocol": 2, "workers": 1}',  # a second hello
]


def test_bad_frames_close_only_their_session(procs: Processes) -> None:
    root = procs.pando(FAST, "--stdin", "--start-idle", "--batch-size", "2", stdin=lines(*range(3000)))
    port = root.port
    for bad in BAD_FRAMES:
        with join(port) as ws:
            frames_until(ws, "module")
            lent = frames_until(ws, "lend")
            assert lent["items"], "a fake volunteer is lent items like any other"
            ws.send(bad)
            assert closed_code(ws) == 1008
    procs.volunteer(port, "--workers", "1")  # a real one finishes the job, items of the fakes included
    assert root.wait() == 0, root.err
    assert root.out == squares(range(3000))
    assert root.err.count("sent a bad frame") == len(BAD_FRAMES)


def test_oversize_frame_closes_the_session(procs: Processes) -> None:
    root = procs.pando(FAST, "--stdin", "--start-idle", stdin=lines(*range(100)))
    with join(root.port) as ws:
        frames_until(ws, "lend")
        ws.send("x" * (protocol.MAX_FRAME_BYTES + 1))
        assert closed_code(ws) == 1009
    procs.volunteer(root.port, "--workers", "1")
    assert root.wait() == 0, root.err
    assert root.out == squares(range(100))


def test_results_for_items_not_held_are_dropped(procs: Processes) -> None:
    # One item held by the fake (batch 1): every other claim is for an item it does not hold.
    root = procs.pando(FAST, "--stdin", "--start-idle", "--batch-size", "1", stdin=lines(*range(50)))
    with join(root.port) as ws:
        frames_until(ws, "lend")
        # Claims for items someone else will be lent: never written.
        ws.send(json.dumps({"type": "result", "results": [[i, "forged"] for i in range(1, 50)]}))
        ws.send(json.dumps({"type": "error", "id": 30, "message": "forged error"}))
        procs.volunteer(root.port, "--workers", "1")
        time.sleep(0.5)  # the real volunteer computes everything but item 0, which the fake holds
    assert root.wait() == 0, root.err
    assert root.out == squares(range(50))


def test_version_mismatch_is_refused_and_the_root_goes_on(procs: Processes) -> None:
    root = procs.pando(FAST, "--stdin", "--start-idle", stdin=lines(*range(10)))
    with join(root.port, protocol=99) as ws:
        bye = json.loads(ws.recv(timeout=10))
        assert bye["type"] == "bye" and bye["reason"] == "refused" and "protocol 2" in bye["message"]
        closed_code(ws)
    procs.volunteer(root.port, "--workers", "1")
    assert root.wait() == 0 and root.out == squares(range(10))


def test_raw_travels_in_the_module_frame_only_when_set() -> None:
    assert "raw" not in json.loads(protocol.encode(protocol.Module("a", "f.py", "", 1000, 1)))
    old = '{"type":"module","id":"a","filename":"f.py","source":"","heartbeat":1000,"batch_size":1}'
    assert protocol.decode(old, protocol.FROM_ROOT) == protocol.Module("a", "f.py", "", 1000, 1, raw=False)
    with pytest.raises(protocol.ProtocolError):
        protocol.decode(old[:-1] + ',"raw":"yes"}', protocol.FROM_ROOT)


PROTOCOL_JS = Path(__file__).resolve().parent.parent / "pando" / "web" / "protocol.js"

# The page's side of raw: its hello says it honours raw; module frames both ways.
RAW_JS = """
const protocol = await import(process.argv[1]);
const fromRoot = protocol.decode(process.argv[2], protocol.FROM_ROOT);
const plain = protocol.decode(process.argv[3], protocol.FROM_ROOT);
const hello = protocol.decode(protocol.hello('tab', 2, 'k'.repeat(22)), protocol.FROM_CHILD);
console.log(JSON.stringify({
  raw: fromRoot.raw, plain: plain.raw, hello: protocol.hello('tab', 2, 'k'.repeat(22)), parsedHello: hello.raw,
  relayed: protocol.module({ ...fromRoot, id: 'c1' }),
}));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_the_page_speaks_raw_as_the_root_does() -> None:
    raw = protocol.encode(protocol.Module("ab12", "f.py", "", 30000, 1, raw=True))
    plain = protocol.encode(protocol.Module("ab12", "f.py", "", 30000, 1))
    done = subprocess.run(["node", "--input-type=module", "-e", RAW_JS, PROTOCOL_JS.as_uri(), raw, plain],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["raw"] is True and seen["plain"] is False and seen["parsedHello"] is True
    assert protocol.decode(seen["hello"], protocol.FROM_VOLUNTEER).raw  # type: ignore[union-attr]
    assert protocol.decode(seen["relayed"], protocol.FROM_ROOT) == protocol.Module("c1", "f.py", "", 30000, 1, raw=True)


SPACING_JS = """
const protocol = await import(process.argv[1]);
const out = [];
for (const text of process.argv.slice(2)) {
  try { out.push(protocol.decode(text, protocol.FROM_ROOT).spacing); } catch (error) { out.push(error.message); }
}
console.log(JSON.stringify(out));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_the_page_reads_the_spacing_of_lend_frames_as_the_volunteer_does() -> None:
    good = [protocol.encode(protocol.Lend([(0, "1")], spacing)) for spacing in (None, 0.0, 0.5, protocol.MAX_SPACING)]
    bad = [f'{{"type": "lend", "items": [], "spacing": {value}}}' for value in ("-0.5", "1.5", '"1"', "true")]
    done = subprocess.run(["node", "--input-type=module", "-e", SPACING_JS, PROTOCOL_JS.as_uri(), *good, *bad],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen[:4] == [protocol.decode(text, protocol.FROM_ROOT).spacing for text in good]  # type: ignore[union-attr]
    assert all("'spacing' must be" in message for message in seen[4:]), seen


def test_a_raw_run_refuses_volunteers_that_would_type_the_items(procs: Processes) -> None:
    # A hello without raw is what every volunteer sent before --raw existed.
    typed = procs.pando(FAST, "--stdin", "--start-idle", "--batch-size", "2", stdin=lines(*range(10)))
    with join(typed.port) as ws:
        module = frames_until(ws, "module")
        assert "raw" not in module, "without --raw, older volunteers are served as before"
    procs.volunteer(typed.port, "--workers", "1")
    assert typed.wait() == 0 and typed.out == squares(range(10))

    raw = procs.pando(FAST, "--stdin", "--start-idle", "--raw", stdin=lines("a", "b"))
    with join(raw.port) as ws:
        bye = json.loads(ws.recv(timeout=10))
        assert bye["type"] == "bye" and bye["reason"] == "refused" and "--raw" in bye["message"]
        closed_code(ws)
    with join(raw.port, raw=True) as ws:
        assert frames_until(ws, "module")["raw"] is True
        answered = 0
        while answered < 2:
            lent = frames_until(ws, "lend")["items"]
            ws.send(json.dumps({"type": "result", "results": [[i, text * 2] for i, text in lent]}))
            answered += len(lent)
        assert raw.wait() == 0, raw.err
    assert raw.out == b"aa\nbb\n"


def test_a_volunteer_that_cannot_load_the_module_is_reported(procs: Processes) -> None:
    root = procs.pando(FAST, "--stdin", "--start-idle", stdin=lines(1, 2))
    with join(root.port) as ws:
        frames_until(ws, "module")
        ws.send(json.dumps({"type": "error", "message": "No module named 'numpy'"}))
        closed_code(ws)
    root.wait_for_stderr(r"cannot run the module: No module named 'numpy'")
    procs.volunteer(root.port, "--workers", "1")
    assert root.wait() == 0 and root.out == b"1\n4\n"


def test_a_volunteer_holds_what_it_asks_for(procs: Processes) -> None:
    """Under --batch-size auto a session starts with START_PER_WORKER items per worker, then holds
    what its result frames ask for (``want``), at most MAX_PER_WORKER per worker."""
    root = procs.pando(FAST, "--stdin", "--start-idle", stdin=lines(*range(20_000)))
    with join(root.port) as ws:
        module = frames_until(ws, "module")
        assert module["adaptive"] is True and module["batch_size"] == START_PER_WORKER
        first = frames_until(ws, "lend")["items"]
        assert len(first) == START_PER_WORKER
        ws.send(json.dumps({"type": "result", "results": first, "want": 40}))
        second = frames_until(ws, "lend")["items"]
        assert len(second) == 40
        ws.send(json.dumps({"type": "result", "results": second[:1], "want": 10**6}))
        assert len(frames_until(ws, "lend")["items"]) == MAX_PER_WORKER - 39


def test_the_root_asks_for_longer_spacing_as_volunteers_join(procs: Processes) -> None:
    """Each session's first lend frame says the spacing for the volunteers there are then; a later
    one says it again only once the number of volunteers changed it enough (pace.changed)."""
    root = procs.pando(FAST, "--stdin", "--start-idle", stdin=lines(*range(20_000)))
    with join(root.port) as first:
        lent = frames_until(first, "lend")
        assert lent["spacing"] == pace.spacing(1)
        first.send(json.dumps({"type": "result", "results": lent["items"], "want": 2}))
        assert "spacing" not in frames_until(first, "lend")  # nothing changed
        with join(root.port) as second:
            assert frames_until(second, "lend")["spacing"] == pace.spacing(2)
            first.send(json.dumps({"type": "result", "results": lent["items"][:0], "want": 4}))
            assert frames_until(first, "lend")["spacing"] == pace.spacing(2)


def test_a_volunteer_costs_the_root_three_threads(procs: Processes) -> None:
    """Its socket's reader, its session and the session's sender: no WebSocket keepalive thread, since
    the root checks volunteers' own heartbeats (the next test); a thousand volunteers are 3,000 threads."""
    root = procs.pando(FAST, "--stdin", "--start-idle", stdin=lines(*range(1000)))
    tasks = Path(f"/proc/{root.popen.pid}/task")
    with ExitStack() as stack:
        first = stack.enter_context(join(root.port))
        frames_until(first, "lend")  # the root has done with its own start-up threads
        before = len(list(tasks.iterdir()))
        for _ in range(20):
            frames_until(stack.enter_context(join(root.port)), "lend")
        added = len(list(tasks.iterdir())) - before
    assert added <= 3 * 20 + 2, f"{added} threads for 20 volunteers"


def test_silent_volunteer_is_dropped_and_its_items_lent_again(procs: Processes) -> None:
    root = procs.pando(FAST, "--stdin", "--start-idle", "--heartbeat", "500", stdin=lines(*range(20)))
    with join(root.port, workers=4) as ws:
        lent = frames_until(ws, "lend")
        assert len(lent["items"]) == 4 * START_PER_WORKER  # what a session starts with, --batch-size auto
        procs.volunteer(root.port, "--workers", "1")
        # The fake keeps its socket open and answers pings, but sends no frame at all.
        root.wait_for_stderr(r"dropping volunteer \w+ \(fake\): nothing heard for", timeout=5)
        assert root.wait() == 0, root.err
        assert root.out == squares(range(20))


def test_a_bug_in_a_direct_handler_is_raised_in_the_sessions_thread() -> None:
    """Frames handled in the socket's reading thread (pando.link.DirectConnection): an exception there
    ends the link, and iterating over it raises that exception where the session runs, for the
    supervisor to see; frames the handler declines come out of iteration as usual."""
    from websockets.sync.server import serve

    from pando.link import DirectConnection, WebSocketLink

    seen: list[object] = []

    def handler(connection: Any) -> None:
        link = WebSocketLink(connection)
        link.direct(lambda text: text == "hot" or (text == "bug" and 1 / 0 > 0))
        link.send("ready")
        try:
            for message in link:
                seen.append(message)
        except ZeroDivisionError as exc:
            seen.append(exc)

    with serve(handler, "127.0.0.1", 0, create_connection=DirectConnection) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        with connect(f"ws://127.0.0.1:{server.socket.getsockname()[1]}", proxy=None) as ws:
            assert ws.recv(timeout=10) == "ready"
            with pytest.raises(ConnectionClosed):  # the server may close before the last frame goes
                for text in ("cold", "hot", "bug", "after"):
                    ws.send(text)
                ws.recv(timeout=10)
        deadline = time.monotonic() + 10
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        server.shutdown()
    assert seen[0] == "cold" and isinstance(seen[1], ZeroDivisionError) and len(seen) == 2, seen
