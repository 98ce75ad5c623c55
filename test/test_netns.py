"""The ``hosts`` fixture (test/netns.py): separate hosts as network namespaces on a bridge.

Hosts reach each other over TCP and nothing else, and everything is removed at
the end. Chromium runs inside a namespace and loads a page from another one,
and WebRTC data channels open across namespaces: aiortc to aiortc, Chromium
to aiortc and Chromium to Chromium.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import warnings
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Iterator

import pytest

from browser_helpers import Lines, chromium_path
from netns import Host, Hosts, ip, list_netns, reap_stale, skip_without_netns

skip_without_netns()

PORT = 8000  # every host has its own ports

# Fetch a URL from inside a host, retrying while the server is not listening yet.
FETCH = """
import sys, time, urllib.request
deadline = time.monotonic() + float(sys.argv[2])
while True:
    try:
        print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())
        break
    except OSError as error:
        if time.monotonic() > deadline or "refused" not in str(error):
            sys.exit(f"{sys.argv[1]}: {error}")
        time.sleep(0.05)
"""

# Connect from inside a host; print the errno name, or "connected".
CONNECT = """
import errno, socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5).close()
    print("connected")
except OSError as error:
    print(errno.errorcode.get(error.errno, repr(error)))
"""

# An aiortc peer: "offer" opens a data channel and sends "ping", "answer" replies "pong ping". Each
# prints its description as a JSON line and reads the other's from stdin; the answerer ends at EOF.
PEER = """
import asyncio, json, sys
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

async def main(role):
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    loop = asyncio.get_running_loop()
    line = lambda: loop.run_in_executor(None, sys.stdin.readline)
    say = lambda **fields: print(json.dumps(fields), flush=True)
    if role == "offer":
        got = loop.create_future()
        channel = pc.createDataChannel("test")
        channel.on("open", lambda: channel.send("ping"))
        channel.on("message", lambda message: got.done() or got.set_result(message))
        await pc.setLocalDescription(await pc.createOffer())
        say(type=pc.localDescription.type, sdp=pc.localDescription.sdp)
        await pc.setRemoteDescription(RTCSessionDescription(**json.loads(await line())))
        say(got=await got)
    else:
        def on_message(channel, message):
            say(got=message)
            channel.send("pong " + message)
        pc.on("datachannel", lambda channel: channel.on("message", lambda m: on_message(channel, m)))
        await pc.setRemoteDescription(RTCSessionDescription(**json.loads(await line())))
        await pc.setLocalDescription(await pc.createAnswer())
        say(type=pc.localDescription.type, sdp=pc.localDescription.sdp)
        await line()
    await pc.close()

asyncio.run(main(sys.argv[1]))
"""

# The same peer in a page: with no description it offers, else it answers that one.
PAGE_PEER = """async (offer) => {
  const pc = new RTCPeerConnection({iceServers: []});
  window.pc = pc;
  const gathered = new Promise(resolve => {
    pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && resolve();
  });
  if (offer) {
    pc.ondatachannel = event => { event.channel.onmessage = m => event.channel.send('pong ' + m.data); };
    await pc.setRemoteDescription(offer);
    await pc.setLocalDescription(await pc.createAnswer());
  } else {
    const channel = pc.createDataChannel('test');
    window.got = new Promise(resolve => { channel.onmessage = m => resolve(m.data); });
    channel.onopen = () => channel.send('ping');
    await pc.setLocalDescription(await pc.createOffer());
  }
  await gathered;
  return {type: pc.localDescription.type, sdp: pc.localDescription.sdp};
}"""

# What the offering page got back, or an error after 10 s.
PAGE_GOT = """() => Promise.race([window.got, new Promise((_, reject) => setTimeout(
  () => reject(new Error('no answer: ' + window.pc.connectionState)), 10000))])"""


def fetch(host: Host, url: str, wait: float = 10) -> str:
    """The body at ``url`` fetched from inside ``host``."""
    done = host.run([sys.executable, "-c", FETCH, url, str(wait)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def connect(host: Host, address: str, port: int) -> str:
    done = host.run([sys.executable, "-c", CONNECT, address, str(port)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def serve(host: Host, directory: Path, title: str) -> subprocess.Popen[bytes]:
    """A web server on ``host``, port ``PORT``, serving an index page with this title."""
    directory.mkdir()
    (directory / "index.html").write_text(f"<!doctype html><title>{title}</title><p>{title}</p>")
    return host.popen([sys.executable, "-m", "http.server", "--bind", host.address, "--directory", str(directory),
                       str(PORT)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def peer(host: Host, tmp_path: Path, role: str) -> tuple[subprocess.Popen[bytes], Lines]:
    script = tmp_path / "peer.py"
    script.write_text(PEER)
    process = host.popen([sys.executable, str(script), role], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert process.stdout is not None
    return process, Lines(process.stdout)


def message(lines: Lines, key: str, timeout: float = 10) -> Any:
    """The value of ``key`` in the first JSON line of a peer that has it."""
    def find(text: str) -> Any:
        for line in text.splitlines():
            if line.startswith("{") and key in (fields := json.loads(line)):
                return fields
        return None
    return lines.wait_for(find, timeout, f"a peer's {key!r}")[key]  # type: ignore[index]


def tell(process: subprocess.Popen[bytes], description: dict[str, str]) -> None:
    assert process.stdin is not None
    process.stdin.write((json.dumps(description) + "\n").encode())
    process.stdin.flush()


def gone(pid: int) -> bool:
    """Whether a process has ended (a zombie waiting for its parent counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def wait_gone(pid: int, timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while not gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def chromium() -> Iterator[Any]:
    """Playwright, to launch Chromium in a host (skipped loudly without Chromium or Playwright)."""
    missing = ("Chromium is not installed (no /usr/bin/chromium)" if chromium_path() is None
               else "Playwright's Python package is missing" if find_spec("playwright") is None else None)
    if missing:
        message = f"CHROMIUM ACROSS HOSTS SKIPPED, the browser side is NOT tested on this machine: {missing}"
        print(f"\n{'!' * 78}\n{message}\n{'!' * 78}", file=sys.stderr)
        warnings.warn(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        yield playwright


@pytest.mark.timeout(30)
def test_hosts_reach_each_other_over_tcp(hosts: Hosts, tmp_path: Path) -> None:
    a, b = hosts.add("a"), hosts.add("b")
    assert a.address != b.address and a.address.rsplit(".", 1)[0] == b.address.rsplit(".", 1)[0]
    assert a.address.startswith("10.") and a.ns.startswith("pando-") and a.ns in list_netns()
    serve(a, tmp_path / "www", "served from a")
    assert "served from a" in fetch(b, f"http://{a.address}:{PORT}/")
    # Each host has its own ports: b serves on the same port.
    serve(b, tmp_path / "www-b", "served from b")
    assert "served from b" in fetch(a, f"http://{b.address}:{PORT}/")


@pytest.mark.timeout(30)
def test_a_host_has_only_its_loopback_and_its_veth(hosts: Hosts) -> None:
    a = hosts.add("a")
    addresses = a.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True, check=True).stdout
    assert [line.split()[1] for line in addresses.splitlines()] == ["lo", "eth0"]
    assert f"{a.address}/24" in addresses
    links = a.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert [line.split(":")[1].strip().split("@")[0] for line in links.splitlines()] == ["lo", "eth0"]


@pytest.mark.timeout(30)
def test_hosts_cannot_reach_the_machine_or_the_outside(hosts: Hosts) -> None:
    a = hosts.add("a")
    with socket.socket() as listener:  # a service of the machine, on its loopback and all its addresses
        listener.bind(("0.0.0.0", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert connect(a, "127.0.0.1", port) == "ECONNREFUSED"  # the host's own loopback
        machine = ip("-o", "-4", "addr").stdout.split()
        for address in {word.split("/")[0] for word in machine if "/" in word and not word.startswith("127.")}:
            if not address.startswith(hosts.subnet + "."):
                assert connect(a, address, port) == "ENETUNREACH", address
    assert connect(a, "192.0.2.1", 80) == "ENETUNREACH"  # no default route
    done = a.run([sys.executable, "-c", "import socket; socket.getaddrinfo('example.com', 80)"],
                 capture_output=True, text=True, timeout=30)
    assert done.returncode != 0


@pytest.mark.timeout(30)
def test_popen_runs_the_command_itself_in_the_namespace(hosts: Hosts) -> None:
    a = hosts.add("a")
    process = a.popen(["sh", "-c", "echo $$; exec sleep 60"], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert int(process.stdout.readline()) == process.pid  # `ip netns exec` execs: no process in between
    assert os.readlink(f"/proc/{process.pid}/ns/net") != os.readlink("/proc/self/ns/net")
    assert process.pid in a.pids()
    process.kill()
    assert process.wait(5) == -9
    assert process.pid not in a.pids()
    echoed = a.run(["cat"], input="through stdin", capture_output=True, text=True, check=True)
    assert echoed.stdout == "through stdin"


@pytest.mark.timeout(30)
def test_close_kills_processes_and_deletes_namespaces() -> None:
    with Hosts() as made:
        a, b = made.add("a"), made.add("b")
        namespaces = made.namespaces
        assert set(namespaces) == {a.ns, b.ns, made.switch} and set(namespaces) <= set(list_netns())
        # Ignores SIGTERM, and so does its child: both need the SIGKILL to the group.
        stubborn = a.popen(["sh", "-c", "trap '' TERM; sleep 600 & echo $!; wait"], stdout=subprocess.PIPE,
                           text=True)
        assert stubborn.stdout is not None
        child = int(stubborn.stdout.readline())
        polite = b.popen(["sleep", "600"])
        # Started in the namespace but not through the Host (like Chromium's own children).
        stray = subprocess.Popen(["ip", "netns", "exec", b.ns, "sleep", "600"], start_new_session=True)
        assert wait_gone(stray.pid, 0.3) is False
        started = time.monotonic()
    assert time.monotonic() - started < 10
    assert stubborn.poll() == -9 and polite.poll() == -15 and stray.wait(5) == -9
    assert wait_gone(child)
    assert not set(namespaces) & set(list_netns())


@pytest.mark.timeout(30)
def test_namespaces_are_deleted_when_the_test_fails() -> None:
    with pytest.raises(ZeroDivisionError):
        with Hosts() as made:
            made.add("a")
            namespaces = made.namespaces
            1 / 0
    assert not set(namespaces) & set(list_netns())


@pytest.mark.timeout(30)
def test_leftovers_of_a_dead_run_are_reaped(hosts: Hosts) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    leftover = f"pando-{dead.pid}-1-a"
    ip("netns", "add", leftover)
    try:
        mine = hosts.add("a")
        reap_stale()
        assert leftover not in list_netns()
        assert mine.ns in list_netns() and hosts.switch in list_netns()  # this process's own are kept
    finally:
        ip("netns", "del", leftover, check=False)


@pytest.mark.timeout(30)
def test_two_fixtures_alive_at_once_use_two_subnets(hosts: Hosts) -> None:
    with Hosts() as other:
        assert other.subnet != hosts.subnet and other.tag != hosts.tag
        assert other.add("a").ns != hosts.add("a").ns


@pytest.mark.timeout(60)
def test_chromium_in_a_host_loads_a_page_from_another(hosts: Hosts, chromium: Any, tmp_path: Path) -> None:
    a, b = hosts.add("a"), hosts.add("b")
    serve(a, tmp_path / "www", "served from a")
    fetch(b, f"http://{a.address}:{PORT}/")  # listening now
    browser = b.launch_chromium(chromium, tmp_path)
    try:
        page = browser.new_page()
        page.goto(f"http://{a.address}:{PORT}/")
        assert page.title() == "served from a"
        assert any(Path(f"/proc/{pid}/comm").read_text().startswith("chrom") for pid in b.pids())
    finally:
        browser.close()


@pytest.mark.timeout(20)
def test_aiortc_data_channel_between_hosts(hosts: Hosts, tmp_path: Path) -> None:
    if find_spec("aiortc") is None:
        pytest.skip("aiortc is not installed (pip install 'aiortc>=1.16,<2')")
    a, b = hosts.add("a"), hosts.add("b")
    offerer, offerer_out = peer(a, tmp_path, "offer")
    answerer, answerer_out = peer(b, tmp_path, "answer")
    offer = message(offerer_out, "sdp")
    assert f" {a.address} " in offer  # aioice skips loopback: the veth's address is the candidate
    tell(answerer, {"type": "offer", "sdp": offer})
    tell(offerer, {"type": "answer", "sdp": message(answerer_out, "sdp")})
    assert message(offerer_out, "got") == "pong ping"
    assert message(answerer_out, "got") == "ping"
    assert offerer.wait(5) == 0
    assert answerer.stdin is not None
    answerer.stdin.close()  # its cue to end
    assert answerer.wait(5) == 0


@pytest.mark.timeout(60)
def test_chromium_data_channel_to_aiortc_in_another_host(hosts: Hosts, chromium: Any, tmp_path: Path) -> None:
    if find_spec("aiortc") is None:
        pytest.skip("aiortc is not installed (pip install 'aiortc>=1.16,<2')")
    a, b = hosts.add("a"), hosts.add("b")
    serve(a, tmp_path / "www", "root")
    fetch(b, f"http://{a.address}:{PORT}/")
    answerer, answerer_out = peer(a, tmp_path, "answer")
    browser = b.launch_chromium(chromium, tmp_path)
    try:
        page = browser.new_page()
        page.goto(f"http://{a.address}:{PORT}/")
        offer = page.evaluate(PAGE_PEER, None)
        assert "a=candidate:" in offer["sdp"]  # thanks to the route to 8.8.8.8 (see netns.py)
        tell(answerer, offer)
        page.evaluate("answer => window.pc.setRemoteDescription(answer)",
                      {"type": "answer", "sdp": message(answerer_out, "sdp")})
        assert page.evaluate(PAGE_GOT) == "pong ping"
        assert message(answerer_out, "got") == "ping"
    finally:
        browser.close()


@pytest.mark.timeout(60)
def test_chromium_data_channel_between_hosts(hosts: Hosts, chromium: Any, tmp_path: Path) -> None:
    a, b = hosts.add("a"), hosts.add("b")
    serve(a, tmp_path / "www", "root")
    fetch(b, f"http://{a.address}:{PORT}/")
    browsers = []
    try:
        for host in (a, b):
            (tmp_path / host.name).mkdir()
            browsers.append(host.launch_chromium(chromium, tmp_path / host.name))
        offering, answering = (browser.new_page() for browser in browsers)
        for page in (offering, answering):
            page.goto(f"http://{a.address}:{PORT}/")
        offer = offering.evaluate(PAGE_PEER, None)
        answer = answering.evaluate(PAGE_PEER, offer)
        offering.evaluate("answer => window.pc.setRemoteDescription(answer)", answer)
        assert offering.evaluate(PAGE_GOT) == "pong ping"
    finally:
        for browser in browsers:
            browser.close()


@pytest.mark.timeout(60)
def test_without_the_route_chromium_has_no_candidate(hosts: Hosts, chromium: Any, tmp_path: Path) -> None:
    """Why hosts get a route to 8.8.8.8: without it Chromium offers no address at all."""
    a = hosts.add("a", webrtc_route=False)
    browser = a.launch_chromium(chromium, tmp_path)
    try:
        offer = browser.new_page().evaluate(PAGE_PEER, None)
        assert "a=candidate:" not in offer["sdp"]
    finally:
        browser.close()
