"""Workload 7, browser volunteers: a tab's time to its first result, and Pyodide's speed against CPython.

Headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) opens the
volunteer page of a real ``pando examples/collatz.py --stdin --start-idle``
root with one Pyodide worker (``#key=K;device=NAME;workers=1;``, K the join key the root prints).

* **First result**: one small item (a range of a few integers) is written to
  the root, then a tab opens the page; time = ``page.goto`` called → the root
  prints the result. Five tabs per repetition, on one root, one port (the
  HTTP cache and the page's Python snapshot are per origin):

  - *cold*: a fresh profile in a freshly started browser: nothing cached;
  - *warm, tab reopened*: the cold tab closed, a new one opened in the same
    browser: Pyodide's files revalidate (``If-None-Match`` → 304) and the
    worker restores the snapshot the cold tab made;
  - *warm, browser restarted*: the browser closed and started again on the
    same profile (disk cache), like a volunteer coming back the next day;
  - *cold, 4 workers* and *warm, 4 workers*: the same with ``workers=4`` on
    another fresh profile, and then a tab reopened there; also timed: all
    four workers ready (the page's clock, from its navigation).

  A tab is closed once its workers are ready and its page has kept its
  Python snapshot (a tab that computes for more than a moment does; closing
  it sooner keeps nothing). What went over the wire (requests, how many
  revalidated with a body-less 304, bytes) and the page's own figures
  (workers ready, their load steps, whether they restored a snapshot) are
  recorded.
* **Throughput**: collatz ranges (examples/collatz_ranges.py) computed by one
  Pyodide worker (its tab ready before the first item), by ``pando --local``
  (CPython in the root's process) and by one native ``pando-volunteer
  --workers 1`` (joined before the first item): time = first item written →
  last line read; items/s per worker and Pyodide ÷ CPython. The three alternate,
  repeated; every output must equal ``--local``'s.

If Chromium, Playwright or Pyodide is missing, the workload says why and is
skipped. Ports 19800–19899 only; every browser and process is closed at the end.

    python bench/browser.py [quick|full]    # the same as run.py SIZE --only browser
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "test"))

from browser_helpers import CHROMIUM_ARGS, chromium_path  # noqa: E402
from browser_helpers import missing_requirements as missing  # noqa: E402
from common import (EXAMPLES, PYTHON, REPO, VOLUNTEER, LineClock, Procs, Volunteer, fmt, log, ratio,  # noqa: E402
                    stderr_collector, summary, table, wait_for, wait_port, wait_volunteers)

MODULE = EXAMPLES / "collatz.py"
PYODIDE = REPO / "pando" / "web" / "node_modules" / "pyodide"
PORTS = (19800, 19899)
READY_TIMEOUT = 120  # a Pyodide worker starts in 2.5–6 s here; much more on a loaded machine
SNAPSHOT_TIMEOUT = 10  # a page keeps its Python snapshot (31 MiB) in well under a second
PHASES = ["cold", "warm_tab", "warm_restart", "cold_4", "warm_4"]
PHASE_NAMES = {"cold": "cold (fresh profile)", "warm_tab": "warm, tab reopened",
               "warm_restart": "warm, browser restarted", "cold_4": "cold, 4 workers (fresh profile)",
               "warm_4": "warm, 4 workers, tab reopened"}
#: What each phase does to the browser before its tab opens: start it on a fresh profile, restart it, or nothing.
PHASE_BROWSER = {"cold": "fresh", "warm_tab": None, "warm_restart": "restart", "cold_4": "fresh", "warm_4": None}


_next_port = [PORTS[0] + os.getpid() % (PORTS[1] - PORTS[0] + 1)]


def free_port() -> int:
    """A port in 19800-19899 that nothing listens on right now."""
    span = PORTS[1] - PORTS[0] + 1
    for _ in range(span):
        port = _next_port[0]
        _next_port[0] = PORTS[0] + (port + 1 - PORTS[0]) % span
        with socket.socket() as probe:
            try:
                probe.bind(("", port))  # pando listens on every interface
            except OSError:
                continue
        return port
    raise RuntimeError("no free port in 19800-19899")


def collatz_items(count: int, size: int) -> bytes:
    return subprocess.run([PYTHON, str(EXAMPLES / "collatz_ranges.py"), str(count), str(size)],
                          capture_output=True, check=True).stdout


_KEY = re.compile(r"Serving volunteer code at http://\S+/#key=([A-Za-z0-9_-]+);")


def join_key(errors: list[str]) -> str:
    """The run's join key, from the URLs the root prints on stderr at start-up."""
    wait_for(lambda: any(_KEY.search(line) for line in errors), 20, "the root to print its URL")
    return next(match.group(1) for line in errors if (match := _KEY.search(line)))


def page_url(port: int, key: str, device: str, workers: int = 1) -> str:
    return f"http://127.0.0.1:{port}/#key={key};device={quote(device, safe='')};workers={workers};"


PAGE_STATUS = """() => {
    const ready = pando.pool ? pando.pool.slots.filter((s) => s.state === 'ready') : [];
    return {state: pando.state, computed: pando.computed, ready: ready.length,
            ready_ms: ready.map((s) => s.readyAt), steps: ready.map((s) => s.steps),
            restored: ready.map((s) => Boolean(s.restored))};
}"""


def page_status(page: Any) -> dict[str, Any]:
    try:
        return page.evaluate(PAGE_STATUS)
    except Exception:  # the page is still loading its script
        return {"state": None, "computed": 0, "ready": 0, "ready_ms": [], "steps": [], "restored": []}


class Browser:
    """Chromium on one profile directory (a persistent context: its disk cache survives a restart)."""

    def __init__(self, playwright: Any, profile: Path, page_errors: list[str]) -> None:
        self.playwright = playwright
        self.profile = profile
        self.context: Any = None
        self.responses: list[Any] = []  # Playwright requests that finished
        self.page_errors = page_errors  # uncaught exceptions on the page

    def start(self) -> None:
        self.context = self.playwright.chromium.launch_persistent_context(
            str(self.profile), executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        self.context.on("requestfinished", lambda request: self.responses.append(request))

    def open(self, url: str) -> Any:
        page = self.context.new_page()
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        page.goto(url)
        return page

    def close(self) -> None:
        if self.context is not None:
            try:
                self.context.close()
            except Exception:
                pass
            self.context = None


def _responses_summary(requests: list[Any]) -> dict[str, Any]:
    """What went over the wire. Playwright reports a revalidated response as the cached 200, so a
    request counts as revalidated (a 304) when it was sent with If-None-Match and no body came back."""
    files = []
    for request in requests:
        if not request.url.startswith("http"):
            continue  # the page's blob: clock worker
        sizes = request.sizes()
        sent = request.all_headers()
        body = max(0, sizes["responseBodySize"])
        files.append({"path": urlsplit(request.url).path, "body": body, "headers": sizes["responseHeadersSize"],
                      "revalidated": "if-none-match" in sent and body == 0})
    return {"requests": len(files), "revalidated": sum(f["revalidated"] for f in files),
            "downloaded": sum(not f["revalidated"] for f in files),
            "bytes": sum(f["body"] + max(0, f["headers"]) for f in files),
            "pyodide_wasm": next(({"bytes": f["body"], "revalidated": f["revalidated"]} for f in files
                                  if f["path"].endswith("pyodide.asm.wasm")), None)}


def _wait_quietly(predicate: Any, timeout: float) -> bool:
    """Whether ``predicate`` came true within ``timeout`` seconds."""
    try:
        wait_for(predicate, timeout, "", 0.05)
    except RuntimeError:
        return False
    return True


def first_result_rep(playwright: Any, rep: int, item: bytes, scratch: Path,
                     page_errors: list[str]) -> list[dict[str, Any]]:
    """One repetition: every phase of PHASES, in order, on one root."""
    procs = Procs()
    browser: Browser | None = None
    profiles = 0
    out = []
    try:
        port = free_port()
        root = procs.pando(MODULE, "--stdin", "--start-idle", "--heartbeat", "5000", port=port)
        errors = stderr_collector(root)
        wait_port(port)
        key = join_key(errors)
        clock = LineClock(root.stdout, keep=True)
        for phase in PHASES:
            workers = 4 if phase.endswith("_4") else 1
            if PHASE_BROWSER[phase] == "fresh":
                if browser is not None:
                    browser.close()
                    shutil.rmtree(browser.profile, ignore_errors=True)
                profiles += 1
                browser = Browser(playwright, scratch / f"profile-{rep}-{profiles}", page_errors)
                shutil.rmtree(browser.profile, ignore_errors=True)
                browser.start()
            elif PHASE_BROWSER[phase] == "restart":
                assert browser is not None
                browser.close()
                browser.start()
            assert browser is not None
            before = clock.count
            browser.responses.clear()
            root.stdin.write(item)
            root.stdin.flush()
            start = time.monotonic()
            page = browser.open(page_url(port, key, f"first-{phase}", workers))
            loaded = time.monotonic() - start  # page.goto returns at the load event
            try:
                wait_for(lambda: clock.count > before or root.poll() is not None, READY_TIMEOUT,
                         f"the first result of a {phase} tab")
                wait_for(lambda: page_status(page)["ready"] >= workers, READY_TIMEOUT,
                         f"{workers} workers of a {phase} tab", 0.05)
            except RuntimeError:
                raise RuntimeError(f"no result from a {phase} tab; root stderr: {''.join(errors[-5:])}") from None
            if clock.count <= before:
                raise RuntimeError(f"the root exited ({root.returncode}): {''.join(errors[-5:])}")
            seconds = (clock.last or time.monotonic()) - start
            status = page_status(page)
            responses = _responses_summary(browser.responses)
            # A tab that computes for more than a moment keeps the Python snapshot it made for later tabs.
            kept = _wait_quietly(lambda: page.evaluate("pando.pool.snapshotKept"), SNAPSHOT_TIMEOUT)
            page.close()
            first = min(range(workers), key=lambda i: status["ready_ms"][i])
            result = {"phase": phase, "rep": rep, "workers": workers, "seconds": seconds, "load_event_s": loaded,
                      "loadavg_1m": os.getloadavg()[0],
                      "worker_ready_ms": status["ready_ms"][first],
                      "workers_ready_ms": max(status["ready_ms"]),
                      "worker_steps_ms": status["steps"][first],
                      "restored": status["restored"], "snapshot_kept": kept,
                      "responses": responses}
            out.append(result)
            r = result["responses"]
            log(f"browser first result rep {rep} {phase}: {seconds:.2f} s (worker ready at "
                f"{fmt(float(result['worker_ready_ms']))} ms, all {workers} at "
                f"{fmt(float(result['workers_ready_ms']))} ms, restored {sum(result['restored'])}; "
                f"{r['requests']} requests, {r['revalidated']} revalidated, "
                f"{fmt(r['bytes'] / 2**20, 2)} MiB transferred)")
        return out
    finally:
        if browser is not None:
            browser.close()
            shutil.rmtree(browser.profile, ignore_errors=True)
        procs.cleanup()


def throughput_one(kind: str, data: bytes, count: int, browser: Browser | None) -> dict[str, Any]:
    """One timed run of ``kind``: 'local' (pando --local), 'native' (1 volunteer × 1 worker) or
    'pyodide' (1 tab × 1 worker)."""
    procs = Procs()
    page = None
    try:
        extra: dict[str, Any] = {}
        if kind == "local":
            root = procs.pando(MODULE, "--stdin", "--local", port=0)
            errors = stderr_collector(root)
        else:
            port = free_port()
            root = procs.pando(MODULE, "--stdin", "--start-idle", "--heartbeat", "5000", port=port)
            errors = stderr_collector(root)
            wait_port(port)
            key = join_key(errors)
            if kind == "native":
                # Procs.volunteer's URL lacks the key: the URL as the root printed it.
                volunteer = Volunteer(procs.popen(
                    [VOLUNTEER, f"http://127.0.0.1:{port}/#key={key};", "--workers", "1", "--name", "cpython"],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
                wait_volunteers([volunteer], 1)
            else:
                assert browser is not None
                started = time.monotonic()
                page = browser.open(page_url(port, key, "pyodide"))
                wait_for(lambda: page_status(page)["ready"] >= 1, READY_TIMEOUT, "a Pyodide worker", 0.1)
                extra["tab_ready_s"] = time.monotonic() - started
                time.sleep(0.3)  # let the page's hello/ready reach the root
        clock = LineClock(root.stdout, keep=True)
        start = time.monotonic()
        threading.Thread(target=lambda: (root.stdin.write(data), root.stdin.close()), daemon=True).start()
        try:
            code = root.wait(1800)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{kind}: the root did not finish; stderr: {''.join(errors[-5:])}") from None
        clock.join(10)
        seconds = (clock.last or time.monotonic()) - start
        return {"kind": kind, "seconds": seconds, "items_per_s": count / seconds, "exit": code,
                "loadavg_1m": os.getloadavg()[0],
                "output": clock.text(), **extra}
    finally:
        if page is not None:
            try:
                page.close()
            except Exception:
                pass
        procs.cleanup()


def run(params: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"params": params}
    reason = missing()
    if reason:
        log(f"browser: SKIPPED — {reason}")
        out["skipped"] = reason
        return out
    from playwright.sync_api import sync_playwright

    out["chromium"] = _chromium_version()
    out["pyodide"] = json.loads((PYODIDE / "package.json").read_text()).get("version")
    out["page_errors"] = []
    errors: list[str] = []
    scratch = Path(tempfile.mkdtemp(prefix="pando-bench-browser-"))
    try:
        with sync_playwright() as playwright:
            # A broken browser must not lose the rest of the run: each part fails on its own.
            try:
                first = params["first_result"]
                item = collatz_items(1, first["range"])
                out["first_result"] = []
                for rep in range(first["reps"]):
                    out["first_result"] += first_result_rep(playwright, rep, item, scratch, out["page_errors"])
            except Exception as error:
                log(f"browser first result: FAILED — {error!r}")
                errors.append(f"first result: {error!r}")
            try:
                out["throughput"] = _throughput(playwright, params["throughput"], scratch, out["page_errors"])
            except Exception as error:
                log(f"browser throughput: FAILED — {error!r}")
                errors.append(f"throughput: {error!r}")
    except Exception as error:  # Playwright itself could not start
        log(f"browser: FAILED — {error!r}")
        errors.append(repr(error))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if errors:
        out["error"] = "; ".join(errors)
    out["summary"] = _summarise(out)
    return out


def _chromium_version() -> str | None:
    try:
        return subprocess.run([chromium_path() or "chromium", "--version"], capture_output=True, text=True,
                              timeout=20).stdout.strip().split(" built")[0] or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def _throughput(playwright: Any, params: dict[str, Any], scratch: Path,
                page_errors: list[str]) -> list[dict[str, Any]]:
    data = collatz_items(params["count"], params["range"])
    kinds = ["pyodide", "local", "native"]
    browser = Browser(playwright, scratch / "profile-throughput", page_errors)
    runs: list[dict[str, Any]] = []
    try:
        browser.start()
        for rep in range(params["reps"]):
            order = kinds[rep % 3:] + kinds[:rep % 3]
            for kind in order:
                result = throughput_one(kind, data, params["count"], browser)
                result["rep"] = rep
                runs.append(result)
                log(f"browser throughput rep {rep} {kind}: {result['seconds']:.2f} s, "
                    f"{result['items_per_s']:.2f} items/s")
    finally:
        browser.close()
    reference = next((r["output"] for r in runs if r["kind"] == "local"), None)
    for result in runs:
        output = result.pop("output")
        result["same_as_local"] = output == reference and output.count(b"\n") == params["count"]
    return runs


def _summarise(out: dict[str, Any]) -> dict[str, Any]:
    s: dict[str, Any] = {}
    for phase in PHASES:
        runs = [r for r in out.get("first_result", []) if r["phase"] == phase]
        if runs:
            s[phase] = {"seconds": summary(r["seconds"] for r in runs),
                        "worker_ready_s": summary(r["worker_ready_ms"] / 1000 for r in runs
                                                  if r["worker_ready_ms"] is not None),
                        "workers_ready_s": summary(r["workers_ready_ms"] / 1000 for r in runs),
                        "restored": summary(sum(r["restored"]) for r in runs),
                        "workers": runs[0]["workers"],
                        "pyodide_load_s": summary(r["worker_steps_ms"]["pyodide"] / 1000 for r in runs
                                                  if (r["worker_steps_ms"] or {}).get("pyodide") is not None),
                        "revalidated": summary(r["responses"]["revalidated"] for r in runs),
                        "requests": summary(r["responses"]["requests"] for r in runs),
                        "mib": summary(r["responses"]["bytes"] / 2**20 for r in runs)}
    runs = out.get("throughput", [])
    if runs:
        t: dict[str, Any] = {}
        for kind in ("pyodide", "local", "native"):
            mine = [r for r in runs if r["kind"] == kind]
            t[kind] = {"items_per_s": summary(r["items_per_s"] for r in mine),
                       "seconds": summary(r["seconds"] for r in mine),
                       "same_as_local": all(r["same_as_local"] for r in mine)}
        pyodide = t["pyodide"]["items_per_s"]["median"]
        t["pyodide/local"] = ratio(pyodide, t["local"]["items_per_s"]["median"])
        t["pyodide/native"] = ratio(pyodide, t["native"]["items_per_s"]["median"])
        # Paired within a repetition (same machine load): Pyodide ÷ CPython per rep.
        for peer in ("local", "native"):
            pairs = []
            for rep in sorted({r["rep"] for r in runs}):
                a = [r["items_per_s"] for r in runs if r["rep"] == rep and r["kind"] == "pyodide"]
                b = [r["items_per_s"] for r in runs if r["rep"] == rep and r["kind"] == peer]
                if a and b:
                    pairs.append(a[0] / b[0])
            t[f"pyodide/{peer} paired"] = summary(pairs)
        s["throughput"] = t
    return s


def _spread(st: dict[str, Any], digits: int) -> str:
    """median (min–max) of a summary."""
    if not st or st.get("median") is None:
        return "–"
    if st["n"] == 1 or fmt(st["min"], digits) == fmt(st["max"], digits):
        return fmt(st["median"], digits)
    return f"{fmt(st['median'], digits)} ({fmt(st['min'], digits)}–{fmt(st['max'], digits)})"


def _size(mib: float | None) -> str:
    if mib is None:
        return "–"
    return f"{mib:.1f} MiB" if mib >= 0.1 else f"{mib * 1024:.1f} KiB"


def markdown(result: dict[str, Any]) -> str:
    if result.get("skipped"):
        return f"SKIPPED: {result['skipped']}."
    p = result["params"]
    s = result.get("summary", {})
    parts = []
    if result.get("error"):
        parts += [f"FAILED: {result['error']}", ""]
    if result.get("page_errors"):
        parts += [f"Uncaught errors on the page: {result['page_errors'][:3]}", ""]
    f, t = p["first_result"], p["throughput"]
    parts.append(f"{result.get('chromium') or 'Chromium'} (headless), Pyodide {result.get('pyodide')}, one worker "
                 f"per tab. Median (min–max) of {f['reps']} repetition(s) for the first result, "
                 f"{t['reps']} alternated for throughput.")
    rows = []
    for phase in PHASES:
        if phase in s:
            st = s[phase]
            rows.append([PHASE_NAMES[phase], _spread(st["seconds"], 2), _spread(st["pyodide_load_s"], 2),
                         _spread(st["workers_ready_s"], 2),
                         f"{_spread(st['restored'], 0)} of {st['workers']}", _size(st["mib"]["median"]),
                         f"{_spread(st['revalidated'], 0)} of {_spread(st['requests'], 0)}"])
    if rows:
        parts += ["", f"First result: one item (a range of {f['range']} integers) waiting; `page.goto` → the root "
                      "prints the result. All workers ready: on the page's clock, from its navigation.", "",
                  table(["tab", "first result s", "of which loadPyodide in the first worker s",
                         "all workers ready s", "workers restored from a snapshot", "transferred (median)",
                         "requests revalidated (304)"], rows)]
    th = s.get("throughput")
    if th:
        names = {"pyodide": "Pyodide (1 tab × 1 worker)", "local": "CPython `pando --local`",
                 "native": "CPython, 1 native volunteer × 1 worker"}
        rows = []
        for kind in ("pyodide", "local", "native"):
            ratio_cell = "–"
            if kind != "pyodide":
                paired = th[f"pyodide/{kind} paired"]
                ratio_cell = fmt(th[f"pyodide/{kind}"], 2) + (
                    f" (per rep {fmt(paired['min'], 2)}–{fmt(paired['max'], 2)})" if paired["n"] > 1 else "")
            rows.append([names[kind], _spread(th[kind]["items_per_s"], 2), _spread(th[kind]["seconds"], 2),
                         ratio_cell, "yes" if th[kind]["same_as_local"] else "NO"])
        parts += ["", f"Throughput: examples/collatz.py, {t['count']} ranges of {t['range']} integers from "
                      "3179389980591125407167; first item written → last line read.", "",
                  table(["worker", "items/s per worker", "seconds", "Pyodide ÷ this (ratio of medians)",
                         "same output as --local"],
                        rows)]
    return "\n".join(parts)


def main() -> None:
    import run as runner

    size = sys.argv[1] if len(sys.argv) > 1 else "quick"
    sys.argv = [sys.argv[0], size, "--only", "browser"]
    runner.main()


if __name__ == "__main__":
    main()
