"""Helpers for the real-browser tests: a ``pando`` root in a child process and Chromium tabs.

Chromium is Debian's ``/usr/bin/chromium`` driven by Playwright (Playwright's
own browser download cannot work here). Every process a test starts is
stopped when the test ends, whatever happened.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
import warnings
from typing import IO, TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence
from urllib.parse import quote

import pytest

from conftest import local_run

if TYPE_CHECKING:  # Playwright is imported only where Chromium can run
    from playwright.sync_api import Browser, BrowserContext, Page

    from netns import Host

REPO = Path(__file__).resolve().parent.parent
WEB = REPO / "pando" / "web"
PYODIDE = WEB / "node_modules" / "pyodide"

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# The root's URL carries the run's join key in its fragment: http://HOST:PORT/#key=K;
_SERVING = re.compile(r"Serving volunteer code at http://[^\s:/]+:(\d+)/#key=([A-Za-z0-9_-]+);")


def chromium_path() -> str | None:
    """Debian's Chromium, or another one on PATH; None if there is none."""
    for candidate in (os.environ.get("PANDO_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def skip_without_browser(what: str) -> None:
    """Skip the calling test module, loudly, when the browser tests cannot run here."""
    missing = missing_requirements()
    if missing:
        message = f"{what} SKIPPED, the browser side is NOT tested on this machine: {missing}"
        print(f"\n{'!' * 78}\n{message}\n{'!' * 78}", file=sys.stderr)
        warnings.warn(message, stacklevel=2)
        pytest.skip(message, allow_module_level=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, for one test module."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class Tabs:
    """Tabs in browser contexts; page errors (uncaught exceptions) fail the test."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.contexts: list[BrowserContext] = []
        self.page_errors: list[str] = []

    def open(self, url: str | None = None, *, new_profile: bool = False, **context_options: Any) -> Page:
        """A tab: in a fresh context (its own storage) when asked, with context options, or first;
        else beside the last tab."""
        if new_profile or context_options or not self.contexts:
            self.contexts.append(self.browser.new_context(**context_options))
        page = self.contexts[-1].new_page()
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        if url is not None:
            page.goto(url)
        return page


@pytest.fixture
def tabs(browser: Browser) -> Iterator[Tabs]:
    tabs = Tabs(browser)
    try:
        yield tabs
    finally:
        for context in tabs.contexts:
            context.close()
    assert not tabs.page_errors, f"uncaught errors on the page: {tabs.page_errors}"


class Chromium:
    """Headless Chromium in one host (test/netns.py); its tabs' uncaught errors fail the test."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.page_errors: list[str] = []

    def open(self, url: str | None = None) -> Page:
        """A tab in a context of its own."""
        page = self.browser.new_context().new_page()
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        if url is not None:
            page.goto(url)
        return page


@pytest.fixture
def chromium_in(tmp_path: Path) -> Iterator[Callable[[Host], Chromium]]:
    """``chromium_in(host)``: Chromium running in that host, closed at the end."""
    from playwright.sync_api import sync_playwright

    browsers: list[Chromium] = []
    with sync_playwright() as playwright:

        def launch(host: Host) -> Chromium:
            directory = tmp_path / f"chromium-{host.name}"
            directory.mkdir(exist_ok=True)
            browser = Chromium(host.launch_chromium(playwright, directory))
            browsers.append(browser)
            return browser

        try:
            yield launch
        finally:
            for browser in browsers:
                browser.browser.close()
    for browser in browsers:
        assert not browser.page_errors, f"uncaught errors on the page: {browser.page_errors}"


def missing_requirements() -> str | None:
    """Why Chromium cannot run Pando's page here (tests, benchmarks), or None if it can."""
    if chromium_path() is None:
        return "Chromium is not installed (no /usr/bin/chromium): `apt-get install -y chromium` (`make test` does it)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright's Python package is missing (pip install playwright)"
    if not (PYODIDE / "pyodide.mjs").is_file():
        return "Pyodide is not installed in pando/web/node_modules (run `npm ci` in pando/web, or `make`)"
    return None


def pando_command() -> list[str]:
    """How to run the ``pando`` CLI: the venv's console script, else the checkout's ``bin/pando``."""
    script = Path(sys.executable).parent / "pando"
    if script.is_file():
        return [str(script)]
    return [sys.executable, str(REPO / "bin" / "pando")]


def volunteer_command() -> list[str]:
    script = Path(sys.executable).parent / "pando-volunteer"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "pando.volunteer"]


def clean_env(home: Path) -> dict[str, str]:
    """The environment of a child: its own HOME (no user config), no proxies."""
    env = {key: value for key, value in os.environ.items() if "proxy" not in key.lower()}
    env["HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Lines:
    """Collects a child's stream line by line from a thread, so tests can wait for text."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            with self._changed:
                self._lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._lines.append("")  # wake waiters at EOF
            self._changed.notify_all()

    @property
    def text(self) -> str:
        with self._changed:
            return "\n".join(self._lines)

    def wait_for(self, predicate: Callable[[str], object], timeout: float, what: str) -> object:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = predicate("\n".join(self._lines))
                if found:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {what}; output so far:\n" + "\n".join(self._lines))
                self._changed.wait(left)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


def stop_process(process: subprocess.Popen[bytes], grace: float = 5) -> None:
    """Interrupt a child, then terminate, then kill it; always reap it."""
    if process.poll() is None:
        try:
            process.send_signal(signal.SIGINT)
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass


class Root:
    """A ``pando MODULE --stdin --start-idle --port PORT`` child (0: a free port); the test writes the items.

    A given port lets a test bring a root back on the same port. ``prefix`` runs
    it through another command (``ip netns exec NS``: in another host, whose
    ``address`` the page URLs then use). ``command`` is another pando to run
    (an installed one), from ``tmp`` like the default.
    """

    def __init__(self, module: Path, tmp: Path, *options: str, port: int = 0, prefix: Sequence[str] = (),
                 address: str = "127.0.0.1", command: Sequence[str] = ()) -> None:
        self.out_path = tmp / f"{module.stem}-{time.monotonic_ns()}.out"
        self._out = open(self.out_path, "wb")
        self.process = subprocess.Popen(
            [*prefix, *(command or pando_command()), str(module), "--stdin", "--start-idle", "--port", str(port),
             *options],
            stdin=subprocess.PIPE,
            stdout=self._out,
            stderr=subprocess.PIPE,
            env=clean_env(tmp),
            cwd=tmp,
        )
        self.stderr = Lines(self.process.stderr)
        match = self.stderr.wait_for(_SERVING.search, 30, "the root to print its URL")
        self.port = int(match.group(1))
        self.key = match.group(2)
        self.url = f"http://{address}:{self.port}/"  # bare: a page opened here lacks the key
        self.join_url = f"{self.url}#key={self.key};"  # as the root prints it, for tabs and native volunteers
        self.monitor_url = f"{self.url}monitor#key={self.key};"

    def page_url(self, device: str, workers: int) -> str:
        return f"{self.join_url}device={quote(device, safe='')};workers={workers};"

    def feed(self, items: Iterable[str], close: bool = True) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("".join(f"{item}\n" for item in items).encode())
        self.process.stdin.flush()
        if close:
            self.process.stdin.close()

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the root did not finish in {timeout} s; its stderr:\n{self.stderr.text}") from None

    @property
    def output(self) -> str:
        self._out.flush()
        return self.out_path.read_text(encoding="utf-8")

    def close(self) -> None:
        stop_process(self.process)
        self.stderr.join(5)
        self._out.close()


class Volunteer:
    """A native ``pando-volunteer`` child; ``url`` is the root's as printed, key included; ``options``
    more of its command line (``--stay``)."""

    def __init__(self, url: str, tmp: Path, workers: int = 1, name: str = "native", options: Sequence[str] = ()) -> None:
        self.process = subprocess.Popen(
            [*volunteer_command(), url, "--workers", str(workers), "--name", name, *options],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=clean_env(tmp),
            cwd=tmp,
        )
        self.stderr = Lines(self.process.stderr)

    def close(self) -> None:
        stop_process(self.process)
        self.stderr.join(5)


def local_output(module: Path, items: list[str], tmp: Path, status: int = 0) -> str:
    """What ``pando MODULE --local`` prints for these items (see conftest.local_run)."""
    data = "".join(f"{item}\n" for item in items).encode()
    return local_run(module, data, clean_env(tmp), status, cwd=tmp).decode()


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@pytest.fixture
def start_root(tmp_path: Path) -> Iterator[Callable[..., Root]]:
    """Start roots (on a free port, or on ``port``; or another ``command``); all are stopped at the end of the test."""
    roots: list[Root] = []

    def start(module: Path, *options: str, port: int = 0, command: Sequence[str] = ()) -> Root:
        root = Root(module, tmp_path, *options, port=port, command=command)
        roots.append(root)
        return root

    try:
        yield start
    finally:
        for root in roots:
            root.close()


@pytest.fixture
def start_volunteer(tmp_path: Path) -> Iterator[Callable[..., Volunteer]]:
    """Start native volunteers; all are stopped at the end of the test."""
    volunteers: list[Volunteer] = []

    def start(url: str, name: str = "native", workers: int = 1, options: Sequence[str] = ()) -> Volunteer:
        volunteer = Volunteer(url, tmp_path, workers, name=name, options=options)
        volunteers.append(volunteer)
        return volunteer

    try:
        yield start
    finally:
        for volunteer in volunteers:
            volunteer.close()


def write_module(tmp_path: Path, name: str, source: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return path
