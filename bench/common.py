"""Shared helpers of the benchmarks: processes, ports, timing, statistics, machine facts.

Every process a benchmark starts goes through :class:`Procs`: it runs in a
session of its own (so a volunteer and its worker processes form one process
group) and is killed, with its group, when the benchmark ends, whatever way it
ends. Everything listens on 127.0.0.1 ports 19000-19999 only.
"""
from __future__ import annotations

import atexit
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any, Callable, Iterable

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
BIN = Path(sys.executable).parent
PANDO = str(BIN / "pando")
VOLUNTEER = str(BIN / "pando-volunteer")
#: The join key of the benchmarks' roots (saved in their HOME).
KEY = "bench-join-key-0123456789"
PYTHON = sys.executable
EXAMPLES = REPO / "examples"
MODULES = BENCH / "modules"
RESULTS = BENCH / "results"
PORT_RANGE = (19000, 19999)

_JOINED = re.compile(r"joined as ([0-9a-f]+)")


def log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# -- ports -----------------------------------------------------------------

_next_port = [PORT_RANGE[0] + (os.getpid() * 7) % 500]


def free_port() -> int:
    """A port in 19000-19999 that nothing listens on right now (bound and released)."""
    for _ in range(PORT_RANGE[1] - PORT_RANGE[0]):
        port = _next_port[0]
        _next_port[0] = port + 1 if port < PORT_RANGE[1] else PORT_RANGE[0]
        with socket.socket() as probe:
            try:
                probe.bind(("", port))  # pando listens on every interface: check the same way
            except OSError:
                continue
        return port
    raise RuntimeError("no free port in 19000-19999")


# -- processes -------------------------------------------------------------


class Procs:
    """Starts processes in sessions of their own; :meth:`cleanup` kills what is left, with its children."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="pando-bench-"))
        self.home = self.tmp / "home"  # no user config.json can change pando's defaults
        (self.home / ".pando").mkdir(parents=True)
        (self.home / ".pando" / "join-key").write_text(KEY + "\n")
        self._started: list[subprocess.Popen[bytes]] = []
        atexit.register(self.cleanup)

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ, HOME=str(self.home), PYTHONUNBUFFERED="1")
        env.update(extra)
        return env

    def popen(self, args: list[str], env: dict[str, str] | None = None, **kwargs: Any) -> subprocess.Popen[bytes]:
        popen = subprocess.Popen(args, start_new_session=True, env=env or self.env(), **kwargs)
        self._started.append(popen)
        return popen

    def pando(self, module: str | Path, *args: str, port: int, stdin: Any = subprocess.PIPE,
              stdout: Any = subprocess.PIPE, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        return self.popen([PANDO, str(module), "--port", str(port), *args], env=env,
                          stdin=stdin, stdout=stdout, stderr=subprocess.PIPE)

    def volunteer(self, port: int, workers: int = 1, name: str = "bench",
                  env: dict[str, str] | None = None) -> "Volunteer":
        popen = self.popen([VOLUNTEER, f"http://127.0.0.1:{port}/#key={KEY};", "--workers", str(workers), "--name", name],
                           env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return Volunteer(popen)

    def cleanup(self) -> None:
        for popen in self._started:
            if popen.poll() is None:
                for sig in (signal.SIGCONT, signal.SIGKILL):
                    try:
                        os.killpg(popen.pid, sig)
                    except (ProcessLookupError, PermissionError):
                        pass
            try:
                popen.wait(10)
            except subprocess.TimeoutExpired:
                pass
            for stream in (popen.stdin, popen.stdout, popen.stderr):
                if stream is not None:
                    try:
                        stream.close()
                    except OSError:
                        pass
        self._started.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)


class Volunteer:
    """A ``pando-volunteer`` process; a thread watches its stderr for the 'joined' line."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen
        self.joined = threading.Event()
        self.joined_at: float | None = None
        self.session_ids: list[str] = []
        self.err: list[str] = []
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        assert self.popen.stderr is not None
        for raw in self.popen.stderr:
            line = raw.decode("utf-8", "replace")
            self.err.append(line)
            if match := _JOINED.search(line):
                self.session_ids.append(match.group(1))
                self.joined_at = time.monotonic()
                self.joined.set()

    def workers_ready(self, count: int) -> bool:
        """Whether the volunteer has ``count`` worker processes (children other than the resource tracker)."""
        return len(worker_pids(self.popen.pid)) >= count


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(part) for part in text.split()]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def worker_pids(pid: int) -> list[int]:
    """A native volunteer's worker processes (its spawned children, not the resource tracker)."""
    return [child for child in children(pid) if "spawn_main" in cmdline(child)]


def wait_volunteers(volunteers: list[Volunteer], workers: int, timeout: float = 60, settle: float = 0.5) -> None:
    """Wait until every volunteer joined and has its worker processes, then a moment for them to load."""
    deadline = time.monotonic() + timeout
    for volunteer in volunteers:
        if not volunteer.joined.wait(max(0.0, deadline - time.monotonic())):
            raise RuntimeError("a volunteer did not join: " + "".join(volunteer.err[-5:]))
    while not all(v.workers_ready(workers) for v in volunteers):
        if time.monotonic() > deadline:
            raise RuntimeError("volunteer workers did not start")
        time.sleep(0.05)
    time.sleep(settle)  # spawned workers import pando and load the module before they answer "ready"


class Lines(list):  # type: ignore[type-arg]
    """Lines of text, with ``times``: the time.monotonic() each one arrived."""

    times: list[float]


def stderr_collector(popen: subprocess.Popen[bytes]) -> Lines:
    """Collect a process's stderr lines from a thread; returns the (growing) list."""
    lines = Lines()
    lines.times = []

    def run() -> None:
        assert popen.stderr is not None
        for raw in popen.stderr:
            lines.times.append(time.monotonic())
            lines.append(raw.decode("utf-8", "replace"))

    threading.Thread(target=run, daemon=True).start()
    return lines


def json_statuses(lines: list[str]) -> list[dict[str, Any]]:
    """The root's JSON status objects (``PANDO_DEBUG=monitoring``) among its stderr lines, oldest first.

    Pando's own messages never start with ``{``; a line cut short (the root was
    killed mid-write) is skipped.
    """
    out = []
    for line in list(lines):  # a copy: the collector thread may be appending
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, step: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(step)


def wait_port(port: int, timeout: float = 20) -> None:
    def is_open() -> bool:
        with socket.socket() as probe:
            probe.settimeout(0.2)
            return probe.connect_ex(("127.0.0.1", port)) == 0

    wait_for(is_open, timeout, f"port {port}", 0.05)


class LineClock:
    """Reads a stream of lines in a thread; counts them and keeps (monotonic time, count) samples."""

    def __init__(self, stream: IO[bytes], keep: bool = False, sample_every: int = 1) -> None:
        self._stream = stream
        self.keep = keep
        self.lines: list[bytes] = []
        self.count = 0
        self.first: float | None = None
        self.last: float | None = None
        self.samples: list[tuple[float, int]] = []
        self._sample_every = sample_every
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        read = self._stream.read1 if hasattr(self._stream, "read1") else self._stream.read
        pending = b""
        while chunk := read(1 << 16):
            now = time.monotonic()
            data = pending + chunk
            cut = data.rfind(b"\n") + 1
            complete, pending = data[:cut], data[cut:]
            got = complete.count(b"\n")
            if not got:
                continue
            if self.first is None:
                self.first = now
            self.count += got
            self.last = now
            if self.keep:
                self.lines.append(complete)
            if self._sample_every <= 1 or not self.samples or self.count - self.samples[-1][1] >= self._sample_every:
                self.samples.append((now, self.count))
        if pending:
            self.count += 1
            self.last = time.monotonic()
            if self.keep:
                self.lines.append(pending + b"\n")

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)

    def text(self) -> bytes:
        return b"".join(self.lines)


def wait_rusage(popen: subprocess.Popen[bytes], timeout: float) -> float | None:
    """Wait for a child and return its user+system CPU seconds (from wait4), or None on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid, status, usage = os.wait4(popen.pid, os.WNOHANG)
        if pid:
            popen.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_utime + usage.ru_stime
        time.sleep(0.01)
    return None


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    return (total - idle) / tick, total / tick


def listen_overflows() -> int | None:
    """The kernel's TcpExt ListenOverflows counter (SYNs dropped because an accept queue was full)."""
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return None
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            table_ = dict(zip(names.split()[1:], values.split()[1:]))
            return int(table_.get("ListenOverflows", 0))
    return None


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB; (0, 0) when it is gone."""
    rss = hwm = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- statistics ------------------------------------------------------------


def summary(values: Iterable[float]) -> dict[str, Any]:
    """Median and spread of repeated measurements."""
    data = sorted(v for v in values if v is not None)
    if not data:
        return {"n": 0, "median": None, "min": None, "max": None, "spread": None, "values": []}
    median = statistics.median(data)
    out: dict[str, Any] = {"n": len(data), "median": median, "min": data[0], "max": data[-1], "values": data}
    out["spread"] = (data[-1] - data[0]) / median if median else None  # (max - min) / median
    if len(data) >= 4:
        q = statistics.quantiles(data, n=4)
        out["iqr"] = q[2] - q[0]
    return out


def percentile(data: list[float], fraction: float) -> float | None:
    if not data:
        return None
    data = sorted(data)
    index = min(len(data) - 1, max(0, round(fraction * (len(data) - 1))))
    return data[index]


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


# -- machine facts and results files ---------------------------------------


def _version(package: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(package)
    except Exception:
        return None


def _command_version(args: list[str]) -> str | None:
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.splitlines()[0].strip() if out else None


def machine_info() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    try:
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    git = {}
    try:
        git["commit"] = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                                       text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "pando"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        git["pando_dirty"] = bool(dirty)
    except (OSError, subprocess.TimeoutExpired):
        pass
    return {
        "hostname": socket.gethostname(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_at_start": os.getloadavg(),
        "git": git,
        "versions": {
            "pando": _version("pando-computing"),
            "websockets": _version("websockets"),
            "dask": _version("dask"),
            "distributed": _version("distributed"),
            "matplotlib": _version("matplotlib"),
            "py-spy": _version("py-spy"),
            "pyinstrument": _version("pyinstrument"),
            "gnu-parallel": _command_version(["parallel", "--version"]),
        },
    }


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")


def fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if digits == 0:
            return f"{value:,.0f}"
        return f"{value:,.{digits}f}"
    return str(value)


def table(header: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(out)
