"""Separate "hosts" for tests: Linux network namespaces joined by veth pairs on a bridge.

The ``hosts`` fixture (function scoped: each test gets fresh namespaces, which
take milliseconds to make) yields a :class:`Hosts`; ``hosts.add("a")`` makes a
namespace ``pando-<pid>-<n>-a`` whose ``eth0`` is plugged into a bridge living
in a namespace of its own, ``pando-<pid>-<n>-sw``, and numbered
``10.<200 + pid % 50>.<n % 256>.<i>/24``. Hosts reach each other and nothing
else: there is no default route (connecting elsewhere fails at once with
ENETUNREACH, name lookups included), and nothing is created in the root
namespace (each veth pair is made inside the switch's namespace with one end
moved straight into the host's), so the machine's own interfaces and routes
are never touched. Two ``Hosts`` alive in one process never share a subnet;
two processes would only if their pids were equal modulo 50 and their
counters modulo 256, and even then nothing leaks: every bridge is an L2
domain of its own.

WebRTC in Chromium: a page without camera or microphone permission gathers
only the address of the interface that routes to 8.8.8.8 (its "default local
address"), so without a route there it has no candidate at all. Each host
therefore gets an on-link route to 8.8.8.8/32 via ``eth0`` (``add(name,
webrtc_route=False)`` leaves it out); packets to 8.8.8.8 go nowhere (no ARP
answer: EHOSTUNREACH after ~3 s; name lookups are slow too if the machine's
nameserver is 8.8.8.8). No Chromium flag is needed: its ``.local`` (mDNS)
candidates resolve across the bridge, and a peer that cannot resolve them
learns the address from Chromium's connectivity checks.

At the end of the test every process still running in the namespaces (those
started with ``Host.popen`` get SIGTERM first, then SIGKILL) is killed and the
namespaces are deleted, whether the test passed or not. Namespaces left by an
earlier run that was killed (``pando-<pid>-...`` with a dead pid) are reaped
before the first ``Hosts`` of a process is made.

Without root, ``ip`` or the kernel's support, the tests that use ``hosts``
are skipped loudly (see :func:`skip_without_netns`).
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import warnings
from itertools import count
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import pytest

from browser_helpers import CHROMIUM_ARGS, chromium_path, clean_env

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Playwright

PREFIX = "pando-"
#: How long processes get between SIGTERM and SIGKILL at teardown.
GRACE = 2.0
#: Where Chromium's WebRTC looks for its default local address (webrtc's kPublicIPv4Host).
WEBRTC_PROBE = "8.8.8.8"
_NAME = re.compile(r"[a-z][a-z0-9]{0,15}")
_OURS = re.compile(rf"{PREFIX}(\d+)-(\d+)-[a-z][a-z0-9]*")
_counter = count(1)  # 0 is the capability probe's
_missing: list[str | None] = []  # the cached answer of missing_netns()
_reaped = False
_told: set[str] = set()  # the skip banners printed already
_made: set[str] = set()  # the namespaces this process made and has not deleted yet


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS``; raise with its stderr when it fails and ``check`` is set."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed ({done.returncode}): {done.stderr.strip()}")
    return done


def list_netns() -> list[str]:
    """The names of the namespaces ``ip netns`` knows (lines may end with ``(id: N)``)."""
    return [line.split()[0] for line in ip("netns", "list").stdout.splitlines() if line.strip()]


def netns_pids(ns: str) -> list[int]:
    """The processes living in a namespace (none if it is gone)."""
    return [int(pid) for pid in ip("netns", "pids", ns, check=False).stdout.split()]


def missing_netns() -> str | None:
    """Why namespaces, veth pairs and bridges cannot be made here, or None if they can (probed once)."""
    if not _missing:
        _missing.append(_probe())
    return _missing[0]


def _probe() -> str | None:
    if not sys.platform.startswith("linux"):
        return f"network namespaces are Linux only (this is {sys.platform})"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed (apt-get install -y iproute2)"
    if os.geteuid() != 0:
        return "not root: `ip netns add` needs CAP_SYS_ADMIN and CAP_NET_ADMIN (run the tests as root)"
    ns = f"{PREFIX}{os.getpid()}-0-probe"
    try:
        ip("netns", "add", ns)
        try:
            ip("-n", ns, "link", "add", "br0", "type", "bridge")
            ip("-n", ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
            ip("-n", ns, "link", "set", "v0", "master", "br0")
            ip("netns", "exec", ns, "true")
        finally:
            ip("netns", "del", ns, check=False)
    except (RuntimeError, OSError, subprocess.SubprocessError) as error:
        return f"cannot make network namespaces, veth pairs and bridges here: {error}"
    return None


def skip_without_netns(what: str = "WEBRTC CROSS-HOST TESTS") -> None:
    """Skip the calling test (or module, at its top level), loudly, when namespaces cannot be made."""
    missing = missing_netns()
    if missing:
        message = (f"{what} SKIPPED, nothing across separate hosts (network namespaces) "
                   f"is tested on this machine: {missing}")
        if what not in _told:  # the banner once, the warning and the skip every time
            _told.add(what)
            print(f"\n{'!' * 78}\n{message}\n{'!' * 78}", file=sys.stderr)
        warnings.warn(message, stacklevel=2)
        pytest.skip(message, allow_module_level=True)


def reap_stale() -> None:
    """Delete ``pando-<pid>-...`` namespaces whose creator is dead, killing what still runs in them.

    Ones bearing this process's pid that it did not make are leftovers of an
    earlier process that had the same pid.
    """
    for ns in list_netns():
        match = _OURS.fullmatch(ns)
        if not match or ns in _made:
            continue
        pid = int(match.group(1))
        if pid != os.getpid() and _alive(pid):
            continue
        for stray in netns_pids(ns):
            _signal(stray, signal.SIGKILL)
        ip("netns", "del", ns, check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal(pid: int, sig: int, group: bool = False) -> None:
    try:
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class Host:
    """One namespace on the bridge: ``name``, ``ns`` (its namespace) and ``address`` (its IPv4 address)."""

    def __init__(self, hosts: Hosts, name: str, ns: str, address: str) -> None:
        self.hosts = hosts
        self.name = name
        self.ns = ns
        self.address = address

    def __repr__(self) -> str:
        return f"Host({self.name!r}, ns={self.ns!r}, address={self.address!r})"

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` prefixed to run inside the namespace (``ip netns exec`` execs it: same pid)."""
        return ["ip", "netns", "exec", self.ns, *argv]

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` in the namespace, in a session of its own unless told otherwise.

        The Popen's pid is the command's own; the process (and its group) is
        stopped at teardown if still running.
        """
        kwargs.setdefault("start_new_session", True)
        popen: subprocess.Popen[Any] = subprocess.Popen(self.command(argv), **kwargs)
        self.hosts._started.append((popen, bool(kwargs["start_new_session"])))
        return popen

    def run(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        """Run ``argv`` in the namespace to its end (``subprocess.run``'s keywords; 60 s timeout by default)."""
        kwargs.setdefault("timeout", 60)
        return subprocess.run(self.command(argv), **kwargs)

    def pids(self) -> list[int]:
        """Every process now in this host's namespace, however it was started."""
        return netns_pids(self.ns)

    def chromium_executable(self, directory: Path) -> str:
        """A script in ``directory`` that runs Chromium in this namespace (for Playwright's ``executable_path``).

        Playwright drives Chromium over pipes (fds 3 and 4), which ``ip netns
        exec`` passes on; the script execs, so Playwright's pid is Chromium's.
        """
        browser = chromium_path()
        if browser is None:
            raise RuntimeError("Chromium is not installed (no /usr/bin/chromium)")
        script = Path(directory) / f"chromium-in-{self.ns}"
        script.write_text(f'#!/bin/sh\nexec ip netns exec {shlex.quote(self.ns)} {shlex.quote(browser)} "$@"\n')
        script.chmod(0o755)
        return str(script)

    def launch_chromium(self, playwright: Playwright, directory: Path, args: Sequence[str] = (),
                        **kwargs: Any) -> Browser:
        """Headless Chromium in this namespace with the tests' usual flags (``CHROMIUM_ARGS``) plus ``args``.

        Playwright gives it a fresh profile (``--user-data-dir``); its HOME is
        ``directory``, without proxy variables. The caller closes it (teardown
        kills it otherwise).
        """
        kwargs.setdefault("env", clean_env(Path(directory)))
        return playwright.chromium.launch(
            executable_path=self.chromium_executable(directory), args=[*CHROMIUM_ARGS, *args], **kwargs)


class Hosts:
    """Hosts on one private bridge; ``close()`` (or leaving the ``with``) kills their processes and deletes them."""

    def __init__(self) -> None:
        global _reaped
        if not _reaped:
            reap_stale()
            _reaped = True
        pid, number = os.getpid(), next(_counter)
        self.tag = f"{pid}-{number}"
        self.subnet = f"10.{200 + pid % 50}.{number % 256}"
        self.switch = f"{PREFIX}{self.tag}-sw"
        self.hosts: dict[str, Host] = {}
        self._namespaces: list[str] = []
        self._started: list[tuple[subprocess.Popen[Any], bool]] = []  # and whether it leads its group
        try:
            self._netns_add(self.switch)
            ip("-n", self.switch, "link", "set", "lo", "up")
            ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            ip("-n", self.switch, "link", "set", "br0", "up")
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Hosts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def _netns_add(self, ns: str) -> None:
        ip("netns", "add", ns)
        self._namespaces.append(ns)
        _made.add(ns)

    def add(self, name: str, webrtc_route: bool = True) -> Host:
        """A new host ``name`` (lowercase letters and digits, not "sw") at the next address of the subnet.

        ``webrtc_route``: the on-link route to 8.8.8.8 that Chromium's WebRTC needs (see the module's doc).
        """
        if not _NAME.fullmatch(name) or name == "sw" or name in self.hosts:
            raise ValueError(f"bad or duplicate host name {name!r}")
        index = len(self.hosts) + 1
        if index > 253:
            raise ValueError("a subnet holds 253 hosts")
        ns = f"{PREFIX}{self.tag}-{name}"
        self._netns_add(ns)
        # Made inside the switch's namespace, the host's end moved at once: nothing appears in the root namespace.
        port = f"v{index}"
        ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
        ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "addr", "add", f"{self.subnet}.{index}/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        if webrtc_route:
            ip("-n", ns, "route", "add", f"{WEBRTC_PROBE}/32", "dev", "eth0")
        host = Host(self, name, ns, f"{self.subnet}.{index}")
        self.hosts[name] = host
        return host

    @property
    def namespaces(self) -> list[str]:
        """The namespaces made so far (hosts and switch)."""
        return list(self._namespaces)

    def close(self, grace: float = GRACE) -> None:
        """Stop the processes (SIGTERM, SIGKILL after ``grace``), kill any other in the namespaces, delete them."""
        running = [(popen, group) for popen, group in self._started if popen.poll() is None]
        for popen, group in running:
            _signal(popen.pid, signal.SIGTERM, group)
        deadline = time.monotonic() + grace
        for popen, group in running:
            try:
                popen.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal(popen.pid, signal.SIGKILL, group)
                popen.wait()
        for popen, group in self._started:
            if group:  # whatever its children left in the group (a live group's id is never reused)
                _signal(popen.pid, signal.SIGKILL, group=True)
            for stream in (popen.stdin, popen.stdout, popen.stderr):
                if stream is not None:
                    try:
                        stream.close()
                    except OSError:
                        pass
        failures = []
        for ns in reversed(self._namespaces):  # hosts first, then the switch
            for stray in netns_pids(ns):  # e.g. Chromium's own children
                _signal(stray, signal.SIGKILL)
            done = ip("netns", "del", ns, check=False)
            if done.returncode != 0:
                failures.append(f"{ns}: {done.stderr.strip()}")
            _made.discard(ns)
        self._namespaces.clear()
        if failures:
            raise RuntimeError("could not delete network namespaces: " + "; ".join(failures))


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    """Separate hosts for one test (skipped loudly where namespaces cannot be made), removed at its end."""
    skip_without_netns()
    with Hosts() as made:
        yield made
