"""pando-server's rendezvous against real processes on loopback: the secret, one root, relaying, and its caps.

Joins here stop at the handshake (the SDP is opaque to the server); data
channels themselves are in test_webrtc.py, across network namespaces.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from contextlib import ExitStack
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from conftest import EXAMPLES, Processes, RootProcess, lines, squares
from pando import rendezvous

pytestmark = pytest.mark.timeout(120)

SECRET = "server-secret-0123456789"
_SERVING = re.compile(r"Serving volunteer code at http://127\.0\.0\.1:(\d+)/")


def start_server(procs: Processes, *args: str, **env: str) -> tuple[RootProcess, int]:
    """A pando-server on 127.0.0.1 and a free port."""
    popen = procs.popen([str(procs.bin / "pando-server"), "--bind", "127.0.0.1", "--port", "0", *args],
                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                        env=procs.env(**env))
    server = RootProcess(popen, procs.tmp / "server.out")
    return server, int(server.wait_for_stderr(_SERVING.pattern).group(1))


def config(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{rendezvous.CONFIG_PATH}", timeout=10) as answer:
        return dict(json.loads(answer.read()))


def as_root(stack: ExitStack, port: int, secret: str = SECRET, timeout: float = 60) -> ClientConnection:
    """A stand-in root on the server's root socket, welcomed."""
    socket = stack.enter_context(connect(f"ws://127.0.0.1:{port}{rendezvous.ROOT_PATH}", proxy=None))
    socket.send(rendezvous.root(secret, {"ice_servers": [], "bootstrap_timeout": timeout}))
    frame = json.loads(socket.recv(timeout=10))
    assert frame["type"] == "welcome", frame
    return socket


def joiner(stack: ExitStack, port: int, **kwargs: Any) -> tuple[ClientConnection, dict[str, Any]]:
    """A joiner's signal socket, and the server's first frame to it."""
    socket = stack.enter_context(connect(f"ws://127.0.0.1:{port}{rendezvous.SIGNAL_PATH}", proxy=None, **kwargs))
    return socket, json.loads(socket.recv(timeout=10))


def closed_with(socket: ClientConnection) -> int | None:
    """Read until the server closes; the close code."""
    try:
        while True:
            socket.recv(timeout=10)
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None


def test_the_server_needs_a_secret(procs: Processes) -> None:
    result = procs.run([str(procs.bin / "pando-server"), "--port", "0"], env=procs.env(PANDO_SECRET=""))
    assert result.returncode == 2
    assert b"a secret is needed" in result.stderr


def test_wrong_secret_stops_the_root_with_status_2(procs: Processes) -> None:
    _, port = start_server(procs, "--secret", SECRET)
    root = procs.pando(str(EXAMPLES / "square.py"), "--host", f"127.0.0.1:{port}", "--secret", "not-the-secret",
                       "1", "2")
    assert root.wait(20) == 2
    assert f"wrong secret for 127.0.0.1:{port}" in root.err
    assert root.out == b""


def test_host_without_a_secret_is_a_usage_error(procs: Processes) -> None:
    root = procs.pando(str(EXAMPLES / "square.py"), "--host", "127.0.0.1:9", "1", PANDO_SECRET="")
    assert root.wait(20) == 2
    assert "--host needs the server's secret" in root.err


def test_one_root_at_a_time_and_the_config_says_whether_one_is_there(procs: Processes) -> None:
    _, port = start_server(procs, PANDO_SECRET=SECRET)
    assert config(port) == {"service": "pando-server", "transport": "webrtc", "root": False}
    root = procs.pando(str(EXAMPLES / "square.py"), "--start-idle", "--host", f"127.0.0.1:{port}", "1",
                       PANDO_SECRET=SECRET)
    root.wait_for_stderr(f"Serving volunteer code at http://127.0.0.1:{port}/#key=")
    assert config(port)["root"] is True
    second = procs.pando(str(EXAMPLES / "square.py"), "--host", f"127.0.0.1:{port}", "--secret", SECRET, "1")
    assert second.wait(20) == 2
    assert "another root is connected to this server" in second.err
    root.popen.kill()
    root.wait()


def test_offers_go_to_the_root_stamped_with_the_joiners_id_and_answers_come_back(procs: Processes) -> None:
    _, port = start_server(procs, "--secret", SECRET)
    with ExitStack() as stack:
        root = as_root(stack, port)
        first, welcome = joiner(stack, port)
        assert welcome["type"] == "welcome" and re.fullmatch(r"[0-9a-f]{32}", welcome["id"])
        assert welcome["config"] == {"ice_servers": [], "bootstrap_timeout": 60}
        other, other_welcome = joiner(stack, port)
        # A joiner claiming to be another is stamped with its own id.
        first.send(json.dumps({"type": "signal", "kind": "offer", "sdp": "v=0 first", "from": other_welcome["id"]}))
        relayed = json.loads(root.recv(timeout=10))
        assert relayed == {"type": "signal", "kind": "offer", "sdp": "v=0 first", "from": welcome["id"]}
        root.send(rendezvous.answer(welcome["id"], "v=0 answer"))
        assert json.loads(first.recv(timeout=10))["sdp"] == "v=0 answer"
        root.send(rendezvous.reject(other_welcome["id"], "full"))
        assert json.loads(other.recv(timeout=10)) == {"type": "signal", "kind": "reject", "message": "full",
                                                       "to": other_welcome["id"]}
        root.send(rendezvous.answer("0" * 32, "nobody"))  # an id that is not here: dropped
        # A joiner may not answer: only the root does.
        first.send(json.dumps({"type": "signal", "kind": "answer", "sdp": "x", "to": other_welcome["id"]}))
        assert closed_with(first) == 1008
        with pytest.raises(TimeoutError):
            other.recv(timeout=0.5)


def test_without_a_root_joiners_are_told_so(procs: Processes) -> None:
    _, port = start_server(procs, "--secret", SECRET)
    with ExitStack() as stack:
        socket, frame = joiner(stack, port)
        assert frame["type"] == "bye" and frame["reason"] == "no-root"
        assert closed_with(socket) == 1000


@pytest.mark.parametrize("frame", [
    "not json", '{"type": "signal", "kind": "offer"}', '{"type": "signal", "kind": "offer", "sdp": 5}',
    '{"type": "root", "protocol": 2, "secret": "x"}', '[1, 2]', '{"type": "signal", "kind": "offer", "sdp": NaN}',
    b"\x00binary", "[" * 100_000,
])
def test_a_bad_frame_closes_that_socket_only(procs: Processes, frame: str | bytes) -> None:
    _, port = start_server(procs, "--secret", SECRET)
    with ExitStack() as stack:
        root = as_root(stack, port)
        bad, _ = joiner(stack, port, max_size=None)
        bad.send(frame)
        assert closed_with(bad) in (1008, 1009)
        honest, welcome = joiner(stack, port)
        honest.send(rendezvous.offer("v=0 honest"))
        assert json.loads(root.recv(timeout=10))["from"] == welcome["id"]


def test_the_root_socket_is_strict_too(procs: Processes) -> None:
    _, port = start_server(procs, "--secret", SECRET)
    with connect(f"ws://127.0.0.1:{port}{rendezvous.ROOT_PATH}", proxy=None) as socket:
        socket.send(rendezvous.offer("v=0"))  # not a root frame
        assert closed_with(socket) == 1008
    with ExitStack() as stack:
        root = as_root(stack, port)
        root.send(rendezvous.offer("v=0"))  # a root does not offer
        assert closed_with(root) == 1008
    with ExitStack() as stack:
        as_root(stack, port)  # the slot was freed


def test_signal_sockets_are_capped_per_address_in_frames_and_in_time(procs: Processes) -> None:
    _, port = start_server(procs, "--secret", SECRET)
    with ExitStack() as stack:
        root = as_root(stack, port, timeout=2)
        flood = [joiner(stack, port)[0] for _ in range(rendezvous.MAX_PER_ADDRESS)]
        _, frame = joiner(stack, port)
        assert frame["reason"] == "limit"
        # Another address still joins while this one is at its cap.
        honest, welcome = joiner(stack, port, source_address=("127.0.0.2", 0))
        honest.send(rendezvous.offer("v=0 honest"))
        assert json.loads(root.recv(timeout=10))["from"] == welcome["id"]
        # Frames per socket are counted...
        for _ in range(rendezvous.MAX_SIGNAL_FRAMES):
            flood[0].send(rendezvous.offer("v=0 again"))
        frames = [json.loads(flood[0].recv(timeout=10))]
        assert frames[-1]["reason"] == "limit"
        # ...and a socket lives no longer than the root's bootstrap timeout (2 s here).
        frame = json.loads(flood[1].recv(timeout=10))
        assert frame == {"type": "bye", "reason": "timeout", "message": "the join took too long"}


def test_a_websocket_run_never_imports_aiortc(procs: Processes) -> None:
    script = (
        "import sys, pando.cli\n"
        f"code = pando.cli.main([{str(EXAMPLES / 'square.py')!r}, '--port', '0', '1', '2', '3'])\n"
        "print('aiortc' in sys.modules, file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    result = procs.run([sys.executable, "-c", script])
    assert result.returncode == 0, result.stderr
    assert result.stdout == squares([1, 2, 3])
    assert result.stderr.strip().endswith(b"False")
    assert lines(1, 4, 9) == result.stdout


def test_ice_servers_and_the_bootstrap_timeout_reach_joiners(procs: Processes) -> None:
    _, port = start_server(procs, "--secret", SECRET)
    root = procs.pando(str(EXAMPLES / "square.py"), "--start-idle", "--host", f"127.0.0.1:{port}",
                       "--ice-servers", "stun:10.9.9.9:3478, turn:ann:p%40ss:w@10.9.9.9:3478?transport=udp",
                       "--bootstrap-timeout", "7.5", "1", PANDO_SECRET=SECRET)
    root.wait_for_stderr("Serving volunteer code at")
    with ExitStack() as stack:
        _, welcome = joiner(stack, port)
    assert welcome["config"] == {
        "ice_servers": [{"urls": "stun:10.9.9.9:3478"},
                        {"urls": "turn:10.9.9.9:3478?transport=udp", "username": "ann", "credential": "p@ss:w"}],
        "bootstrap_timeout": 7.5,
    }
    root.popen.kill()
    root.wait()


def test_config_file_keys_for_the_server(procs: Processes) -> None:
    _, port = start_server(procs, "--secret", SECRET)
    (procs.home / ".pando" / "config.json").write_text(json.dumps(
        {"host": f"127.0.0.1:{port}", "secret": "not-the-secret", "bootstrap-timeout": 5, "ice-servers": ""}))
    root = procs.pando(str(EXAMPLES / "square.py"), "1", PANDO_SECRET="")
    assert root.wait(20) == 2
    assert f"wrong secret for 127.0.0.1:{port}" in root.err


def test_entry_points(procs: Processes) -> None:
    shown = procs.run([sys.executable, "-m", "pando.pandoserver", "--help"])
    assert shown.returncode == 0 and b"--secret" in shown.stdout
    bad = procs.run([str(procs.bin / "pando-volunteer"), "http://127.0.0.1:9/#key=" + "k" * 20 + ";",
                     "--protocol", "pigeon"])
    assert bad.returncode == 2 and b"--protocol must be one of auto, websocket, webrtc" in bad.stderr
