"""Browser volunteers for real: headless Chromium tabs run the user's module in Pyodide.

Each test starts a real ``pando`` root (``--start-idle``, so only the
volunteers the test opens compute), opens the volunteer page in Chromium tabs
driven by Playwright, and checks what the root prints and what the page shows.
The last tests check that only invited pages join: one without the run's join
key, one with a wrong key and one served from another origin never do.
"""
from __future__ import annotations

import json
import time
from typing import Any

import pytest

from browser_helpers import (CHROMIUM_ARGS, chromium_path, local_output, skip_without_browser, wait_until,
                             write_module)
from conftest import COUNTER, slow_module

skip_without_browser("BROWSER TESTS")

from playwright.sync_api import Page, WebSocket, WebSocketRoute  # noqa: E402

# Pyodide starts in 2.5-6 s per tab here; a run of a few thousand items takes seconds.
READY_SECONDS = 90


def status(page: Page) -> dict[str, Any]:
    """The volunteer's own figures (window.pando is the page's Volunteer object)."""
    return page.evaluate(
        """() => ({
            state: pando.state,
            computed: pando.computed,
            errors: pando.errors,
            ready: pando.pool ? pando.pool.readyCount : 0,
            held: pando.pool ? pando.pool.slots.reduce((n, slot) => n + slot.held.length, 0) : 0,
        })"""
    )


def wait_ready(page: Page, workers: int) -> None:
    wait_until(lambda: status(page)["ready"] >= workers, READY_SECONDS, f"{workers} Pyodide worker(s) to be ready")


NEXT_JOB = "The job is over — thank you! Waiting for the next job…"


def wait_done(page: Page) -> None:
    """The job is over, and the page stays for the next one."""
    wait_until(lambda: status(page)["state"] == "done", 15, "the page to say the job is over")
    assert page.text_content("#state-text") == NEXT_JOB


# A module with every kind of value: ints, floats, strings, a big integer, JSON results.
WORK = """
    import pando

    def steps(n):
        count = 0
        while n > 1:
            n = n // 2 if n % 2 == 0 else 3 * n + 1
            count += 1
        return count

    @pando.function
    def work(x):
        if isinstance(x, int):
            return x + 1 if x > 10**1000 else {"n": x, "steps": steps(x)}
        if isinstance(x, float):
            return x / 3
        return x[::-1]
"""

SPECIAL_ITEMS = ["2.5", "1e3", "-0.75", "007", "hello", "héllo wörld ✓", "[1, 2]", "-12", "0", "a\tb", "9" * 5000]

# Busy for a while without relying on time.sleep, the same in CPython and Pyodide.
SLOW_SQUARE = slow_module(0.02)


@pytest.mark.timeout(240)
def test_two_tabs_with_two_workers_each_compute_2000_items(tmp_path, tabs, start_root, monkeypatch):
    monkeypatch.setenv("PANDO_DEBUG", "monitoring")  # the run's last status says how many extra copies were lent
    module = write_module(tmp_path, "work.py", WORK)
    items = [str(n) for n in range(1, 2001 - len(SPECIAL_ITEMS))] + SPECIAL_ITEMS
    assert len(items) == 2000
    expected = local_output(module, items, tmp_path)

    root = start_root(module)
    first = tabs.open(root.page_url("tab one", 2))
    second = tabs.open(root.page_url("tab two", 2))
    wait_ready(first, 2)
    wait_ready(second, 2)
    started = time.monotonic()
    root.feed(items)
    assert root.wait(120) == 0, root.stderr.text
    elapsed = time.monotonic() - started

    assert root.output == expected
    wait_done(first)
    wait_done(second)
    counts = [status(first)["computed"], status(second)["computed"]]
    last = json.loads([line for line in root.stderr.text.splitlines() if line.startswith('{"')][-1])
    assert last["outcome"]["status"] == 0, last
    # Every item once, and again only where the root lent an extra copy (the last items, queued on one
    # tab while the other's workers idled); a tab may get its bye before it computes a copy it lost.
    extra = last["items"]["speculative"]
    assert 2000 <= sum(counts) <= 2000 + extra, (counts, extra)
    assert min(counts) > 0, f"one tab computed nothing: {counts}"
    print(f"2000 items on two tabs x two workers: {elapsed:.1f} s, split {counts}")


@pytest.mark.timeout(300)
def test_closed_and_reloaded_tabs_lose_and_duplicate_nothing(tmp_path, tabs, start_root):
    module = write_module(tmp_path, "slow.py", SLOW_SQUARE)
    items = [str(n) for n in range(600)]
    expected = local_output(module, items, tmp_path)

    root = start_root(module, "--heartbeat", "5000")
    # One worker each: Python starting in the tabs' workers is most of this test's time.
    closing = tabs.open(root.page_url("closed tab", 1))
    reloading = tabs.open(root.page_url("reloaded tab", 1))
    staying = tabs.open(root.page_url("staying tab", 1))
    for page in (closing, reloading, staying):
        wait_ready(page, 1)
    root.feed(items)

    # Close one tab while it computes, then reload another while it computes.
    def busy(page: Page) -> bool:
        figures = status(page)
        return figures["computed"] >= 20 and figures["held"] > 0  # a worker is computing an item

    wait_until(lambda: busy(closing), 60, "the first tab to compute")
    closing.close()
    wait_until(lambda: busy(reloading), 60, "the second tab to compute")
    reloading.reload()

    assert root.wait(180) == 0, root.stderr.text
    assert root.output == expected  # every item once, in order
    wait_done(staying)
    wait_done(reloading)  # the reloaded tab joined again


class Gate:
    """Holds what the root sends a page until opened (Playwright's WebSocket routing); the page's frames pass."""

    def __init__(self) -> None:
        self.opened = False
        self.held: list[str | bytes] = []
        self.page_side: WebSocketRoute | None = None

    def route(self, ws: WebSocketRoute) -> None:
        self.page_side = ws
        ws.connect_to_server().on_message(self.from_root)

    def from_root(self, frame: str | bytes) -> None:
        if self.opened:
            assert self.page_side is not None
            self.page_side.send(frame)
        else:
            self.held.append(frame)

    def open(self) -> None:
        assert self.page_side is not None
        self.opened = True
        for frame in self.held:
            self.page_side.send(frame)
        self.held.clear()


@pytest.mark.timeout(180)
def test_python_starts_before_the_module_arrives(tmp_path, tabs, start_root):
    module = write_module(tmp_path, "slow.py", SLOW_SQUARE)
    items = [str(n) for n in range(40)]
    expected = local_output(module, items, tmp_path)
    root = start_root(module, "--heartbeat", "120000")  # the root hears no heartbeat while the module is held
    root.feed(items)

    gate = Gate()
    page = tabs.open()
    page.route_web_socket("**/volunteer", gate.route)
    page.goto(root.page_url("early", 2))
    # The workers' Python is up while the module frame is still held back.
    wait_until(lambda: page.evaluate("pando.pool.slots.every((slot) => slot.state === 'booted')"), READY_SECONDS,
               "the workers' Python to start")
    assert gate.held, "the root sent nothing"
    assert page.evaluate("pando.session === null && pando.pool.module === null")
    log = page.inner_text("#log")
    assert "starting 2 Python worker(s)" in log and "joined as volunteer" not in log, log

    gate.open()
    # Playwright relays the root's frames while it waits on the page, not while the test waits on the root.
    page.wait_for_function("() => pando.state === 'done'", timeout=60_000)
    assert root.wait(10) == 0, root.stderr.text
    assert root.output == expected


DRAW = """
    import random
    import pando

    @pando.function
    def draw(x):
        return [x * x, random.random()]
"""


@pytest.mark.timeout(240)
def test_a_warm_tab_restores_its_workers_from_the_snapshot_and_computes(tmp_path, tabs, start_root):
    root = start_root(write_module(tmp_path, "draw.py", DRAW))
    first = tabs.open(root.page_url("first", 1))
    wait_ready(first, 1)
    # The first worker of a browser without a snapshot starts afresh and makes one.
    assert first.evaluate("pando.pool.slots.map((slot) => slot.restored)") == [False]
    wait_until(lambda: first.evaluate("pando.pool.snapshotKept"), 30, "the page to keep the snapshot")
    first.close()

    warm = tabs.open(root.page_url("warm", 2))  # the same browser profile: the snapshot is kept there
    wait_ready(warm, 2)
    assert warm.evaluate("pando.pool.slots.map((slot) => slot.restored)") == [True, True]
    assert "restored from a snapshot" in warm.inner_text("#log")
    root.feed([str(n) for n in range(60)])
    assert root.wait(60) == 0, root.stderr.text
    results = [json.loads(line) for line in root.output.splitlines()]
    assert [square for square, _ in results] == [n * n for n in range(60)]
    # Each restored interpreter draws its own random numbers, not the snapshot's.
    assert len({draw for _, draw in results}) == 60
    assert warm.evaluate("pando.computed") == 60
    wait_done(warm)


@pytest.mark.timeout(180)
def test_an_error_raised_in_pyodide_reaches_the_root_with_its_traceback(tmp_path, tabs, start_root):
    module = write_module(
        tmp_path,
        "raises.py",
        """
        import sys
        import pando

        @pando.function
        def fragile(x):
            if x == 3:
                raise ValueError(f"<i>boom</i> on {sys.platform}")
            return x * x
        """,
    )
    root = start_root(module)
    page = tabs.open(root.page_url("tab", 1))
    wait_ready(page, 1)
    root.feed(["1", "2", "3", "4"])
    assert root.wait(60) == 1
    stderr = root.stderr.text
    # The traceback comes from the browser: Python there runs on emscripten.
    assert "Traceback (most recent call last)" in stderr, stderr
    assert "ValueError: <i>boom</i> on emscripten" in stderr, stderr
    assert 'raises.py", line 8, in fragile' in stderr, stderr
    assert root.output.startswith("1\n4\n")

    # The page shows the error as text, never as markup.
    wait_until(lambda: status(page)["errors"] >= 1, 10, "the page to count the error")
    assert "<i>boom</i> on emscripten" in page.text_content("#problem-text")
    assert "Traceback" in page.text_content("#problem-details")
    assert page.locator("#problem i").count() == 0


@pytest.mark.timeout(180)
def test_a_module_that_needs_a_missing_package_is_reported_on_the_page_and_at_the_root(tmp_path, tabs, start_root):
    # docopt is installed beside pando (so the root can load the module), but not in Pyodide, and an
    # import through importlib is not seen at the root: docopt is not sent with the module.
    module = write_module(
        tmp_path,
        "needs_docopt.py",
        """
        import importlib
        import pando

        docopt = importlib.import_module("docopt")

        @pando.function
        def f(x):
            return x
        """,
    )
    root = start_root(module)
    page = tabs.open(root.page_url("tab", 1))
    wait_until(lambda: status(page)["state"] == "broken", READY_SECONDS, "the page to report the broken module")
    assert page.text_content("#state-text") == "This device cannot run the module"
    assert page.is_visible("#problem")
    details = page.text_content("#problem-details")
    assert "No module named 'docopt'" in details, details
    assert "the pure-Python modules and packages the root sends with the module" in details, details

    root.stderr.wait_for(lambda text: "No module named 'docopt'" in text, 20, "the root to report the missing package")
    assert "cannot run the module" in root.stderr.text
    # The page does not retry a module that cannot run.
    time.sleep(2)
    assert status(page)["state"] == "broken"


@pytest.mark.timeout(120)
def test_a_device_name_holding_html_is_shown_as_text(tmp_path, tabs, start_root):
    module = write_module(tmp_path, "slow.py", SLOW_SQUARE)
    root = start_root(module)
    evil = '<img src=x onerror="document.title=\'pwned\'"><b>bold</b> & co'

    # From the URL hash.
    page = tabs.open(root.page_url(evil, 1))
    assert page.text_content("#device") == evil
    assert page.locator("#device *").count() == 0
    wait_until(lambda: status(page)["state"] in ("loading", "waiting"), 30, "the tab to join")

    # Remembered: another tab of the same browser does not ask again.
    again = tabs.open(root.join_url)
    assert again.is_hidden("#join")
    assert again.text_content("#device") == evil

    # Typed into the form, on a device that never joined.
    typed = tabs.open(root.join_url, new_profile=True)
    assert typed.is_visible("#name-input")
    typed.fill("#name-input", evil)
    typed.click("#join button[type=submit]")
    assert typed.text_content("#device") == evil
    assert typed.locator("#device *").count() == 0
    assert typed.evaluate("localStorage.getItem('pando.device')") == evil

    time.sleep(0.5)
    for shown in (page, again, typed):
        assert shown.title() == "Pando volunteer"
        assert shown.locator("img").count() == 0


@pytest.mark.timeout(300)
def test_a_tab_stays_for_run_after_run_each_afresh_until_a_root_refuses_it(tmp_path, tabs, start_root):
    first = start_root(write_module(tmp_path, "slow.py", SLOW_SQUARE))
    page = tabs.open(first.page_url("stayer", 1))
    first.feed(["1", "2", "3"])
    assert first.wait(READY_SECONDS) == 0, first.stderr.text
    assert first.output == "1\n4\n9\n"
    wait_done(page)
    assert page.is_visible("#stop") and page.is_hidden("#retry")  # Stop ends the wait

    # The next runs on the same port and key, each started after the last one exited: the tab joins
    # them with no click, and each starts with fresh workers (the same module's count starts again).
    counter = write_module(tmp_path, "counter.py", COUNTER)
    for items, expected in ((["1", "2", "3"], "1:1\n2:2\n3:3\n"), (["4", "5"], "4:1\n5:2\n")):
        root = start_root(counter, port=first.port)
        root.feed(items)
        assert root.wait(READY_SECONDS) == 0, root.stderr.text
        assert root.output == expected
        wait_done(page)
    assert page.text_content("#module") == "counter.py"
    log = page.inner_text("#log")
    assert log.count("waiting for the next job") == 3, log
    # Looking for the next run said nothing per look.
    assert "cannot reach" not in log and "connection to the root lost" not in log, log

    # A run of another user (another key) at the same address: refused, the tab stops looking.
    start_root(counter, "--join-key", "another-users-key-0123456789", port=first.port)
    wait_until(lambda: status(page)["state"] == "refused", 30, "the other user's root to refuse the tab")
    assert "join key" in page.text_content("#problem-text")
    opened = sockets(page)
    time.sleep(6)  # longer than the longest pause between two looks
    assert status(page)["state"] == "refused" and opened == []


@pytest.mark.timeout(180)
def test_a_tab_and_a_native_volunteer_share_a_run(tmp_path, tabs, start_root, start_volunteer):
    module = write_module(tmp_path, "slow.py", SLOW_SQUARE)
    items = [str(n) for n in range(300)]
    expected = local_output(module, items, tmp_path)

    root = start_root(module)
    page = tabs.open(root.page_url("tab", 1))
    wait_ready(page, 1)
    native = start_volunteer(root.join_url, workers=1)
    native.stderr.wait_for(lambda text: "joined as" in text, 30, "the native volunteer to join")
    root.feed(items)
    assert root.wait(120) == 0, root.stderr.text
    assert root.output == expected
    wait_done(page)
    computed = status(page)["computed"]
    assert 0 < computed < len(items), f"the tab computed {computed} of {len(items)}: the work was not shared"
    native.process.wait(15)
    assert native.process.returncode == 0, native.stderr.text


KINDS = """
    import pando

    @pando.function
    def kind(x):
        return f"{type(x).__name__}:{x!r}"
"""


@pytest.mark.timeout(180)
def test_with_raw_a_tab_gives_the_function_each_item_as_written(tmp_path, tabs, start_root):
    module = write_module(tmp_path, "kinds.py", KINDS)
    items = ["1.50", "1e3", "42", "007", "-0", ""]
    root = start_root(module, "--raw")
    page = tabs.open(root.page_url("tab", 1))
    wait_ready(page, 1)
    root.feed(items)
    assert root.wait(60) == 0, root.stderr.text
    assert root.output == "".join(f"str:{item!r}\n" for item in items)
    wait_done(page)
    assert status(page)["computed"] == len(items)


@pytest.mark.timeout(180)
def test_a_worker_that_crashes_is_replaced_and_its_item_lent_again(tmp_path, tabs, start_root):
    # Reading outside WebAssembly memory traps: Pyodide suffers a fatal error and its worker is lost.
    module = write_module(
        tmp_path,
        "crashes.py",
        """
        import ctypes
        import pando

        @pando.function
        def f(x):
            if x == 5:
                return ctypes.string_at(2**32 - 64, 4096)
            return x * x
        """,
    )
    root = start_root(module)
    page = tabs.open(root.page_url("tab", 2))
    wait_ready(page, 2)
    root.feed([str(n) for n in range(1, 11)])
    assert root.wait(90) == 1
    stderr = root.stderr.text
    # Lent again after each crash, then reported failed after its third loss, like a dead native worker.
    assert "item 5 (value '5') failed" in stderr, stderr
    assert "lost 3 times" in stderr and "memory access out of bounds" in stderr, stderr
    assert root.output == "1\n4\n9\n16\n"
    log = page.inner_text("#log")
    assert log.count("a worker stopped: the Python interpreter failed") >= 3, log
    assert "starting a new one" in log


@pytest.mark.timeout(120)
def test_a_browser_that_cannot_start_pyodide_says_so_and_tells_the_root(tmp_path, tabs, start_root):
    module = write_module(tmp_path, "slow.py", SLOW_SQUARE)
    root = start_root(module)
    # The root serves Pyodide, but it fails in this browser (as it would with no WebAssembly).
    context = tabs.browser.new_context()
    tabs.contexts.append(context)
    context.route(
        "**/node_modules/pyodide/pyodide.mjs",
        lambda route: route.fulfill(status=200, content_type="text/javascript",
                                    body="throw new Error('no WebAssembly in this browser');"),
    )
    page = context.new_page()
    page.on("pageerror", lambda error: tabs.page_errors.append(str(error)))
    page.goto(root.page_url("no pyodide", 1))
    wait_until(lambda: status(page)["state"] == "broken", 60, "the page to give up")
    details = page.text_content("#problem-details")
    assert "Python could not start in this browser" in details and "no WebAssembly" in details, details
    # The first try and three more, then it gives up.
    assert page.inner_text("#log").count("a worker stopped: Pyodide could not start") == 4
    root.stderr.wait_for(lambda text: "Python could not start in this browser" in text, 20, "the root to hear why")


# -- only invited volunteers: the join key, and pages from elsewhere ---------------------------


def sockets(page: Page) -> list[WebSocket]:
    """Every WebSocket the page opens from now on."""
    opened: list[WebSocket] = []
    page.on("websocket", lambda ws: opened.append(ws))  # Playwright takes no built-in method
    return opened


JOINED = "joined with"  # PANDO_DEBUG=session: the root's line for each session that joins


@pytest.mark.timeout(180)
def test_a_page_without_its_key_says_so_and_never_joins(tmp_path, tabs, start_root, monkeypatch):
    monkeypatch.setenv("PANDO_DEBUG", "session")
    root = start_root(write_module(tmp_path, "slow.py", SLOW_SQUARE))
    root.feed(["1", "2", "3"])
    page = tabs.open()
    opened = sockets(page)
    page.goto(f"{root.url}#device=keyless;workers=1;")  # the address without its fragment's key

    wait_until(lambda: status(page)["state"] == "no-key", 10, "the page to miss its key")
    problem = page.text_content("#problem-text")
    assert "lacks its join key" in problem and "#key=" in problem, problem
    assert page.is_visible("#problem") and page.is_hidden("#retry") and page.is_hidden("#stop")
    time.sleep(3)  # longer than the first reconnection delays
    assert status(page)["state"] == "no-key"
    assert opened == [], "the page opened a WebSocket without a key"
    assert JOINED not in root.stderr.text and root.output == ""

    # The full URL pasted over it (only the fragment changes, the page stays): it joins and computes.
    page.goto(root.page_url("keyless", 1))
    root.stderr.wait_for(lambda text: JOINED in text, 20, "the page to join with its key")
    assert root.wait(READY_SECONDS) == 0, root.stderr.text
    assert root.output == "1\n4\n9\n"
    assert page.is_hidden("#problem")
    assert root.key not in page.evaluate("JSON.stringify({ ...localStorage })")  # the bookmark carries it


@pytest.mark.timeout(120)
def test_a_page_with_a_wrong_key_is_refused_and_stops(tmp_path, tabs, start_root, monkeypatch):
    monkeypatch.setenv("PANDO_DEBUG", "session")
    root = start_root(write_module(tmp_path, "slow.py", SLOW_SQUARE))
    root.feed(["1", "2", "3"], close=False)
    wrong = root.key[:-1] + ("A" if root.key[-1] != "A" else "B")  # one character off
    page = tabs.open()
    opened = sockets(page)
    page.goto(f"{root.url}#key={wrong};device=wrong key;workers=1;")

    wait_until(lambda: status(page)["state"] == "refused", 20, "the root to refuse the page")
    assert page.text_content("#state-text") == "Refused by the root"
    assert page.text_content("#problem-text"), "the root's reason is not shown"
    assert "refused:" in page.inner_text("#log")
    time.sleep(3)  # no retry on its own
    assert status(page)["state"] == "refused" and len(opened) == 1, [ws.url for ws in opened]
    assert JOINED not in root.stderr.text and root.output == ""


# A volunteer's hello from a page's script; resolves with the first frame's type, or the close code.
TRY_JOIN = """([url, hello]) => new Promise((resolve) => {
    const ws = new WebSocket(url);
    ws.onopen = () => ws.send(JSON.stringify(hello));
    ws.onmessage = (event) => { resolve({ frame: JSON.parse(event.data).type }); ws.close(); };
    ws.onclose = (event) => resolve({ closed: event.code });
})"""


@pytest.mark.timeout(120)
def test_a_page_from_another_origin_is_refused_at_the_handshake(tmp_path, tabs, start_root, monkeypatch):
    monkeypatch.setenv("PANDO_DEBUG", "session")
    root = start_root(write_module(tmp_path, "slow.py", SLOW_SQUARE))
    endpoint = f"ws://127.0.0.1:{root.port}/volunteer"
    hello = {"type": "hello", "protocol": 2, "name": "elsewhere", "workers": 1, "role": "volunteer",
             "key": root.key}
    # Chromium itself keeps a public site from a local address; Firefox and Safari do not, so
    # this browser is told not to, and the root's own check is what stops the page.
    lax = tabs.browser.browser_type.launch(
        executable_path=chromium_path(), args=[*CHROMIUM_ARGS, "--disable-features=LocalNetworkAccessChecks"])
    try:
        page = lax.new_page()
        page.route("http://evil.test/**", lambda route: route.fulfill(
            status=200, content_type="text/html", body="<!doctype html><title>A site on the web</title>"))
        page.goto("http://evil.test/")
        errors: list[str] = []
        page.on("websocket", lambda ws: ws.on("socketerror", lambda error: errors.append(error)))
        assert page.evaluate(TRY_JOIN, [endpoint, hello]) == {"closed": 1006}
        wait_until(lambda: errors, 5, "the browser to say why the socket failed")
        assert "Unexpected response code" in errors[0], errors  # the root answered, and not with 101
    finally:
        lax.close()
    time.sleep(0.5)
    assert JOINED not in root.stderr.text

    # The same script on a page the root served joins: it was the origin that was refused.
    own = tabs.open(f"{root.url}no-such-page")
    assert own.evaluate(TRY_JOIN, [endpoint, hello]) == {"frame": "module"}
    root.stderr.wait_for(lambda text: JOINED in text, 10, "the root's own page to join")
