"""Shared fixtures: real pando and pando-volunteer processes on 127.0.0.1, always cleaned up."""
from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any, Sequence

import pytest

# The real-browser fixtures (browser, tabs, start_root, start_volunteer); separate hosts (hosts);
# Pando built, installed and copied without Pyodide (dist, installed, without_pyodide).
pytest_plugins = ["browser_helpers", "netns", "packaged"]

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PANDO = str(BIN / "pando")
VOLUNTEER = str(BIN / "pando-volunteer")
EXAMPLES = REPO / "examples"
_URL = re.compile(r"Serving volunteer code at http://localhost:(\d+)/#key=([\w-]+);")

# A shell starting pytest in the background (`make test &`, some CI runners) hands it SIGINT
# ignored, and every process it starts would inherit that: the Ctrl-C tests would test nothing.
# A handler here becomes the default disposition in the children (exec resets handlers).
signal.signal(signal.SIGINT, signal.default_int_handler)

#: The join key of every test's user (saved in its HOME before pando runs).
KEY = "test-key-0123456789abcdef"

#: Slow test modules take their delay per item from this variable when it is set: the reference
#: runs (--local, one item after another) set it to 0, so that they cost no time.
DELAY = "PANDO_TEST_DELAY"


def slow_module(seconds: float, result: str = "x * x", fails_on: int | None = None, sleep: bool = False) -> str:
    """A module's source: ``result`` after ``seconds`` (or $PANDO_TEST_DELAY seconds when that is set),
    busy (the same in CPython and Pyodide) or, with ``sleep``, asleep (native volunteers sharing a few
    cores); item ``fails_on`` raises ValueError."""
    wait = ["time.sleep(delay)"] if sleep else ["until = time.monotonic() + delay",
                                                "while time.monotonic() < until:", "    pass"]
    fails = [] if fails_on is None else [f"if x == {fails_on}:", f'    raise ValueError(f"no square for {{x}} here")']
    body = [f'delay = float(os.environ.get("{DELAY}", "{seconds}"))', *wait, *fails, f"return {result}"]
    head = ["import os", "import time", "import pando", "", "@pando.function", "def slow_square(x):"]
    return "\n".join([*head, *(f"    {line}" for line in body)]) + "\n"


def local_run(module: str | Path, data: bytes, env: dict[str, str], status: int = 0, cwd: Path | None = None) -> bytes:
    """What ``pando MODULE --local`` prints for these input lines, with no delay per item (exiting
    with ``status``): the reference output."""
    done = subprocess.run([PANDO, str(module), "--stdin", "--local"], input=data, capture_output=True,
                          env={**env, DELAY: "0"}, cwd=cwd, timeout=120, check=False)
    assert done.returncode == status, done.stderr.decode()
    return done.stdout


#: A module with state: each worker (process, or Pyodide Web Worker) counts the items it computed. A
#: fresh worker per job counts from 1 again; state leaking from the last job would go on counting.
COUNTER = """
import pando

computed = 0

@pando.function
def count(x):
    global computed
    computed += 1
    return f"{x}:{computed}"
"""

#: Item 3 fails, with HTML in its error (shown as text where a page shows it).
FAILING = """
import pando

@pando.function
def check(x):
    if x == 3:
        raise ValueError("no <b>3</b> & no <img src=x onerror=window.pwned=1>")
    return x
"""


class KeptOutput(io.BytesIO):
    """The results' stream in memory: the reorder thread closes it when it is done, and what was
    written stays readable (``getvalue``) after that."""

    ended = False

    def close(self) -> None:
        self.ended = True


class RootProcess:
    """A running ``pando``: its port (from stderr), its output, its exit."""

    def __init__(self, popen: subprocess.Popen[bytes], stdout_path: Path) -> None:
        self.popen = popen
        self._stdout_path = stdout_path
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    def _read_stderr(self) -> None:
        assert self.popen.stderr is not None
        for raw in self.popen.stderr:
            with self._changed:
                self._lines.append(raw.decode("utf-8", "replace"))
                self._changed.notify_all()

    def wait_for_stderr(self, pattern: str, timeout: float = 20) -> re.Match[str]:
        """Wait until a stderr line matches ``pattern``; fail the test otherwise."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self._lines:
                    if match := regex.search(line):
                        return match
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.popen.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"no stderr line matched {pattern!r}; stderr was:\n{self.err}")
                self._changed.wait(min(remaining, 0.2))

    @property
    def port(self) -> int:
        return int(self.wait_for_stderr(_URL.pattern).group(1))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait(self, timeout: float = 60) -> int:
        code = self.popen.wait(timeout)
        self._reader.join(5)
        return code

    @property
    def err(self) -> str:
        with self._changed:
            return "".join(self._lines)

    @property
    def out(self) -> bytes:
        return self._stdout_path.read_bytes()


class Processes:
    """Starts processes for one test and kills whatever is left at its end."""

    #: Where the installed commands are (pando, pando-volunteer, pando-server).
    bin = BIN

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.home = tmp / "home"
        (self.home / ".pando").mkdir(parents=True)
        (self.home / ".pando" / "join-key").write_text(KEY + "\n")
        self._started: list[subprocess.Popen[bytes]] = []
        self._count = 0

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ, HOME=str(self.home), PYTHONUNBUFFERED="1")
        env.update(extra)
        return env

    def popen(self, args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start a process in a session of its own, killed with its children at the end."""
        kwargs.setdefault("env", self.env())
        popen = subprocess.Popen(args, start_new_session=True, **kwargs)
        self._started.append(popen)
        return popen

    def pando(
        self, *args: str, stdin: bytes | IO[bytes] | None = None, port: int | None = 0, nofile: int | None = None,
        command: Sequence[str] = (PANDO,), cwd: Path | None = None, **env: str,
    ) -> RootProcess:
        """Start ``pando ARGS`` (on a free port unless ``port`` is None); ``stdin`` bytes are fed whole.

        ``nofile`` caps its open files (soft and hard limit alike, so the root cannot raise it).
        ``command`` runs another pando (``python -m pando`` from ``cwd``, an installed one).
        """
        self._count += 1
        stdout_path = self.tmp / f"pando-{self._count}.out"
        options = ["--port", str(port)] if port is not None and "--local" not in args else []
        source = subprocess.PIPE if isinstance(stdin, bytes) else (stdin or subprocess.DEVNULL)
        limit = ["prlimit", f"--nofile={nofile}:{nofile}"] if nofile is not None else []
        with stdout_path.open("wb") as stdout:
            popen = self.popen(
                [*limit, *command, *options, *args], stdin=source, stdout=stdout, stderr=subprocess.PIPE,
                env=self.env(**env), cwd=cwd,
            )
        root = RootProcess(popen, stdout_path)
        if isinstance(stdin, bytes):
            threading.Thread(target=_feed, args=(popen, stdin), daemon=True).start()
        return root

    def volunteer(self, port: int, *args: str, **env: str) -> subprocess.Popen[bytes]:
        """Start ``pando-volunteer`` against a root on 127.0.0.1, with extra environment variables."""
        return self.popen(
            [VOLUNTEER, join_url(port), *args],
            env=self.env(**env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def run(self, args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        """Run a command to its end (with a timeout), capturing its output; stdin is empty unless given."""
        kwargs.setdefault("env", self.env())
        if "input" not in kwargs:
            kwargs.setdefault("stdin", subprocess.DEVNULL)  # never the test runner's own stdin
        kwargs.setdefault("timeout", 60)
        return subprocess.run(args, capture_output=True, **kwargs)

    def local(self, module: str, items: bytes) -> bytes:
        """What ``pando MODULE --local`` prints for these items: the reference (see :func:`local_run`)."""
        return local_run(module, items, self.env())

    def cleanup(self) -> None:
        for popen in self._started:
            if popen.poll() is None:
                try:
                    os.killpg(popen.pid, signal.SIGCONT)
                    os.killpg(popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            popen.wait()
            for stream in (popen.stdin, popen.stdout, popen.stderr):
                if stream is not None:
                    stream.close()


def _feed(popen: subprocess.Popen[bytes], data: bytes) -> None:
    assert popen.stdin is not None
    try:
        popen.stdin.write(data)
        popen.stdin.close()
    except (BrokenPipeError, ValueError):
        pass  # pando stopped reading (it failed, or was told to stop)


@pytest.fixture
def procs(tmp_path: Path) -> Any:
    processes = Processes(tmp_path)
    yield processes
    processes.cleanup()


def join_url(port: int, key: str = KEY) -> str:
    """A root's volunteer URL as pando prints it, with the join key."""
    return f"http://127.0.0.1:{port}/#key={key};"


def lines(*values: object) -> bytes:
    """Input bytes: one value per line."""
    return "".join(f"{value}\n" for value in values).encode()


def squares(values: Any) -> bytes:
    return "".join(f"{value * value}\n" for value in values).encode()
