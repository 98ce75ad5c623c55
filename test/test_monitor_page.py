"""The monitoring page for real: a ``pando`` root, Chromium showing ``/monitor``, and volunteers.

The page lists a browser tab and a native volunteer as they join, shows their
throughput, drops one that leaves, shows HTML in a device name as text, says
when the root is gone and comes back when it returns, and says how a run
ended (done, or why it failed). ``pando.report()`` from a module running in Pyodide reaches the root's JSON log. A last test feeds the
page a fake status of a thousand volunteers (the feed's cap of 50 plus "and N
more") and checks that it stays light and fits a phone's screen. Another opens
the page without the run's join key and with a wrong one: neither gets a status.
With a tree (--degree), the page draws it as text from the status's rows, each
volunteer indented under the node it hangs under, and caps it for big trees.
"""
from __future__ import annotations

import json
import re
import signal
import time
from typing import Any

import pytest

from browser_helpers import skip_without_browser, wait_until, write_module
from conftest import FAILING

skip_without_browser("MONITORING PAGE TESTS")

from playwright.sync_api import Page, WebSocket, WebSocketRoute  # noqa: E402

READY_SECONDS = 90  # Pyodide starts in a few seconds per tab; more on a loaded machine
EVIL = '<img src=x onerror="window.pwned=1"><b>bold</b> & co'

# Busy for 20 ms without time.sleep (the same in CPython and Pyodide), and says
# it did 7 units of work per item.
REPORTING = """
    import time
    import pando

    @pando.function
    def slow_square(x):
        until = time.monotonic() + 0.02
        while time.monotonic() < until:
            pass
        pando.report(units=7)
        return x * x
"""


def rows(monitor: Page) -> dict[str, dict[str, Any]]:
    """The monitoring page's table, by device name as shown."""
    found = monitor.evaluate(
        """() => [...document.querySelectorAll('#device-rows tr')].map((tr) => ({
            name: tr.querySelector('.name').textContent,
            workers: tr.querySelector('[data-col=workers]').textContent,
            throughput: tr.querySelector('[data-col=throughput] span').textContent,
            cpu: tr.querySelector('[data-col=cpu]').textContent,
            items: tr.querySelector('[data-col=items]').textContent,
            state: tr.dataset.state,
        }))"""
    )
    return {row["name"]: row for row in found}


def figure(text: str) -> float:
    """A number as the page shows it ("1,234", "0.50", "—")."""
    text = text.replace(",", "").replace("%", "").strip()
    return float(text) if text and text != "—" else -1.0


def connection(monitor: Page) -> str:
    return monitor.get_attribute("#connection", "data-state") or ""


def tab_ready(page: Page) -> int:
    return page.evaluate("pando.pool ? pando.pool.readyCount : 0")


def statuses(text: str) -> list[dict[str, Any]]:
    """The JSON log's status lines among the root's stderr."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.mark.timeout(240)
def test_the_page_follows_a_tab_and_a_native_volunteer_and_escapes_names(
    tmp_path, tabs, start_root, start_volunteer, monkeypatch
):
    monkeypatch.setenv("PANDO_DEBUG", "monitoring")  # the root's JSON log, on its stderr
    module = write_module(tmp_path, "reporting.py", REPORTING)
    root = start_root(module, "--reporting-interval", "0.5")
    root.stderr.wait_for(lambda text: f":{root.port}/monitor" in text, 10, "the page's address at start-up")

    monitor = tabs.open(root.monitor_url, new_profile=True)
    wait_until(lambda: connection(monitor) == "live", 15, "the page to connect to the root")
    assert monitor.title() == "Pando monitor"
    # The page's link for volunteers carries the key that lets them in.
    assert monitor.get_attribute("#volunteer-link", "href") == root.join_url
    assert monitor.text_content("#volunteer-link") == root.join_url

    # A tab with an HTML device name, and a native volunteer, join.
    tab = tabs.open(root.page_url(EVIL, 1), new_profile=True)
    native = start_volunteer(root.join_url, name="native one")
    wait_until(lambda: {EVIL, "native one"} <= rows(monitor).keys(), 30, "both volunteers to be listed")
    wait_until(lambda: tab_ready(tab) >= 1, READY_SECONDS, "the tab's Pyodide worker to be ready")

    # Work: both show a throughput above zero, and so do the run's totals and charts.
    root.feed([str(n) for n in range(8000)], close=False)  # more than the test waits for; fits a pipe

    def both_busy() -> bool:
        shown = rows(monitor)
        return all(figure(shown[name]["throughput"]) > 0 for name in (EVIL, "native one") if name in shown)

    wait_until(both_busy, 30, "both volunteers to show a throughput")
    wait_until(lambda: figure(monitor.text_content("#t-throughput")) > 0, 10, "a total throughput")
    shown = rows(monitor)
    assert shown[EVIL]["workers"] == "1" and shown["native one"]["workers"] == "1", shown
    assert all(figure(row["items"]) > 0 for row in shown.values()), shown
    assert all(0 < figure(row["cpu"]) <= 100 for row in shown.values()), shown
    assert figure(monitor.text_content("#t-written")) > 0
    assert monitor.text_content("#t-now") == "2" and monitor.text_content("#t-ever") == "2"
    assert monitor.is_hidden("#tree-section")  # no tree without --degree: nothing to draw
    # The module reports 7 units per item: the page shows a units column then.
    assert monitor.locator("#devices.with-units").count() == 1
    # Both charts drew lines, and the legend names the busiest devices as text.
    wait_until(lambda: monitor.locator("#chart-devices polyline").count() == 2, 10, "two device lines")
    assert monitor.locator("#chart-total polyline").count() == 1
    legend = monitor.inner_text("#legend")
    assert EVIL in legend and "native one" in legend, legend

    # Throughput keeps being updated: the figures change from one status to the next.
    before = monitor.text_content("#t-written")
    wait_until(lambda: monitor.text_content("#t-written") != before, 5, "the totals to update")

    # The native volunteer dies: its row goes, and the tab's stays.
    native.process.send_signal(signal.SIGKILL)
    native.process.wait(10)
    wait_until(lambda: "native one" not in rows(monitor), 15, "the dead volunteer's row to go")
    assert EVIL in rows(monitor)
    wait_until(lambda: monitor.text_content("#t-now") == "1", 5, "one volunteer now")
    assert monitor.text_content("#t-ever") == "2"

    # The HTML name was text everywhere: no element came out of it, no script ran.
    time.sleep(0.5)
    assert monitor.locator("img").count() == 0
    assert monitor.locator("#devices b, #legend b").count() == 0
    assert monitor.evaluate("window.pwned") is None
    assert tab.evaluate("window.pwned") is None
    assert connection(monitor) == "live"

    # pando.report() in Pyodide reached the root: the tab's reports carry 7 units per item.
    log = statuses(root.stderr.text)
    assert log, root.stderr.text
    reports = [device["report"] for status in log for device in status["devices"]
               if device["name"] == EVIL and device["report"] and device["report"]["items"] > 0]
    assert reports, f"no report from the tab with items in {len(log)} status lines"
    for report in reports:
        assert report["units"] == 7 * report["items"], report
        assert report["cpu_time"] > 0, report
        # At most about the --reporting-interval; the first one covers only the time since the
        # module was ready, so it can be much shorter.
        assert 0 < report["interval"] <= 1.5, report


@pytest.mark.timeout(240)
def test_a_tab_sums_what_its_workers_report_with_pando_report(tmp_path, tabs, start_root, monkeypatch):
    monkeypatch.setenv("PANDO_DEBUG", "monitoring")
    module = write_module(
        tmp_path,
        "units.py",
        """
        import time
        import pando

        @pando.function
        def work(x):
            until = time.monotonic() + 0.01
            while time.monotonic() < until:
                pass
            pando.report(units=1000, data_transfer_time=0.5)
            return x + 1
        """,
    )
    root = start_root(module, "--reporting-interval", "1")
    tab = tabs.open(root.page_url("units tab", 2), new_profile=True)
    wait_until(lambda: tab_ready(tab) >= 2, READY_SECONDS, "the tab's two Pyodide workers to be ready")
    root.feed([str(n) for n in range(8000)], close=False)

    def reports() -> list[dict[str, Any]]:
        return [device["report"] for status in statuses(root.stderr.text) for device in status["devices"]
                if device["name"] == "units tab" and device["report"] and device["report"]["items"] > 0]

    wait_until(lambda: len(reports()) >= 3, 30, "three reports with items from the tab")
    # One report per interval for the whole tab: its two workers' figures summed, each
    # field the module gave replacing Pando's own measure.
    for report in reports():
        assert report["units"] == 1000 * report["items"], report
        assert report["data_transfer_time"] == pytest.approx(0.5 * report["items"]), report
        assert 0 < report["cpu_time"] <= 2 * report["interval"] * 1.2, report
        assert 0.5 <= report["interval"] <= 2, report


@pytest.mark.timeout(120)
def test_the_page_says_when_the_root_is_gone_and_reconnects_when_it_returns(
    tmp_path, tabs, start_root, start_volunteer
):
    module = write_module(tmp_path, "reporting.py", REPORTING)
    first = start_root(module, "--reporting-interval", "0.5")
    port = first.port
    monitor = tabs.open(first.monitor_url, new_profile=True)
    volunteer = start_volunteer(first.join_url, name="first run")
    wait_until(lambda: "first run" in rows(monitor), 20, "the volunteer to be listed")
    wait_until(lambda: monitor.evaluate("pandoMonitor.history.total.length") >= 3, 10, "a few statuses")
    assert monitor.evaluate("pandoMonitor.history.runs") == 1
    volunteer.close()
    first.process.send_signal(signal.SIGKILL)  # no last word: the page cannot tell how the run ended
    first.close()

    wait_until(lambda: connection(monitor) == "gone", 10, "the page to see the root go")
    text = monitor.text_content("#connection-text")
    assert "root is gone" in text and "retrying" in text, text
    assert monitor.get_attribute("#content", "data-stale") == "true"  # the last figures, greyed out

    second = start_root(module, "--reporting-interval", "0.5", port=port)
    start_volunteer(second.join_url, name="second run")
    wait_until(lambda: connection(monitor) == "live", 20, "the page to reconnect")
    wait_until(lambda: set(rows(monitor)) == {"second run"}, 20, "the new run's volunteer to be listed")
    assert monitor.get_attribute("#content", "data-stale") == "false"
    # A new run: the charts start again rather than run on from the old one.
    assert monitor.evaluate("pandoMonitor.history.runs") == 2
    second.close()  # Ctrl-C: the root's last status says so
    wait_until(lambda: connection(monitor) == "failed", 10, "the page to see the run interrupted")
    text = monitor.text_content("#connection-text")
    assert text.startswith("Failed: interrupted, exit status 130 (0 results written, took "), text


@pytest.mark.timeout(180)
def test_the_page_says_how_each_run_ended(tmp_path, tabs, start_root, start_volunteer):
    first = start_root(write_module(tmp_path, "reporting.py", REPORTING), "--reporting-interval", "0.5")
    monitor = tabs.open(first.monitor_url, new_profile=True)
    wait_until(lambda: connection(monitor) == "live", 15, "the page to connect to the root")
    start_volunteer(first.join_url, name="stayer", options=("--stay",))  # it computes both runs
    first.feed([str(n) for n in range(40)])
    assert first.wait(60) == 0, first.stderr.text

    wait_until(lambda: connection(monitor) == "done", 10, "the page to say the run is done")
    text = monitor.text_content("#connection-text")
    assert re.fullmatch(r"Done: 40 results, exit status 0, took \d+:\d\d", text), text
    assert monitor.get_attribute("#content", "data-stale") == "false"  # the final figures
    assert monitor.text_content("#t-written") == "40"
    time.sleep(3)  # the page looks for the next run quietly: its last word stays
    assert connection(monitor) == "done" and monitor.text_content("#connection-text") == text

    # The next run at the same address fails: the page follows it, and says why, as text.
    second = start_root(write_module(tmp_path, "failing.py", FAILING), "--reporting-interval", "0.5",
                        "--retries", "0", port=first.port)
    wait_until(lambda: connection(monitor) == "live", 20, "the page to follow the next run")
    second.feed(["1", "2", "3", "4"])
    assert second.wait(60) == 1, second.stderr.text
    wait_until(lambda: connection(monitor) == "failed", 10, "the page to say the run failed")
    text = monitor.text_content("#connection-text")
    assert text.startswith("Failed: item 3 (value '3') failed on volunteer "), text
    assert re.search(r"\(stayer\): ValueError: no <b>3</b> & no <img src=x onerror=window.pwned=1>, "
                     r"exit status 1 \(2 results written, took \d+:\d\d\)$", text), text
    assert monitor.locator("#connection b, #connection img").count() == 0
    assert monitor.evaluate("window.pwned") is None


def fake_status(step: int, devices: int = 1000, shown: int = 50) -> dict[str, Any]:
    """A status as the root's feed sends it with ``devices`` volunteers connected."""
    listed = []
    for n in range(shown):
        rate = 1000.0 - n * 10 + (step % 7)
        name = EVIL if n == 3 else f"device {n} " + "with a rather long name " * (n % 3)
        listed.append({
            "id": f"s{n}",
            "name": name,
            "workers": 1 + n % 8,
            "local": False,
            "state": "computing" if n % 5 else "idle",
            "items": 100 * step + n,
            "held": n % 4,
            "report": {"interval": 1, "items": int(rate), "cpu_time": 0.9, "data_transfer_time": 0.0,
                       "units": int(rate)},
            "throughput": rate,
            "cpu_usage": 0.9,
            "throughput_stats": {"average": rate, "stdev": 1.5, "min": rate - 2, "max": rate + 2, "count": step + 1},
            "cpu_stats": {"average": 0.9, "stdev": 0.01, "min": 0.88, "max": 0.92, "count": step + 1},
        })
    return {
        "type": "status", "time": 1_700_000_000 + step, "elapsed": float(step), "interval": 1,
        "items": {"total": None, "read": 5000 * step, "lent": 5000 * step, "relent": 3, "done": 4900 * step,
                  "failed": 0, "written": 4900 * step},
        "throughput": 4900.0, "volunteers": {"now": devices, "ever": devices + 20},
        "devices": listed, "more_devices": devices - shown,
    }


@pytest.mark.timeout(120)
def test_a_thousand_volunteers_keep_the_page_light_and_it_fits_a_phone(tmp_path, tabs, start_root):
    module = write_module(tmp_path, "reporting.py", REPORTING)
    root = start_root(module)
    # A phone's screen; the feed is the test's own, a status of 1000 volunteers each time.
    monitor = tabs.open(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    sockets: list[WebSocketRoute] = []
    monitor.route_web_socket("**/monitor", lambda ws: sockets.append(ws))
    monitor.goto(root.monitor_url)
    wait_until(lambda: sockets, 10, "the page to open its WebSocket")
    for step in range(1, 31):
        sockets[0].send(json.dumps(fake_status(step)))
    wait_until(lambda: monitor.text_content("#t-elapsed") == "0:30", 10, "the page to show the last status")

    assert len(rows(monitor)) == 50
    assert monitor.text_content("#more-devices").startswith("… and 950 more volunteers")
    assert monitor.text_content("#t-now") == "1,000"
    assert monitor.locator("img").count() == 0 and monitor.evaluate("window.pwned") is None
    assert EVIL in rows(monitor)
    assert monitor.locator("#chart-devices polyline").count() == 5  # the busiest five

    # Nothing is wider than the phone's screen.
    overflow = monitor.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the page is {overflow} px wider than the screen"

    # Handling a status of 50 shown devices takes a few milliseconds, not hundreds.
    per_status = monitor.evaluate(
        """(statuses) => {
            const started = performance.now();
            for (const status of statuses) pandoMonitor.receive(status);
            return (performance.now() - started) / statuses.length;
        }""",
        [fake_status(step) for step in range(31, 81)],
    )
    print(f"the page handles a status of 50 shown devices in {per_status:.1f} ms")
    assert per_status < 50, per_status
    assert len(rows(monitor)) == 50


def sockets(page: Page) -> list[dict[str, Any]]:
    """Every WebSocket the page opens from now on, with the frames it sends and receives."""
    opened: list[dict[str, Any]] = []

    def record(ws: WebSocket) -> None:
        entry: dict[str, Any] = {"url": ws.url, "sent": [], "received": []}
        ws.on("framesent", lambda payload: entry["sent"].append(payload))  # Playwright takes no built-in method
        ws.on("framereceived", lambda payload: entry["received"].append(payload))
        opened.append(entry)

    page.on("websocket", record)
    return opened


@pytest.mark.timeout(120)
def test_the_page_needs_the_runs_key_and_stops_when_refused(tmp_path, tabs, start_root):
    module = write_module(tmp_path, "reporting.py", REPORTING)
    root = start_root(module, "--reporting-interval", "0.5")
    wrong = root.key[:-1] + ("A" if root.key[-1] != "A" else "B")  # one character off
    bare, refused, keyed = (tabs.open(new_profile=True) for _ in range(3))
    bare_sockets, refused_sockets, keyed_sockets = (sockets(page) for page in (bare, refused, keyed))
    bare.goto(root.url + "monitor")
    refused.goto(f"{root.url}monitor#key={wrong};")
    keyed.goto(root.monitor_url)

    # With the key: the page says which run it watches, first thing, and statuses follow.
    wait_until(lambda: keyed.text_content("#t-elapsed") != "—", 10, "a status on the page with the key")
    assert connection(keyed) == "live"
    assert json.loads(keyed_sockets[0]["sent"][0]) == {"type": "watch", "key": root.key}

    # Without a key: a message, no connection, and no link for volunteers.
    wait_until(lambda: connection(bare) == "no-key", 10, "the page to miss its key")
    assert "lacks its join key" in bare.text_content("#connection-text")
    assert bare.is_hidden("#link")

    # A wrong key: the root's refusal, shown as text.
    wait_until(lambda: connection(refused) == "refused", 10, "the root to refuse the page")
    text = refused.text_content("#connection-text")
    assert text.startswith("Refused by the root: ") and len(text) > len("Refused by the root: "), text
    assert json.loads(refused_sockets[0]["sent"][0]) == {"type": "watch", "key": wrong}

    # Neither tries again nor gets a status (one comes every 0.5 s).
    time.sleep(3)
    assert connection(bare) == "no-key" and connection(refused) == "refused"
    assert bare_sockets == [] and len(refused_sockets) == 1, refused_sockets
    assert [json.loads(frame)["type"] for frame in refused_sockets[0]["received"]] == ["bye"]
    for page in (bare, refused):
        assert page.text_content("#t-elapsed") == "—" and page.evaluate("pandoMonitor.status") is None


def tree_row(id_: str, name: str, parent: str | None, depth: int, **more: Any) -> dict[str, Any]:
    """A device row as the root's status has it: the root's children in full, the rows below them short."""
    row: dict[str, Any] = {"id": id_, "name": name, "parent": parent, "depth": depth, "items": 10 * depth, "workers": 1}
    row.update(more)
    return row


def tree_status(step: int, devices: list[dict[str, Any]], tree: dict[str, Any]) -> dict[str, Any]:
    status = fake_status(step, devices=tree["nodes"], shown=0)
    status.update(devices=devices, more_devices=0, tree=tree)
    return status


def tree_lines(monitor: Page) -> list[tuple[str, int, str]]:
    """The tree as drawn: (name, depth, figures) per line, top to bottom."""
    return [tuple(line) for line in monitor.evaluate(
        """() => [...document.querySelectorAll('#tree li')].map((li) => [
            li.querySelector('.name').textContent, Number(li.dataset.depth), li.querySelector('small').textContent,
        ])"""
    )]


@pytest.mark.timeout(120)
def test_the_page_draws_the_tree_as_text_and_caps_a_big_one(tmp_path, tabs, start_root):
    module = write_module(tmp_path, "reporting.py", REPORTING)
    root = start_root(module)
    monitor = tabs.open()
    sockets: list[WebSocketRoute] = []
    monitor.route_web_socket("**/monitor", lambda ws: sockets.append(ws))
    monitor.goto(root.monitor_url)
    wait_until(lambda: sockets, 10, "the page to open its WebSocket")

    # Two children of the root; under the first a relay with a child (an HTML name), and a leaf.
    devices = [
        tree_row("aaaaaaaaaaaaaaa1", "zulu", None, 1, nodes=1, subtree_workers=2, workers=2),
        tree_row("aaaaaaaaaaaaaaa0", "alpha", None, 1, nodes=4, subtree_workers=5, workers=2),
        tree_row("bbbbbbbbbbbbbbb2", "gamma", "aaaaaaaaaaaaaaa0", 2),
        tree_row("bbbbbbbbbbbbbbb1", "beta", "aaaaaaaaaaaaaaa0", 2),
        tree_row("ccccccccccccccc1", EVIL, "bbbbbbbbbbbbbbb1", 3),
    ]
    sockets[0].send(json.dumps(tree_status(1, devices, {"nodes": 5, "children": 2, "depth": 3, "hidden": 0})))
    wait_until(lambda: monitor.is_visible("#tree-section"), 10, "the tree to be drawn")
    assert tree_lines(monitor) == [
        ("alpha", 1, "4 in its subtree · 5 workers · 10 items"),
        ("beta", 2, "2 in its subtree · 1 worker · 20 items"),
        (EVIL, 3, "1 worker · 30 items"),
        ("gamma", 2, "1 worker · 20 items"),
        ("zulu", 1, "2 workers · 10 items"),
    ]
    assert monitor.text_content("#tree-summary") == "5 volunteers in all, 2 under the root, 3 levels deep"
    assert monitor.is_hidden("#tree-more")
    # Deeper lines are indented further, and the HTML name stayed text.
    lefts = monitor.evaluate("[...document.querySelectorAll('#tree li .name')].map((e) => e.getBoundingClientRect().left)")
    assert lefts[0] < lefts[1] < lefts[2] and lefts[1] == lefts[3] and lefts[0] == lefts[4], lefts
    assert monitor.locator("img").count() == 0 and monitor.locator("#tree b").count() == 0
    assert monitor.evaluate("window.pwned") is None

    # A big tree: 300 rows listed (a chain under one child, and a row whose parent was left out), 1000 in all.
    big = [tree_row("d" * 15 + "0", "top", None, 1, nodes=1000, subtree_workers=1000)]
    for n in range(1, 299):
        big.append(tree_row(f"{n:016x}", f"link {n}", big[-1]["id"], n + 1))
    big.append(tree_row("e" * 16, "stray", "f" * 16, 7))
    status = tree_status(2, big, {"nodes": 1000, "children": 1, "depth": 299, "hidden": 700})
    handled_ms = monitor.evaluate(
        """(status) => { const t = performance.now(); pandoMonitor.receive(status); return performance.now() - t; }""",
        status)
    lines = tree_lines(monitor)
    assert len(lines) == 200 and lines[0][:2] == ("top", 1) and lines[199][:2] == ("link 199", 200), lines[-1]
    assert monitor.text_content("#tree-more") == "… and 800 more"
    summary = monitor.text_content("#tree-summary")
    assert summary == "1,000 volunteers in all, 1 under the root, 299 levels deep; 700 too far down to be listed", summary
    print(f"the page draws a tree of 300 rows in {handled_ms:.1f} ms")
    assert handled_ms < 500, handled_ms

    # The row whose parent is missing comes last, at its own depth.
    sockets[0].send(json.dumps(tree_status(3, big[:5] + big[-1:], {"nodes": 6, "children": 1, "depth": 7, "hidden": 0})))
    wait_until(lambda: len(tree_lines(monitor)) == 6, 10, "the smaller tree")
    assert [line[:2] for line in tree_lines(monitor)] == [
        ("top", 1), ("link 1", 2), ("link 2", 3), ("link 3", 4), ("link 4", 5), ("stray", 7)]

    # A run without a tree: no section.
    sockets[0].send(json.dumps(fake_status(4, devices=3, shown=3)))
    wait_until(lambda: monitor.is_hidden("#tree-section"), 10, "the tree section to go")
