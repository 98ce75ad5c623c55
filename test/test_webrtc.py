"""WebRTC volunteers across separate hosts: network namespaces on a bridge, real processes, real data channels.

The server, the root and each volunteer run in hosts of their own (see
netns.py); volunteers are given the server's URL only, which has no WebSocket
endpoint for sessions, so a finished run means the items went over data
channels.
"""
from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import EXAMPLES, KEY, PANDO, VOLUNTEER, Processes, RootProcess, lines, slow_module
from netns import Host, Hosts

pytestmark = pytest.mark.timeout(180)

SECRET = "server-secret-0123456789"
PORT = 8080

SLOW = slow_module(0.02, sleep=True)

BIG = """
import pando

@pando.function
def mirror(text):
    return text[::-1] + str(len(text))
"""


def start_server(procs: Processes, host: Host) -> RootProcess:
    popen = host.popen([str(procs.bin / "pando-server"), "--bind", host.address, "--port", str(PORT)],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       env=procs.env(PANDO_SECRET=SECRET))
    server = RootProcess(popen, procs.tmp / "server.out")
    server.wait_for_stderr("Serving volunteer code at")
    return server


def start_root(procs: Processes, host: Host, module: str, items: bytes, *args: str) -> RootProcess:
    out = procs.tmp / f"root-{host.name}.out"
    with out.open("wb") as stdout:
        popen = host.popen([PANDO, module, "--stdin", "--start-idle", "--port", "0", *args],
                           stdin=subprocess.PIPE, stdout=stdout, stderr=subprocess.PIPE,
                           env=procs.env(PANDO_SECRET=SECRET))
    assert popen.stdin is not None
    popen.stdin.write(items)
    popen.stdin.close()
    return RootProcess(popen, out)


def start_volunteer(procs: Processes, host: Host, url: str, *args: str) -> subprocess.Popen[bytes]:
    with (procs.tmp / f"volunteer-{host.name}.err").open("wb") as err:
        return host.popen([VOLUNTEER, url, "--workers", "1", "--name", host.name, *args],
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=procs.env())


def volunteer_err(procs: Processes, host: Host) -> str:
    return (procs.tmp / f"volunteer-{host.name}.err").read_text()


def write_module(procs: Processes, name: str, text: str) -> str:
    path = procs.tmp / name
    path.write_text(text)
    return str(path)


def server_url(server: Host) -> str:
    return f"http://{server.address}:{PORT}/#key={KEY};"


def wait_until(check: Any, timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


FLOOD = """
import sys, time
from websockets.sync.client import connect
url = sys.argv[1]
sockets = []
for n in range(60):
    try:
        s = connect(url, proxy=None, open_timeout=5).__enter__()
    except Exception:
        continue
    sockets.append(s)
    if n % 3 == 0:
        try:
            s.send('{"type":"signal","kind":"offer","sdp":' + '"x' * 3 + '}')  # malformed
        except Exception:
            pass
print(len(sockets), flush=True)
time.sleep(60)
"""


def test_volunteers_join_through_the_server_while_it_is_flooded(procs: Processes, hosts: Hosts) -> None:
    server = hosts.add("srv")
    start_server(procs, server)
    flood = hosts.add("flood").popen(
        [str(procs.bin / "python"), "-c", FLOOD, f"ws://{server.address}:{PORT}/rendezvous/signal"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert flood.stdout is not None and int(flood.stdout.readline()) > 0  # its sockets are open (or refused)
    items = lines(*range(2000))
    root = start_root(procs, hosts.add("root"), str(EXAMPLES / "square_fast.py"), items,
                      "--host", f"{server.address}:{PORT}", "--batch-size", "8")
    root.wait_for_stderr(f"Serving volunteer code at http://{server.address}:{PORT}/#key=")
    for name in ("v1", "v2", "v3"):
        start_volunteer(procs, hosts.add(name), server_url(server))
    assert root.wait(120) == 0, root.err
    assert root.out == procs.local(str(EXAMPLES / "square_fast.py"), items)
    for name in ("v1", "v2", "v3"):
        assert "joined as" in volunteer_err(procs, hosts[name])


def test_the_run_goes_on_when_the_server_dies(procs: Processes, hosts: Hosts) -> None:
    server_host = hosts.add("srv")
    server = start_server(procs, server_host)
    module = write_module(procs, "slow.py", SLOW)
    items = lines(*range(300))
    root = start_root(procs, hosts.add("root"), module, items, "--host", f"{server_host.address}:{PORT}")
    root.wait_for_stderr("Serving volunteer code at")
    for name in ("v1", "v2"):
        start_volunteer(procs, hosts.add(name), server_url(server_host))
    wait_until(lambda: root.out.count(b"\n") >= 20, what="the first results")
    server.popen.send_signal(signal.SIGKILL)
    assert root.wait(120) == 0, root.err
    assert root.out == procs.local(module, items)
    assert "lost pando-server" in root.err


def test_a_killed_webrtc_volunteers_items_are_lent_again(procs: Processes, hosts: Hosts) -> None:
    server = hosts.add("srv")
    start_server(procs, server)
    module = write_module(procs, "slow.py", SLOW)
    items = lines(*range(300))
    root = start_root(procs, hosts.add("root"), module, items, "--host", f"{server.address}:{PORT}",
                      "--heartbeat", "1000", "--batch-size", "4")
    root.wait_for_stderr("Serving volunteer code at")
    victim = start_volunteer(procs, hosts.add("victim"), server_url(server))
    wait_until(lambda: root.out.count(b"\n") >= 10, what="the victim's first results")
    start_volunteer(procs, hosts.add("honest"), server_url(server))
    victim.send_signal(signal.SIGKILL)  # its data channel looks open for half a minute: heartbeats tell
    killed = time.monotonic()
    assert root.wait(120) == 0, root.err
    assert root.out == procs.local(module, items)
    assert "dropping volunteer" in root.err
    assert time.monotonic() - killed < 60


def test_frames_larger_than_a_channel_message(procs: Processes, hosts: Hosts) -> None:
    server = hosts.add("srv")
    start_server(procs, server)
    module = write_module(procs, "big.py", BIG)
    items = "".join(f"{n}{chr(97 + n % 26) * (150_000 + n)}\n" for n in range(12)).encode()
    root = start_root(procs, hosts.add("root"), module, items, "--host", f"{server.address}:{PORT}",
                      "--batch-size", "3")
    root.wait_for_stderr("Serving volunteer code at")
    start_volunteer(procs, hosts.add("v1"), server_url(server))
    assert root.wait(120) == 0, root.err
    assert root.out == procs.local(module, items)


def test_a_lan_root_takes_webrtc_joiners_itself(procs: Processes, hosts: Hosts, tmp_path: Path) -> None:
    root_host = hosts.add("root")
    items = lines(*range(500))
    root = start_root(procs, root_host, str(EXAMPLES / "square_fast.py"), items, "--batch-size", "4")
    port = int(root.wait_for_stderr(rf"Serving volunteer code at http://{root_host.address}:(\d+)/").group(1))
    url = f"http://{root_host.address}:{port}/#key={KEY};"
    start_volunteer(procs, hosts.add("v1"), url, "--protocol", "webrtc")
    start_volunteer(procs, hosts.add("v2"), url)  # auto: a root's own page means WebSocket
    assert root.wait(120) == 0, root.err
    assert root.out == procs.local(str(EXAMPLES / "square_fast.py"), items)


def test_a_staying_volunteer_joins_run_after_run_through_the_server(procs: Processes, hosts: Hosts) -> None:
    server = hosts.add("srv")
    start_server(procs, server)
    root_host = hosts.add("root")
    volunteer = start_volunteer(procs, hosts.add("v1"), server_url(server), "--stay")
    module = write_module(procs, "slow.py", SLOW)
    for run, items in enumerate((lines(*range(40)), lines(*range(40, 60)))):
        # One root after the other (the server says "no root" in between); only the volunteer computes.
        root = start_root(procs, root_host, module, items, "--host", f"{server.address}:{PORT}")
        assert root.wait(120) == 0, root.err
        assert root.out == procs.local(module, items), f"run {run + 1}"
    assert volunteer.poll() is None, volunteer_err(procs, hosts["v1"])
    volunteer.send_signal(signal.SIGTERM)
    assert volunteer.wait(15) == 0
    err = volunteer_err(procs, hosts["v1"])
    assert err.count("computing slow.py") == 2 and err.count("waiting for the next job") == 2, err
