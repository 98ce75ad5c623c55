"""Browser volunteers over WebRTC data channels, for real, across separate hosts.

Each test puts its processes on hosts of their own (network namespaces on a
private bridge, the ``hosts`` fixture of test/netns.py): a ``pando`` root, a
``pando-server`` where one is needed, and headless Chromium, whose tabs run
the volunteer page. The page joins through the rendezvous (the root's own on
a LAN, or the server's) and then computes over a data channel to the root,
which answers with aiortc. The outputs are compared with ``--local``'s.

The first test checks the page's data-channel framing on its own, in one tab:
two peer connections of that tab, one ChannelLink on each end.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote

import pytest

from browser_helpers import Lines, Root, clean_env, local_output, skip_without_browser, stop_process, wait_until, \
    write_module
from conftest import slow_module

skip_without_browser("WEBRTC BROWSER TESTS")

if find_spec("aiortc") is None:
    _MESSAGE = ("WEBRTC BROWSER TESTS SKIPPED, WebRTC is NOT tested on this machine: "
                "aiortc is not installed (pip install 'aiortc>=1.16,<2')")
    print(f"\n{'!' * 78}\n{_MESSAGE}\n{'!' * 78}", file=sys.stderr)
    warnings.warn(_MESSAGE)
    pytest.skip(_MESSAGE, allow_module_level=True)

from playwright.sync_api import Page  # noqa: E402

from netns import Host, Hosts  # noqa: E402

# Every host has its own ports.
ROOT_PORT = 8000
SERVER_PORT = 8080
SECRET = "a secret of the test server, long enough"
JOIN_KEY = "webrtc-test-join-key-0123456789"
READY_SECONDS = 90


def pando_server_command() -> list[str]:
    script = Path(sys.executable).parent / "pando-server"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "pando.pandoserver"]


@pytest.fixture
def roots(tmp_path: Path) -> Iterator[Any]:
    """``roots(host, module, *options)``: a root listening on ROOT_PORT in that host, stopped at the end."""
    started: list[Root] = []

    def start(host: Host, module: Path, *options: str) -> Root:
        (tmp_path / host.name).mkdir(exist_ok=True)
        root = Root(module, tmp_path / host.name, "--bind", host.address, "--join-key", JOIN_KEY, *options,
                    port=ROOT_PORT, prefix=host.command([]), address=host.address)
        started.append(root)
        return root

    try:
        yield start
    finally:
        for root in started:
            root.close()


class PandoServer:
    """``pando-server --port SERVER_PORT --bind ADDRESS --secret SECRET`` in a host."""

    def __init__(self, host: Host, tmp: Path) -> None:
        self.url = f"http://{host.address}:{SERVER_PORT}/"
        self.host = f"{host.address}:{SERVER_PORT}"
        self.process = subprocess.Popen(
            host.command([*pando_server_command(), "--port", str(SERVER_PORT), "--bind", host.address,
                          "--secret", SECRET]),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=clean_env(tmp), cwd=tmp,
        )
        self.stderr = Lines(self.process.stderr)  # type: ignore[arg-type]
        self.stderr.wait_for(lambda text: "Serving volunteer code at" in text, 30, "pando-server to listen")

    def close(self) -> None:
        stop_process(self.process)
        self.stderr.join(5)


def page_url(base: str, device: str, workers: int, *, webrtc: bool = False) -> str:
    protocol = "protocol=webrtc;" if webrtc else ""
    return f"{base}#{protocol}key={JOIN_KEY};device={quote(device, safe='')};workers={workers};"


def status(page: Page) -> dict[str, Any]:
    return page.evaluate(
        """() => typeof pando === 'undefined'  // the page's module has not run yet
            ? {state: 'loading', text: '', transport: null, computed: 0, ready: 0}
            : {
                state: pando.state,
                text: document.querySelector('#state-text').textContent,
                transport: pando.link ? pando.link.transport : null,
                computed: pando.computed,
                ready: pando.pool ? pando.pool.readyCount : 0,
            }"""
    )


def wait_ready(page: Page, workers: int) -> None:
    wait_until(lambda: status(page)["ready"] >= workers, READY_SECONDS, f"{workers} Pyodide worker(s) to be ready")


def wait_done(page: Page) -> None:
    wait_until(lambda: status(page)["state"] == "done", 20, "the page to say the job is over")


def sockets(page: Page) -> list[str]:
    """The URL of every WebSocket the page opens from now on."""
    opened: list[str] = []
    page.on("websocket", lambda ws: opened.append(ws.url))
    return opened


# Strings come back reversed.
SLOW_SQUARE = slow_module(0.01, "x[::-1] if isinstance(x, str) else x * x")

# Items of ~100 KB and results of ~200 KB: frames over 60 KiB each way, so in chunks.
BIG = """
    import hashlib
    import pando

    @pando.function
    def grow(x):
        if isinstance(x, str):
            digest = hashlib.sha256(x.encode()).hexdigest()
            return digest + "é" * 100_000  # 200 KB of UTF-8 in 100,064 characters
        return x * 2
"""


# -- the framing of the page's ChannelLink, in one tab --------------------------------------------

CHANNEL_PAIR = """async () => {
    const { ChannelLink, CHUNK_BYTES } = await import('/link.js');
    const a = new RTCPeerConnection(), b = new RTCPeerConnection();
    a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate);
    b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate);
    const channelA = a.createDataChannel('pando', { ordered: true });
    const channelB = new Promise((resolve) => { b.ondatachannel = (e) => resolve(e.channel); });
    await a.setLocalDescription(await a.createOffer());
    await b.setRemoteDescription(a.localDescription);
    await b.setLocalDescription(await b.createAnswer());
    await a.setRemoteDescription(b.localDescription);
    const channels = [channelA, await channelB];
    await Promise.all(channels.map((c) => c.readyState === 'open' ? null : new Promise((r) => { c.onopen = r; })));
    return { a, b, channels, CHUNK_BYTES, ChannelLink };
}"""

FRAMING = """async (pairSource) => {
    const pair = await eval(pairSource)();
    const { a, b, channels, CHUNK_BYTES, ChannelLink } = pair;
    const sender = new ChannelLink(a, channels[0]);
    const receiver = new ChannelLink(b, channels[1], { maxBytes: 32 * 1024 * 1024 });
    const chunks = [];
    channels[1].addEventListener('message', (e) => { if (typeof e.data !== 'string') chunks.push(e.data.byteLength); });
    const frames = [
        'small',
        'a'.repeat(CHUNK_BYTES),           // the largest text message
        'a'.repeat(CHUNK_BYTES + 1),       // the smallest chunked frame
        'é'.repeat(100_000),               // 200,000 bytes of UTF-8: chunk bounds split characters
        'z'.repeat(20 * 1024 * 1024),      // far beyond the 4 MiB the page lets the channel buffer
        'after the big one',
    ];
    const got = [];
    const all = new Promise((resolve) => {
        receiver.onmessage = (text) => { got.push(text); if (got.length === frames.length) resolve(); };
    });
    let closed = null;
    receiver.onclose = (reason) => { closed = reason; };
    const sent = frames.map((frame) => sender.send(frame));
    const peakQueued = sender.queue.length;
    const peakChannel = channels[0].bufferedAmount;
    await all;
    const lastChunk = chunks.slice(-1)[0];
    const result = {
        sent, peakQueued, peakChannel, closed,
        same: got.map((text, i) => text === frames[i]),
        chunkSizes: [...new Set(chunks)].sort((x, y) => x - y),
        open: sender.isOpen && receiver.isOpen,
    };
    // Over the receiver's limit: it closes the link and says why.
    const over = new Promise((resolve) => { receiver.onclose = resolve; });
    sender.send('x'.repeat(32 * 1024 * 1024 + 1));
    result.overLimit = await over;
    await new Promise((r) => setTimeout(r, 500));
    result.senderOpen = sender.isOpen;
    return result;
}"""

CLOSING = """async (pairSource) => {
    const { a, b, channels, ChannelLink } = await eval(pairSource)();
    const left = new ChannelLink(a, channels[0]);
    const right = new ChannelLink(b, channels[1]);
    const got = [];
    let rightClosed = null;
    right.onmessage = (text) => got.push(text.length);
    right.onclose = (reason) => { rightClosed = reason; };
    // Closing by choice lets what was sent go out first, even a frame still queued in the page
    // (for as long as it moves).
    left.send('y'.repeat(12 * 1024 * 1024));
    left.send('the last word');
    left.close(1000, 'done');
    const sendAfterClose = left.send('too late');
    await new Promise((resolve) => { const t = setInterval(() => { if (rightClosed) { clearInterval(t); resolve(); } }, 50); });
    // A silent peer: the watchdog ends the link.
    const pair = await eval(pairSource)();
    const quiet = new ChannelLink(pair.a, pair.channels[0]);
    new ChannelLink(pair.b, pair.channels[1]);  // never says anything
    const started = performance.now();
    const silence = await new Promise((resolve) => { quiet.onclose = resolve; quiet.watch(400); });
    return { got, rightClosed, sendAfterClose, silence, silentFor: performance.now() - started,
             states: [a.connectionState, b.connectionState] };
}"""


@pytest.mark.timeout(120)
def test_the_page_frames_chunks_and_paces_a_data_channel(tmp_path, hosts: Hosts, roots, chromium_in):
    """The page's ChannelLink (link.js) against itself: two peer connections in one tab."""
    host = hosts.add("tab")
    root = roots(host, write_module(tmp_path, "slow.py", SLOW_SQUARE))  # serves the page's files
    page = chromium_in(host).open(f"{root.url}no-such-page")  # the root's origin, no volunteer

    framing = page.evaluate(FRAMING, CHANNEL_PAIR)
    assert framing["sent"] == [True] * 6
    assert framing["same"] == [True] * 6, framing["same"]
    # A flag byte and at most 60 KiB: full chunks, and the last of each chunked frame.
    chunk = 60 * 1024
    lasts = {1 + 1, 200_000 - 3 * chunk + 1, 20 * 1024 * 1024 - 341 * chunk + 1}
    assert framing["chunkSizes"] == sorted({chunk + 1} | lasts), framing["chunkSizes"]
    # 20 MiB were accepted at once, but the channel was given about 4 MiB: the rest waited in the page.
    assert framing["peakQueued"] > 100 and framing["peakChannel"] <= 4 * 1024 * 1024 + 60 * 1024 + 1, framing
    assert framing["open"] and framing["closed"] is None, framing
    assert framing["overLimit"] == "the root sent a frame over 33554432 bytes", framing
    assert not framing["senderOpen"]  # the receiver hung up: the other end sees it

    closing = page.evaluate(CLOSING, CHANNEL_PAIR)
    assert closing["got"] == [12 * 1024 * 1024, len("the last word")], closing
    assert closing["sendAfterClose"] is False
    assert closing["rightClosed"], closing  # the closed end's peer hears of it
    assert closing["silence"].startswith("the root went silent (nothing heard for"), closing
    assert 400 <= closing["silentFor"] < 3000, closing


# -- a tab and a root on one LAN: the root's own rendezvous ----------------------------------------


@pytest.mark.timeout(240)
def test_a_tab_asking_for_webrtc_computes_over_a_data_channel_to_a_lan_root(tmp_path, hosts: Hosts, roots,
                                                                             chromium_in):
    root_host, tab_host = hosts.add("root"), hosts.add("tab")
    module = write_module(tmp_path, "slow.py", SLOW_SQUARE)
    items = [str(n) for n in range(400)] + ["2.5", "héllo wörld ✓", "-7"]
    expected = local_output(module, items, tmp_path)

    root = roots(root_host, module)
    page = chromium_in(tab_host).open()
    opened = sockets(page)
    page.goto(page_url(root.url, "rtc tab", 2, webrtc=True))
    wait_ready(page, 2)
    # The workers start while the page joins: ready workers do not mean an open channel yet.
    figures = wait_until(lambda: (now := status(page))["state"] == "waiting" and now, 30, "the page to connect")
    assert figures["transport"] == "WebRTC", figures
    assert figures["text"] == "Connected over WebRTC — waiting for items", figures
    root.feed(items)
    assert root.wait(120) == 0, root.stderr.text
    assert root.output == expected
    wait_done(page)
    assert status(page)["computed"] == len(items)
    # One signal socket, closed once the channel was open; never the root's /volunteer socket.
    assert opened == [f"ws://{root_host.address}:{ROOT_PORT}/rendezvous/signal"], opened
    assert "connected over WebRTC" in page.inner_text("#log")


# Counts the binary messages (chunks) of the page's data channels, each way, and the largest.
COUNT_CHUNKS = """
window.chunks = { sent: 0, received: 0, largest: 0 };
const send = RTCDataChannel.prototype.send;
RTCDataChannel.prototype.send = function (data) {
    if (typeof data !== 'string') {
        window.chunks.sent++;
        window.chunks.largest = Math.max(window.chunks.largest, data.byteLength);
    }
    return send.call(this, data);
};
const create = RTCPeerConnection.prototype.createDataChannel;
RTCPeerConnection.prototype.createDataChannel = function (...args) {
    const channel = create.apply(this, args);
    channel.addEventListener('message', (event) => {
        if (typeof event.data !== 'string') {
            window.chunks.received++;
            window.chunks.largest = Math.max(window.chunks.largest, event.data.byteLength);
        }
    });
    return channel;
};
"""


@pytest.mark.timeout(240)
def test_frames_over_60_kib_cross_the_data_channel_both_ways(tmp_path, hosts: Hosts, roots, chromium_in):
    root_host, tab_host = hosts.add("root"), hosts.add("tab")
    module = write_module(tmp_path, "big.py", BIG)
    items = [f"{n}-" + "ω" * 50_000 for n in range(6)] + ["3", "4"]  # 100 KB of UTF-8 each
    expected = local_output(module, items, tmp_path)
    assert max(len(line.encode()) for line in expected.splitlines()) > 200_000

    root = roots(root_host, module, "--batch-size", "3")
    page = chromium_in(tab_host).open()
    page.add_init_script(COUNT_CHUNKS)
    page.goto(page_url(root.url, "big frames", 1, webrtc=True))
    wait_ready(page, 1)
    root.feed(items)
    assert root.wait(120) == 0, root.stderr.text
    assert root.output == expected
    wait_done(page)
    assert status(page)["computed"] == len(items)
    chunks = page.evaluate("window.chunks")
    # 6 items of 100 KB came in chunks (lend frames of 1 to 3), 6 results of 200 KB went out in chunks.
    chunk = 60 * 1024
    assert chunks["received"] >= 6 * 100_000 // chunk and chunks["sent"] >= 6 * 200_000 // chunk, chunks
    assert chunks["largest"] == 60 * 1024 + 1, chunks


@pytest.mark.timeout(240)
def test_a_root_gone_silent_is_left_and_joined_again_over_a_new_channel(tmp_path, hosts: Hosts, roots,
                                                                          chromium_in):
    """A stopped root keeps its channel 'open' in the browser: the page's watchdog notices the silence."""
    root_host, tab_host = hosts.add("root"), hosts.add("tab")
    module = write_module(tmp_path, "slow.py", SLOW_SQUARE)
    items = [str(n) for n in range(100)]
    expected = local_output(module, items, tmp_path)

    root = roots(root_host, module, "--heartbeat", "2000")
    page = chromium_in(tab_host).open(page_url(root.url, "patient tab", 1, webrtc=True))
    wait_ready(page, 1)
    os.kill(root.process.pid, signal.SIGSTOP)
    try:
        stopped = time.monotonic()
        wait_until(lambda: "the root went silent" in page.inner_text("#log"), 15, "the page to notice the silence")
        assert time.monotonic() - stopped < 8  # 2 x heartbeat, and a little
    finally:
        os.kill(root.process.pid, signal.SIGCONT)
    wait_until(lambda: status(page)["text"] == "Connected over WebRTC — waiting for items", 60,
               "the page to join again")
    root.feed(items)
    assert root.wait(120) == 0, root.stderr.text
    assert root.output == expected
    wait_done(page)


# -- through a pando-server ---------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_a_tab_waits_for_a_root_then_computes_through_a_pando_server_run_after_run(
        tmp_path, hosts: Hosts, roots, chromium_in):
    server_host, root_host, tab_host = hosts.add("server"), hosts.add("root"), hosts.add("tab")
    module = write_module(tmp_path, "slow.py", SLOW_SQUARE)
    items = [str(n) for n in range(300)] + ["2.5", "héllo wörld ✓", "-7"]
    expected = local_output(module, items, tmp_path)
    (tmp_path / "server").mkdir()
    server = PandoServer(server_host, tmp_path / "server")
    try:
        config = json.loads(tab_host.run([sys.executable, "-c", f"import urllib.request; print(urllib.request.urlopen("
                                          f"'{server.url}rendezvous/config', timeout=10).read().decode())"],
                                         capture_output=True, text=True, check=True).stdout)
        assert config == {"service": "pando-server", "transport": "webrtc", "root": False}

        # The page, from the server, before any root: no job yet, and it keeps asking.
        page = chromium_in(tab_host).open()
        opened = sockets(page)
        page.goto(page_url(server.url, "far tab", 2))  # no protocol=webrtc: the server's config says it
        wait_until(lambda: status(page)["text"].startswith("No job here yet — retrying in"), 20,
                   "the page to say there is no job yet")
        assert "no job yet" in page.inner_text("#log")

        root = roots(root_host, module, "--host", server.host, "--secret", SECRET)
        wait_ready(page, 2)
        figures = status(page)
        assert figures["transport"] == "WebRTC" and figures["text"] == "Connected over WebRTC — waiting for items"
        root.feed(items)
        assert root.wait(120) == 0, root.stderr.text
        assert root.output == expected
        wait_done(page)
        assert status(page)["computed"] == len(items)

        # The tab stays: the next run through the server, once the first one exited, finds it again.
        second = roots(root_host, module, "--host", server.host, "--secret", SECRET)
        second.feed(["4", "5"])
        assert second.wait(READY_SECONDS) == 0, second.stderr.text
        assert second.output == "16\n25\n"
        wait_done(page)
        assert status(page)["computed"] == len(items) + 2
        assert opened and all(url == f"ws://{server.host}/rendezvous/signal" for url in opened), opened
    finally:
        server.close()


# -- what a rendezvous says is shown as text, and a malformed frame is refused --------------------

EVIL = '<img src=x onerror="window.pwned = 1">'

# What a stand-in rendezvous (Playwright's WebSocket routing, in the browser) answers to each join.
RENDEZVOUS_ANSWERS = {
    "bye": [{"type": "bye", "reason": "no-root", "message": f"no job {EVIL}"}],
    "reject": [{"type": "welcome", "id": "0" * 32, "config": {"ice_servers": [], "bootstrap_timeout": 5}},
               {"type": "signal", "kind": "reject", "message": f"go away {EVIL}"}],
    "malformed": [{"type": "welcome", "id": "not hex", "config": {"ice_servers": [], "bootstrap_timeout": 5}}],
}


@pytest.mark.timeout(120)
def test_what_the_rendezvous_says_is_shown_as_text(tmp_path, hosts: Hosts, roots, chromium_in):
    """The page's side of the rendezvous against a stand-in: messages are text, bad frames are refused."""
    host = hosts.add("tab")
    root = roots(host, write_module(tmp_path, "slow.py", SLOW_SQUARE))  # serves the page, nothing more
    browser = chromium_in(host)
    for case, frames in RENDEZVOUS_ANSWERS.items():
        page = browser.open()
        offers: list[dict[str, Any]] = []

        def answer(ws: Any, frames: list[dict[str, Any]] = frames) -> None:
            ws.send(json.dumps(frames[0]))
            ws.on_message(lambda text: (offers.append(json.loads(text)),
                                        [ws.send(json.dumps(frame)) for frame in frames[1:]]))

        page.route_web_socket("**/rendezvous/signal", answer)
        page.goto(page_url(root.url, f"{case} tab", 1, webrtc=True))
        # Read when it gives up: its next attempt may begin soon after.
        given_up = wait_until(lambda: (now := status(page))["state"] == "offline" and now, 20,
                              f"the page to give up the join ({case})")
        log = page.inner_text("#log")
        if case == "bye":
            assert f"no job yet: no job {EVIL}; waiting for one" in log, log
            assert given_up["text"].startswith("No job here yet — retrying in"), given_up
            assert offers == []
        elif case == "reject":
            assert f"the root turned this page away: go away {EVIL}" in log, log
            assert len(offers) == 1 and offers[0]["kind"] == "offer" and "a=candidate:" in offers[0]["sdp"], offers
            assert set(offers[0]) == {"type", "kind", "sdp"}  # no key, no id: the root learns those over the channel
        else:
            assert "the rendezvous sent a malformed frame ('id' must be 32 hex digits)" in log, log
            assert offers == []
        assert page.locator("#log img, #state img").count() == 0
        assert page.evaluate("window.pwned") is None
        page.close()
