"""Hostile peers against a real root: uninvited, forged, oversized, nested, escaping, flooding, stalling.

Every test ends with an honest native volunteer finishing the run: exit 0 and
exactly the expected squares on stdout, nothing forged written.
"""
from __future__ import annotations

import base64
import http.client
import json
import os
import re
import socket
import struct
import subprocess
import threading
import time
from contextlib import ExitStack, closing, contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from conftest import EXAMPLES, KEY, PANDO, Processes, RootProcess, lines, squares
from pando import protocol

pytestmark = pytest.mark.timeout(120)

FAST = str(EXAMPLES / "square_fast.py")
WASM = Path(__file__).resolve().parent.parent / "pando" / "web" / "node_modules" / "pyodide" / "pyodide.asm.wasm"
WRONG_KEY = "wrong-key-0123456789abcdef"
ESCAPES = "\x1b]0;pwned\x07\x1b[2J\x9b31m"
#: What must never reach the root's stderr from a peer: ESC, BEL, the C1 CSI (as UTF-8), or a
#: stray byte that is not UTF-8 (the fixture decodes it as U+FFFD).
CONTROLS = ("\x1b", "\x07", "\x9b", "\ufffd")
#: First frames on the monitoring feed that are not a valid watch frame.
NOT_WATCH = ['{"type": "watch"}', '{"type": "heartbeat"}', '{"type": "watch", "key": 12}', "not json"]

# A module slow enough that the monitoring feed sees the honest volunteer at work.
SLOW_MODULE = """
import time
import pando

@pando.function
def square(x):
    time.sleep(0.01)
    return x * x
"""


# -- helpers: the root and the honest run ---------------------------------------------------------


def start_root(procs: Processes, count: int, *args: str, nofile: int | None = None) -> RootProcess:
    """A root squaring 0..count-1 that leaves all the computing to volunteers (with at most ``nofile`` open files)."""
    return procs.pando(FAST, "--stdin", "--start-idle", *args, stdin=lines(*range(count)), nofile=nofile)


def finish_honestly(procs: Processes, root: RootProcess, count: int, timeout: float = 60) -> None:
    """An honest volunteer joins; the run must end well with exactly the right output."""
    procs.volunteer(root.port, "--workers", "1")
    assert root.wait(timeout) == 0, root.err
    assert root.out == squares(range(count)), root.err
    assert b"666" not in root.out


def assert_peak_rss_below(root: RootProcess, megabytes: float) -> None:
    """The root's peak resident set size (VmHWM) stayed under ``megabytes``."""
    status = Path(f"/proc/{root.popen.pid}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    assert match, status
    assert int(match.group(1)) / 1024 < megabytes, f"peak RSS {int(match.group(1)) / 1024:.0f} MB"


def strict_json(text: str | bytes) -> Any:
    """Parse JSON as a browser's JSON.parse would: NaN and Infinity are errors."""

    def no_constant(name: str) -> None:
        raise ValueError(f"{name} in the feed")

    return json.loads(text, parse_constant=no_constant)


def ws_url(port: int, path: str = protocol.VOLUNTEER_PATH) -> str:
    return f"ws://127.0.0.1:{port}{path}"


def hello(**fields: Any) -> str:
    body = {"type": "hello", "protocol": protocol.VERSION, "name": "fake", "workers": 1, "key": KEY}
    body.update(fields)
    return json.dumps(body)


@contextmanager
def open_ws(port: int, path: str = protocol.VOLUNTEER_PATH, **kwargs: Any) -> Iterator[ClientConnection]:
    with connect(ws_url(port, path), max_size=None, proxy=None, open_timeout=10, **kwargs) as ws:
        yield ws


def drain(ws: ClientConnection, timeout: float = 10) -> tuple[list[str | bytes], int | None]:
    """Every frame the root sends until it closes, and its close code (None: no close frame)."""
    frames: list[str | bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            frames.append(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
    except ConnectionClosed as closed:
        return frames, closed.rcvd.code if closed.rcvd else None
    except TimeoutError:
        raise AssertionError(f"the root did not close within {timeout} s; it sent {frames!r}") from None


def assert_refused(ws: ClientConnection) -> None:
    """Exactly one frame, bye refused (no module, no lend, no status), then close 1008."""
    frames, code = drain(ws)
    assert len(frames) == 1, frames
    bye = strict_json(frames[0])
    assert bye["type"] == "bye" and bye["reason"] == "refused", bye
    assert code == 1008


def assert_closed_without_frames(ws: ClientConnection, code: int, timeout: float = 10) -> None:
    frames, got = drain(ws, timeout)
    assert frames == [] and got == code, (frames, got)


def frames_until(ws: ClientConnection, kind: str, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        frame: dict[str, Any] = strict_json(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        if frame["type"] == kind:
            return frame


class Feed:
    """The monitoring feed, read to its end in a thread; every status strictly parsed."""

    def __init__(self, port: int) -> None:
        self._stack = ExitStack()
        self._ws = self._stack.enter_context(open_ws(port, protocol.MONITOR_PATH))
        self._ws.send(json.dumps({"type": "watch", "key": KEY}))
        self.statuses: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for text in self._ws:
                try:
                    self.statuses.append(strict_json(text))
                except ValueError as exc:
                    self.errors.append(f"{exc}: {text!r}")
        except ConnectionClosed:
            pass

    def wait_for(self, test: Any, timeout: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for status in list(self.statuses):
                if test(status):
                    return status
            time.sleep(0.05)
        raise AssertionError(f"no such status in {timeout} s; got {self.statuses[-3:]}")

    def close(self) -> None:
        self._stack.close()
        self._thread.join(5)


# -- helpers: raw sockets --------------------------------------------------------------------------


def raw_connect(stack: ExitStack, port: int) -> socket.socket:
    """A plain TCP connection to the root, closed when ``stack`` is."""
    return stack.enter_context(closing(socket.create_connection(("127.0.0.1", port), timeout=10)))


def raw_upgrade(stack: ExitStack, port: int, path: str = protocol.VOLUNTEER_PATH) -> socket.socket:
    """A raw socket past the WebSocket handshake, for frames no client library would send."""
    sock = raw_connect(stack, port)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, f"the root closed during the handshake: {head!r}"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    assert head.endswith(b"\r\n\r\n"), "the root sent a frame before any was asked for"
    return sock


def frame_header(length: int, opcode: int = 0x1) -> bytes:
    """A client frame's header (FIN, masked with a zero key, so the payload goes as is)."""
    if length < 126:
        size = bytes([0x80 | length])
    elif length < 1 << 16:
        size = bytes([0x80 | 126]) + struct.pack("!H", length)
    else:
        size = bytes([0x80 | 127]) + struct.pack("!Q", length)
    return bytes([0x80 | opcode]) + size + b"\0\0\0\0"


def recv_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    return data


def raw_frame(sock: socket.socket) -> tuple[int, bytes]:
    """The root's next frame: its opcode and payload."""
    first, second = recv_exactly(sock, 2)
    length = second & 0x7F
    if length == 126:
        length = struct.unpack("!H", recv_exactly(sock, 2))[0]
    elif length == 127:
        length = struct.unpack("!Q", recv_exactly(sock, 8))[0]
    return first & 0x0F, recv_exactly(sock, length)


def raw_close_code(sock: socket.socket, timeout: float) -> int:
    """Read the root's frames until its close frame; return the close code."""
    sock.settimeout(timeout)
    while True:
        opcode, payload = raw_frame(sock)
        if opcode == 0x8:
            return int(struct.unpack("!H", payload[:2])[0])


def read_to_end(sock: socket.socket, timeout: float) -> bytes:
    """Everything until the root closes; fail if it does not within ``timeout``."""
    sock.settimeout(timeout)
    data = bytearray()
    while chunk := sock.recv(1 << 20):
        data += chunk
    return bytes(data)


def raw_text_frame(sock: socket.socket, timeout: float = 10) -> Any:
    """The root's next text frame, parsed."""
    sock.settimeout(timeout)
    while True:
        opcode, payload = raw_frame(sock)
        if opcode == 0x1:
            return json.loads(payload)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def http_get(port: int, path: str = "/") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# -- uninvited volunteers --------------------------------------------------------------------


UNINVITED: dict[str, dict[str, Any]] = {
    "keyless": {"key": None},
    "wrong key": {"key": WRONG_KEY},
    "empty key": {"key": ""},
    "local with the join key": {"role": "local"},
    "local without a key": {"role": "local", "key": None},
}


def uninvited_hello(fields: dict[str, Any]) -> str:
    body = json.loads(hello(**fields))
    return json.dumps({name: value for name, value in body.items() if value is not None})


def test_uninvited_volunteers_get_only_a_refusal_and_are_not_counted(procs: Processes) -> None:
    path = procs.tmp / "slow.py"
    path.write_text(SLOW_MODULE)
    root = procs.pando(str(path), "--stdin", "--start-idle", "--reporting-interval", "0.2", stdin=lines(*range(150)))
    port = root.port
    feed = Feed(port)
    try:
        for fields in UNINVITED.values():
            with open_ws(port) as ws:
                ws.send(uninvited_hello(fields))
                assert_refused(ws)
        procs.volunteer(port, "--workers", "1")
        working = feed.wait_for(lambda status: status["volunteers"]["now"] == 1)
        assert working["volunteers"]["ever"] == 1, working
        assert root.wait() == 0, root.err
        assert root.out == squares(range(150))
    finally:
        feed.close()
    assert not feed.errors
    assert all(status["volunteers"]["ever"] <= 1 for status in feed.statuses), feed.statuses


def test_results_sent_after_a_refused_hello_are_never_written(procs: Processes) -> None:
    count = 40
    root = start_root(procs, count)
    forged = json.dumps({"type": "result", "results": [[i, "666"] for i in range(count)]})
    for fields in UNINVITED.values():
        with open_ws(root.port) as ws:
            ws.send(uninvited_hello(fields))
            try:
                for _ in range(5):  # pipelined behind the hello, before the refusal arrives
                    ws.send(forged)
            except ConnectionClosed:
                pass
            frames, code = drain(ws)
            assert [strict_json(frame)["type"] for frame in frames] == ["bye"] and code == 1008
    finish_honestly(procs, root, count)


# -- Origin, and the monitoring feed -------------------------------------------------------


def foreign_origins(port: int) -> list[str]:
    return ["http://evil.example", "null", f"http://127.0.0.1:{port + 1}", f"http://localhost:{port}",
            f"ws://127.0.0.1:{port}", f"http://127.0.0.1:{port}.evil.example"]


@pytest.mark.parametrize("path", [protocol.VOLUNTEER_PATH, protocol.MONITOR_PATH])
def test_pages_from_other_sites_are_refused_with_403(procs: Processes, path: str) -> None:
    root = start_root(procs, 20, "--reporting-interval", "0.2")
    port = root.port
    for foreign in foreign_origins(port):
        with pytest.raises(InvalidStatus) as refused:
            with open_ws(port, path, origin=foreign):
                pass
        assert refused.value.response.status_code == 403, foreign
    with pytest.raises(InvalidStatus) as refused:  # the header set by hand, not through origin=
        with open_ws(port, path, additional_headers={"Origin": "http://evil.example"}):
            pass
    assert refused.value.response.status_code == 403
    # The root's own page, and native clients (no Origin), pass.
    for origin in [f"http://127.0.0.1:{port}", None]:
        with open_ws(port, path, origin=origin) as ws:
            if path == protocol.VOLUNTEER_PATH:
                ws.send(hello())
                assert frames_until(ws, "module")["source"]
            else:
                ws.send(json.dumps({"type": "watch", "key": KEY}))
                assert strict_json(ws.recv(timeout=10))["type"] == "status"
    finish_honestly(procs, root, 20)


def test_monitoring_feed_without_the_key_is_refused(procs: Processes) -> None:
    root = start_root(procs, 20, "--reporting-interval", "0.1")
    port = root.port
    with ExitStack() as stack:
        silent = stack.enter_context(open_ws(port, protocol.MONITOR_PATH))  # sends nothing at all
        started = time.monotonic()
        for watch in [{"type": "watch", "key": WRONG_KEY}, {"type": "watch", "key": ""}]:
            with open_ws(port, protocol.MONITOR_PATH) as ws:
                ws.send(json.dumps(watch))
                assert_refused(ws)
        # A viewer that says nothing gets nothing, and is dropped after the greeting timeout.
        frames, _ = drain(silent, timeout=protocol.GREETING_SECONDS + 5)
        assert frames == []
        assert time.monotonic() - started < protocol.GREETING_SECONDS + 5
        with open_ws(port, protocol.MONITOR_PATH) as ws:
            ws.send(json.dumps({"type": "watch", "key": KEY}))
            for _ in range(3):
                status = strict_json(ws.recv(timeout=10))
                assert status["type"] == "status" and "volunteers" in status
    finish_honestly(procs, root, 20)


@pytest.mark.parametrize("first", [*NOT_WATCH, hello()])
def test_monitoring_feed_without_a_watch_frame_gets_bye_refused(procs: Processes, first: str) -> None:
    root = start_root(procs, 20, "--reporting-interval", "0.1")
    with open_ws(root.port, protocol.MONITOR_PATH) as ws:
        ws.send(first)
        assert_refused(ws)
    finish_honestly(procs, root, 20)


def test_monitoring_feed_without_a_watch_frame_gets_no_status(procs: Processes) -> None:
    root = start_root(procs, 20, "--reporting-interval", "0.1")
    for first in [*NOT_WATCH, hello()]:
        with open_ws(root.port, protocol.MONITOR_PATH) as ws:
            ws.send(first)
            frames, _ = drain(ws)
            assert all(strict_json(frame)["type"] == "bye" for frame in frames), (first, frames)
    finish_honestly(procs, root, 20)


# -- oversize, nested, too many workers ---------------------------------------------------


def test_oversize_frame_before_hello_is_cut_off_unread(procs: Processes) -> None:
    root = start_root(procs, 30)
    port = root.port
    size = 30 * 1024 * 1024
    with ExitStack() as stack:
        sock = raw_upgrade(stack, port)
        sock.sendall(frame_header(size) + b" " * 65536)
        started = time.monotonic()

        def flood() -> None:  # the rest of the 30 MB, for as long as the root takes it
            chunk = b" " * (1 << 20)
            try:
                for _ in range(size // len(chunk)):
                    sock.sendall(chunk)
            except OSError:
                pass

        sender = threading.Thread(target=flood, daemon=True)
        sender.start()
        assert raw_close_code(sock, timeout=10) == 1009
        assert time.monotonic() - started < 3
        sock.shutdown(socket.SHUT_RDWR)
        sender.join(10)
    # And the same through a client library, in one message.
    with open_ws(port) as ws:
        sender = threading.Thread(target=lambda: _quietly_send(ws, "x" * size), daemon=True)
        sender.start()
        _, code = drain(ws)
        assert code == 1009
        sender.join(10)
    assert_peak_rss_below(root, 120)
    finish_honestly(procs, root, 30)


def _quietly_send(ws: ClientConnection, text: str) -> None:
    try:
        ws.send(text)
    except (ConnectionClosed, OSError):
        pass


def test_greeting_larger_than_the_limit_is_closed_1009(procs: Processes) -> None:
    root = start_root(procs, 10)
    with open_ws(root.port) as ws:
        ws.send(hello(name="n" * protocol.MAX_GREETING_BYTES))
        assert_closed_without_frames(ws, 1009)
    finish_honestly(procs, root, 10)


BAD_GREETINGS = {
    "nested list": "[" * 3000,
    "nested object": '{"a":' * 800,
    "nested hello": hello()[:-1] + ', "extra": ' + "[" * 1900 + "]" * 1900 + "}",  # valid JSON, too deep
    "1025 workers": hello(workers=protocol.MAX_WORKERS + 1),
    "100000 workers": hello(workers=100_000),
    "2**62 workers": hello(workers=2**62),
    "0 workers": hello(workers=0),
    "-1 workers": hello(workers=-1),
    "1.5 workers": hello(workers=1.5),
    "string workers": hello(workers="4"),
    "NaN workers": hello()[:-1] + ', "workers": NaN}',
    "number as key": hello(key=12),
    "not json": "not json",
}


@pytest.mark.parametrize("greeting", BAD_GREETINGS.values(), ids=BAD_GREETINGS.keys())
def test_a_bad_first_frame_gets_nothing(procs: Processes, greeting: str) -> None:
    assert len(greeting.encode()) <= protocol.MAX_GREETING_BYTES
    root = start_root(procs, 10)
    with open_ws(root.port) as ws:
        ws.send(greeting)
        frames, code = drain(ws, timeout=5)
        assert frames == [], "no module frame, nor anything else"
        assert code in (1000, 1008)
    finish_honestly(procs, root, 10)


@pytest.mark.parametrize("greeting", BAD_GREETINGS.values(), ids=BAD_GREETINGS.keys())
def test_a_bad_first_frame_closes_1008(procs: Processes, greeting: str) -> None:
    root = start_root(procs, 10)
    with open_ws(root.port) as ws:
        ws.send(greeting)
        assert_closed_without_frames(ws, 1008, timeout=5)
    finish_honestly(procs, root, 10)


def test_deeply_nested_json_after_hello_closes_1008(procs: Processes) -> None:
    root = start_root(procs, 20)
    for nested in ["[" * 200_000, '{"type": "result", "results": ' + "[" * 100_000]:
        with open_ws(root.port) as ws:
            ws.send(hello())
            frames_until(ws, "module")
            ws.send(nested)
            _, code = drain(ws)
            assert code == 1008
    root.wait_for_stderr(r"sent a bad frame \(JSON nested too deeply\)")
    finish_honestly(procs, root, 20)


def test_the_most_workers_allowed_joins(procs: Processes) -> None:
    root = start_root(procs, 10)
    with open_ws(root.port) as ws:
        ws.send(hello(workers=protocol.MAX_WORKERS))
        assert frames_until(ws, "module")["source"]
        assert len(frames_until(ws, "lend")["items"]) == 10  # everything: it holds up to 1024
    finish_honestly(procs, root, 10)


# -- escape sequences --------------------------------------------------------------------------


def assert_no_controls(text: str) -> None:
    for char in CONTROLS:
        assert char not in text, f"{char!r} reached stderr:\n{text!r}"


def test_escape_sequences_never_reach_stderr(procs: Processes) -> None:
    root = start_root(procs, 20)
    port = root.port
    with open_ws(port) as ws:
        ws.send(hello(name=ESCAPES))
        frames_until(ws, "module")
        ws.send(json.dumps({
            "type": "error",
            "message": f"No module named {ESCAPES}boom\x1b[0m",
            "traceback": f"Traceback (most recent call last):\n  \x1b[31mFile {ESCAPES}\x07\nImportError: nope\x9b0m",
        }))
        drain(ws)
    root.wait_for_stderr(r"cannot run the module: No module named .*pwned.*boom")
    root.wait_for_stderr(r"ImportError: nope")
    # A bad frame from an escaping name: its label and the parser's complaint are quoted too.
    with open_ws(port) as ws:
        ws.send(hello(name="\x1b[2Jclear\u202eevil"))
        frames_until(ws, "module")
        ws.send(json.dumps({"type": f"\x1b]52;c;{ESCAPES}"}))
        _, code = drain(ws)
        assert code == 1008
    root.wait_for_stderr(r"clear.*sent a bad frame")
    finish_honestly(procs, root, 20)
    assert "pwned" in root.err
    assert_no_controls(root.err)
    assert "\u202e" not in root.err


# -- reports that would break the figures ------------------------------------------------------


BAD_REPORTS = [
    '{"type": "report", "interval": 1e-300, "items": 1, "cpu_time": 0}',
    '{"type": "report", "interval": 0.0009, "items": 1, "cpu_time": 0}',
    '{"type": "report", "interval": 0, "items": 1, "cpu_time": 0}',
    '{"type": "report", "interval": NaN, "items": 1, "cpu_time": 0}',
    '{"type": "report", "interval": 1, "items": 1, "cpu_time": Infinity}',
    '{"type": "report", "interval": 1, "items": 1, "cpu_time": -Infinity}',
    '{"type": "report", "interval": 1e400, "items": 1, "cpu_time": 0}',
    '{"type": "report", "interval": 1, "items": 1e400, "cpu_time": 0}',
    '{"type": "report", "interval": 1, "items": 9007199254740993, "cpu_time": 0}',
    '{"type": "report", "interval": 1, "items": 1, "cpu_time": 0, "units": NaN}',
    '{"type": "heartbeat", "extra": NaN}',
]


def test_non_finite_and_tiny_reports_are_bad_frames(procs: Processes) -> None:
    root = start_root(procs, 20, "--reporting-interval", "0.1")
    port = root.port
    feed = Feed(port)
    try:
        for report in BAD_REPORTS:
            with open_ws(port) as ws:
                ws.send(hello())
                frames_until(ws, "module")
                ws.send(report)
                _, code = drain(ws)
                assert code == 1008, report
        # The largest figures allowed keep the feed finite.
        with open_ws(port) as ws:
            ws.send(hello(name="extreme"))
            frames_until(ws, "module")
            ws.send(json.dumps({"type": "report", "interval": protocol.MIN_INTERVAL, "items": protocol.MAX_INT,
                                "cpu_time": protocol.MAX_INT, "data_transfer_time": protocol.MAX_INT,
                                "units": protocol.MAX_INT}))
            feed.wait_for(lambda status: any(device["report"] for device in status["devices"]))
        finish_honestly(procs, root, 20)
    finally:
        feed.close()
    assert feed.statuses and not feed.errors, feed.errors
    assert root.err.count("sent a bad frame") == len(BAD_REPORTS)


# -- floods, stalls and silence ------------------------------------------------------


def test_idle_connection_flood_under_a_low_descriptor_limit(procs: Processes) -> None:
    count = 30
    root = start_root(procs, count, nofile=256)
    port = root.port
    cap = (256 - 64) // 4
    with ExitStack() as stack:
        idle = [raw_connect(stack, port) for _ in range(150)]
        root.wait_for_stderr(rf"{cap} connections at once.*refusing more until some end", timeout=10)
        started = time.monotonic()
        procs.volunteer(port, "--workers", "1")
        assert root.wait(60) == 0, root.err
        assert root.out == squares(range(count))
        assert time.monotonic() - started < 60
        assert root.err.count("refusing more until some end") == 1, root.err
        for sock in idle:  # refused at once, or dropped after 10 s without a request
            read_to_end(sock, timeout=5)
    assert "internal error" not in root.err


def stall_downloads(stack: ExitStack, port: int, count: int) -> list[socket.socket]:
    """``count`` clients that ask for the biggest file Pyodide ships and never read it."""
    assert WASM.stat().st_size > 5_000_000, WASM
    request = f"GET /node_modules/pyodide/{WASM.name} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    stalled = []
    for _ in range(count):
        sock = raw_connect(stack, port)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(request)
        stalled.append(sock)
    time.sleep(2)  # every download has filled its socket buffers by now
    return stalled


def wait_for_output(root: RootProcess, expected: bytes, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while root.out != expected and time.monotonic() < deadline and root.popen.poll() is None:
        time.sleep(0.05)
    assert root.out == expected, root.err


def test_stalled_downloads_share_one_copy_and_do_not_block_the_page(procs: Processes) -> None:
    count = 20
    root = start_root(procs, count)
    port = root.port
    with ExitStack() as stack:
        stalled = stall_downloads(stack, port, 20)
        head = stalled[0].recv(64)
        assert head.startswith(b"HTTP/1.1 200"), head
        status, body = http_get(port)
        assert status == 200 and b"<html" in body.lower()
        assert_peak_rss_below(root, 150)
        procs.volunteer(port, "--workers", "1")
        wait_for_output(root, squares(range(count)))
        assert_peak_rss_below(root, 150)
    assert root.wait() == 0, root.err
    assert root.out == squares(range(count))


def test_a_download_that_stops_moving_is_dropped(procs: Processes) -> None:
    """A download that moves no byte for a heartbeat is dropped, as a silent WebSocket is."""
    heartbeat = 5.0  # the shortest stall that counts (server.MIN_STALL_SECONDS); longer than filling the buffers takes
    root = start_root(procs, 10, "--heartbeat", str(int(heartbeat * 1000)))
    port = root.port
    pid = root.popen.pid
    base = open_fds(pid)
    with ExitStack() as stack:
        stall_downloads(stack, port, 2)
        assert open_fds(pid) > base
        started = time.monotonic()
        while open_fds(pid) > base and time.monotonic() - started < heartbeat + 10:
            time.sleep(0.5)
        assert open_fds(pid) <= base, "the stalled downloads' sockets are closed"
    finish_honestly(procs, root, 10)


def test_stalled_downloads_do_not_hold_up_the_end_of_the_run(procs: Processes) -> None:
    count = 10
    root = start_root(procs, count)
    with ExitStack() as stack:
        stall_downloads(stack, root.port, 20)
        procs.volunteer(root.port, "--workers", "1")
        wait_for_output(root, squares(range(count)))
        finished = time.monotonic()
        assert root.wait(45) == 0, root.err
        assert time.monotonic() - finished < 10, "the last result was written long before the root exited"


def test_a_websocket_that_never_says_hello_is_dropped(procs: Processes) -> None:
    root = start_root(procs, 10, "--heartbeat", "1000")
    started = time.monotonic()
    with open_ws(root.port) as ws:
        frames, _ = drain(ws, timeout=5)
        assert frames == []
    assert time.monotonic() - started < 3  # the hello timeout is min(10 s, heartbeat)
    finish_honestly(procs, root, 10)


def test_the_results_end_before_a_stuck_volunteer_is_let_go(procs: Processes) -> None:
    """A volunteer that stops reading holds its socket through the root's close timeout; whoever
    reads the results sees them end when the last is written, not when the root lets go of it."""
    popen = procs.popen([PANDO, FAST, "--stdin", "--start-idle", "--port", "0"], stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    root = RootProcess(popen, Path(os.devnull))
    assert popen.stdin is not None and popen.stdout is not None
    popen.stdin.write(lines(3, 4))
    popen.stdin.close()
    with ExitStack() as stack:
        sock = raw_upgrade(stack, root.port)
        sock.sendall(frame_header(len(hello())) + hello().encode())
        answered = 0
        while answered < 2:
            frame = raw_text_frame(sock)
            if frame["type"] == "lend":
                answer = json.dumps({"type": "result", "results": [[i, str(int(x) ** 2)] for i, x in frame["items"]]})
                sock.sendall(frame_header(len(answer)) + answer.encode())
                answered += len(frame["items"])
        # From now on this volunteer reads nothing and answers no close.
        assert popen.stdout.read() == b"9\n16\n"
        time.sleep(0.5)
        assert popen.poll() is None, "the results ended only when the root exited"
    assert root.wait(30) == 0, root.err
