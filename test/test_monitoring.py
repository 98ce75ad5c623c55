"""Monitoring: volunteers' reports, the JSON log, the monitoring feed, the progress line."""
from __future__ import annotations

import http.client
import json
import os
import pty
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosedOK
from websockets.sync.client import connect

from conftest import EXAMPLES, FAILING, KEY, PANDO, Processes, lines
from pando.monitor import Stats

pytestmark = pytest.mark.timeout(120)

REPORTING = """
import time
import pando

@pando.function
def square(x):
    time.sleep(0.004)
    pando.report(units=10)
    return x * x
"""


def statuses(err: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


def test_stats_match_the_textbook() -> None:
    values = [3.0, 1.5, 8.25, 0.0, 4.0]
    stats = Stats()
    for value in values:
        stats.add(value)
    summary = stats.summary()
    assert summary["average"] == pytest.approx(statistics.fmean(values))
    assert summary["stdev"] == pytest.approx(statistics.pstdev(values))
    assert (summary["min"], summary["max"], summary["count"]) == (0.0, 8.25, 5)
    assert Stats().summary()["average"] is None


def test_json_log_fields_cadence_and_module_reports(procs: Processes) -> None:
    path = procs.tmp / "reporting.py"
    path.write_text(REPORTING)
    root = procs.pando(
        str(path), "--stdin", "--start-idle", "--reporting-interval", "0.5", stdin=lines(*range(600)),
        PANDO_DEBUG="monitoring",
    )
    procs.volunteer(root.port, "--workers", "1", "--name", "lab-pc")
    assert root.wait() == 0, root.err
    assert root.out == "".join(f"{i * i}\n" for i in range(600)).encode()

    log = statuses(root.err)
    assert len(log) >= 3, root.err
    gaps = [later["time"] - earlier["time"] for earlier, later in zip(log, log[1:-1])]  # the last is at the end
    assert 0.3 < statistics.median(gaps) < 0.9
    for status in log:
        assert set(status) >= {"time", "elapsed", "interval", "items", "throughput", "volunteers", "devices"}
        assert set(status["items"]) == {"total", "read", "lent", "relent", "done", "failed", "written", "speculative",
                                        "timed_out", "retried", "disagreements"}
        assert status["interval"] == 0.5 and status["items"]["total"] is None
    assert log[-1]["volunteers"]["ever"] == 1
    assert log[-1]["items"]["written"] == 600  # a last status as the run ends, with how it ended
    assert log[-1]["outcome"] == {"status": 0, "failure": None}
    assert all("outcome" not in status for status in log[:-1])
    reports = [device for status in log for device in status["devices"] if device["report"]]
    assert reports, "the volunteer's reports reach the log"
    device = reports[-1]
    assert device["name"] == "lab-pc" and device["workers"] == 1 and not device["local"]
    assert set(device["report"]) == {"interval", "items", "cpu_time", "data_transfer_time", "units"}
    busy = [d["report"] for d in reports if d["report"]["items"]]
    assert busy and all(report["units"] == 10 * report["items"] for report in busy)  # pando.report(units=10)
    assert all(0 <= d["cpu_usage"] <= 1 and d["throughput"] >= 0 for d in reports)
    assert device["throughput_stats"]["count"] >= 1 and device["throughput_stats"]["max"] > 0


def test_monitor_feed_pushes_statuses(procs: Processes) -> None:
    root = procs.pando(
        str(EXAMPLES / "square.py"), "--stdin", "--start-idle", "--reporting-interval", "0.3",
        stdin=lines(*range(50)),
    )
    procs.volunteer(root.port, "--workers", "2", "--name", "<b>bold</b>")
    with connect(f"ws://127.0.0.1:{root.port}/monitor", proxy=None) as ws:
        ws.send(json.dumps({"type": "watch", "key": KEY}))
        deadline = time.monotonic() + 20
        while True:
            status = json.loads(ws.recv(timeout=5))
            assert status["type"] == "status"
            names = [device["name"] for device in status["devices"]]
            if "<b>bold</b>" in names and status["items"]["written"] > 0:
                break
            assert time.monotonic() < deadline, status
    assert status["more_devices"] == 0


def test_the_feed_ends_with_how_the_run_ended(procs: Processes) -> None:
    path = procs.tmp / "failing.py"
    path.write_text(FAILING)
    root = procs.pando(str(path), "--start-idle", "--retries", "0", "--reporting-interval", "0.3", "1", "2", "3", "4")
    with connect(f"ws://127.0.0.1:{root.port}/monitor", proxy=None) as ws:
        ws.send(json.dumps({"type": "watch", "key": KEY}))
        procs.volunteer(root.port, "--workers", "1")
        received = []
        with pytest.raises(ConnectionClosedOK):  # the root closes the feed once it said how the run ended
            while True:
                received.append(json.loads(ws.recv(timeout=20)))
    assert root.wait() == 1 and root.out == b"1\n2\n"
    last = received[-1]
    assert last["type"] == "status" and last["items"]["written"] == 2 and last["elapsed"] > 0
    assert last["outcome"]["status"] == 1
    failure = last["outcome"]["failure"]
    assert failure.startswith("item 3 (value '3') failed on volunteer "), failure
    assert failure.endswith("ValueError: no <b>3</b> & no <img src=x onerror=window.pwned=1>"), failure
    assert all("outcome" not in status for status in received[:-1])


def run_on_a_terminal(procs: Processes, *args: str) -> tuple[int, str]:
    """Run pando with stderr on a pseudo-terminal; return its status and what the terminal got."""
    main, secondary = pty.openpty()
    out = (procs.tmp / "out").open("wb")
    popen = procs.popen(
        [PANDO, "--port", "0", *args], stdin=subprocess.DEVNULL, stdout=out, stderr=secondary,
        env=procs.env(COLUMNS="120"),
    )
    os.close(secondary)
    screen = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the terminal closed: pando is done
            break
        if not chunk:
            break
        screen += chunk
    os.close(main)
    out.close()
    return popen.wait(30), screen.decode("utf-8", "replace")


def test_progress_line_and_qr_code_on_a_terminal(procs: Processes) -> None:
    items = [str(i) for i in range(4)]
    code, screen = run_on_a_terminal(procs, str(EXAMPLES / "square.py"), *items)
    assert code == 0
    assert "\x1b[K" in screen and "written, " in screen and "/4 written" in screen and "ETA" in screen
    assert "█▀" in screen or "▀█" in screen or "▄█" in screen, "a QR code of the join URL is drawn"
    assert screen.rstrip("\r\n").endswith("\x1b[K") or "written" not in screen.splitlines()[-1]
    assert (procs.tmp / "out").read_bytes() == b"0\n1\n4\n9\n"


def test_no_progress_line_nor_qr_code_when_quiet_or_not_a_terminal(procs: Processes) -> None:
    code, screen = run_on_a_terminal(procs, str(EXAMPLES / "square.py"), "--quiet", "1", "2")
    assert code == 0 and "\x1b[K" not in screen and "written" not in screen and "█" not in screen
    root = procs.pando(str(EXAMPLES / "square.py"), "1", "2")
    assert root.wait() == 0
    assert "\x1b[K" not in root.err and "written" not in root.err and "█" not in root.err


def test_monitor_page_is_served(procs: Processes) -> None:
    if not (Path(__file__).resolve().parent.parent / "pando" / "web" / "monitor.html").exists():
        pytest.fail("pando/web/monitor.html is missing")
    root = procs.pando(str(EXAMPLES / "square_fast.py"), "--stdin", "--start-idle", stdin=lines(1))
    root.wait_for_stderr(f"Monitoring at http://localhost:{root.port}/monitor")
    connection = http.client.HTTPConnection("127.0.0.1", root.port, timeout=10)
    connection.request("GET", "/monitor")
    response = connection.getresponse()
    assert response.status == 200 and response.getheader("Content-Type", "").startswith("text/html")
    connection.close()


BIG_REPORTS = """
import time
import pando

@pando.function
def f(x):
    time.sleep(0.15)  # a few reports go out before item 7
    pando.report(units=2**52)  # four of these add up past what a frame may carry
    pando.report(units=2**52)
    if x == 7:
        pando.report(cpu_time=float("inf"))
    return x
"""


def test_reports_stay_sendable_and_a_bad_figure_is_the_items_error(procs: Processes) -> None:
    path = procs.tmp / "big.py"
    path.write_text(BIG_REPORTS)
    root = procs.pando(str(path), "--stdin", "--start-idle", "--reporting-interval", "0.2", stdin=lines(*range(10)))
    volunteer = procs.volunteer(root.port, "--workers", "2")
    assert root.wait() == 1
    assert root.out == lines(*range(7))  # no frame refused, no session dropped on the way
    assert "item 8 (value '7') failed" in root.err and "must be a number from 0 to 2**53" in root.err
    assert "bad frame" not in root.err
    volunteer.wait(10)


@pytest.mark.parametrize("workers", [None, "3"])
def test_alone_the_root_computes_on_every_core(procs: Processes, workers: str | None) -> None:
    """The root's own helper has one worker per core, or --workers N."""
    path = procs.tmp / "reporting.py"
    path.write_text(REPORTING)
    args = ["--workers", workers] if workers else []
    root = procs.pando(str(path), "--stdin", "--reporting-interval", "0.2", *args, stdin=lines(*range(300)),
                       PANDO_DEBUG="monitoring")
    assert root.wait() == 0, root.err
    helpers = [d for s in statuses(root.err) for d in s["devices"] if d["local"]]
    assert helpers and {d["workers"] for d in helpers} == {int(workers or os.cpu_count() or 1)}
