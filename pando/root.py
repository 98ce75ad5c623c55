"""The root: one run of ``pando`` with volunteers, from first item read to last line written.

It owns every thread of the run and stops them along one path, whatever ends
the run: the last result written, a failed item, a closed stdout or Ctrl-C.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import signal
import sys
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, BinaryIO, Iterable, Iterator

from pando import assets, protocol, rendezvous, status
from pando.access import Access, fragment
from pando.addresses import helper_url, volunteer_urls
from pando.console import Console
from pando.dependencies import Shipment
from pando.dispatcher import Dispatcher
from pando.gateway import Gateway
from pando.hub import Hub
from pando.junction import Junction
from pando.journal import Journal
from pando.lender import Lender
from pando.link import WebSocketLink
from pando.helper import Helper
from pando.monitor import Monitor, StatusThread
from pando.reader import Reader
from pando.reorder import Reorder
from pando.overlay import Overlay
from pando.server import Server
from pando.session import Holder, Job, Session, SessionIds, finish_all
from pando.supervisor import Supervisor
from pando.uplink import Uplink
from pando.window import Window

#: Items read but not yet written, at most (plus one batch), and their bytes
#: with the results waiting for an earlier one. Beyond either the reader
#: waits: memory stays flat on an endless input.
WINDOW_ITEMS = 50_000
WINDOW_BYTES = 256 * 1024 * 1024
#: The GIL's switch interval while the run's threads end (seconds; CPython's default is 0.005).
SHUTDOWN_SWITCH_SECONDS = 0.05

#: ``GET /rendezvous/config`` on a root: its own page uses WebSocket (WebRTC if the URL asks).
_CONFIG = assets.Answer(HTTPStatus.OK, (("Content-Type", "application/json"), ("Cache-Control", "no-store")),
                        b'{"service":"pando","transport":"websocket","root":true}')


@dataclass(frozen=True)
class Settings:
    """The options that shape a distributed run."""

    join_key: str
    port: int = 5000
    bind: str = ""
    #: Items a volunteer holds per worker; None: as many as it asks for (pando.pace).
    batch_size: int | None = None
    heartbeat_ms: int = 30_000
    start_idle: bool = False
    seed: int | None = None
    #: Longest an item may take on one holder, in seconds (None: no limit).
    timeout: float | None = None
    #: Further attempts at an item whose function raised.
    retries: int = 1
    #: Distinct volunteers that must agree on an item's result (1: no verification).
    verify: int = 1
    #: Where accepted results are recorded, and whether to resume from there.
    journal: str | None = None
    resume: bool = False
    reporting_interval: float = 3.0
    #: A pando-server to take volunteers through too (``--host``), and its secret.
    host: str | None = None
    secret: str = ""
    ice_servers: list[dict[str, Any]] = field(default_factory=list)
    bootstrap_timeout: float = rendezvous.BOOTSTRAP_TIMEOUT
    #: Children a node of the tree holds at most; whether every device's status comes up to the root.
    degree: int = 10
    global_monitoring: bool = False
    #: Items reach the function as their text, not typed (``--raw``).
    raw: bool = False


class Root:
    """Serves the module to volunteers and writes their results in input order."""

    def __init__(
        self,
        settings: Settings,
        filename: str,
        source: str,
        batches: Iterable[list[str]],
        total: int | None,
        out: BinaryIO,
        console: Console,
        shipment: Shipment = Shipment(),
        helper: Helper | None = None,
    ) -> None:
        """``shipment``: the files that go with the module, and what browsers lack (:mod:`pando.dependencies`);
        ``helper``: the root's own helper, started by the caller (who stops it), which joins once this serves."""
        self._settings = settings
        self._shipment = shipment
        self._filename = filename
        self._source = source
        self._batches = batches
        self._total = total
        self._out = out
        self._console = console
        self._helper = helper

    def run(self) -> int:
        """Run to the end; return the exit status. Raises PandoError if it cannot start."""
        settings = self._settings
        journal = Journal.open(settings.journal, settings.resume) if settings.journal is not None else None
        try:
            with Supervisor(self._console.log) as supervisor:
                return self._run(supervisor, journal)
        finally:
            if journal is not None:
                journal.close()

    def _run(self, supervisor: Supervisor, journal: Journal | None) -> int:
        settings = self._settings
        log = self._console.log
        # Before anything starts: input that does not match the journal stops the run with nothing written.
        batches = self._batches if journal is None else journal.skip_done(self._batches)
        access = Access(settings.join_key)
        window = Window(WINDOW_ITEMS, WINDOW_BYTES)
        lender: Lender[Holder] = Lender(
            retries=settings.retries,
            verify=settings.verify,
            timeout=settings.timeout,
            # A straggler's lease lasts a few of its heartbeats at least: one
            # slow answer is no reason to compute an item twice.
            straggler_floor=settings.heartbeat_ms / 1000,
        )
        # Results on the terminal that shows the progress line take it away first.
        shared = self._console.live and self._out.isatty()
        reorder = Reorder(self._out, window, log, journal, self._console.aside if shared else contextlib.nullcontext)
        reader = Reader(batches, lender, window, reorder, log, journal)
        monitor = Monitor(
            settings.reporting_interval,
            lambda: {"read": reader.count, **lender.counts(), "written": reorder.written},
            lender.held_counts,
            self._total,
        )
        # WebRTC joiners: on this root's own port (a LAN), and through a pando-server with --host;
        # the root answers D of them, and passes later ones down the tree.
        job: Job
        rtc_config = {"ice_servers": settings.ice_servers, "bootstrap_timeout": settings.bootstrap_timeout}
        overlay: Overlay[Session] = Overlay(settings.degree)
        gateway = Gateway(rtc_config, supervisor.guard(lambda link: Session(link, job, child=True).serve()),
                          ended=lambda: junction.join_ended())
        junction = Junction(overlay, gateway, changed=lambda: None)  # the root has no parent to tell
        tree = protocol.Tree(settings.degree, secrets.token_hex(8), 1, settings.ice_servers, settings.bootstrap_timeout,
                             "global" if settings.global_monitoring else "local")
        job = Job(
            self._filename, self._source, settings.heartbeat_ms, settings.batch_size, settings.reporting_interval,
            lender, reorder, monitor, SessionIds(settings.seed), log, access, timeout=settings.timeout,
            junction=junction, tree=tree, raw=settings.raw, bundle=self._shipment.bundle,
            native_only=self._shipment.native_only, run=secrets.token_hex(8),
        )
        hub = Hub(None, log)
        hub.attach(rtc_config, lambda joiner, offer: junction.offer(rendezvous.join_of(joiner, offer),
                                                                    rendezvous.replier(lambda text: hub.reply(joiner, text))))
        server = Server(
            settings.bind,
            settings.port,
            {
                protocol.VOLUNTEER_PATH: supervisor.guard(lambda connection: Session(WebSocketLink(connection), job).serve()),
                protocol.MONITOR_PATH: supervisor.guard(
                    lambda connection: monitor.serve_viewer(connection, lambda key: access.admits(key, "viewer"))
                ),
                rendezvous.SIGNAL_PATH: supervisor.guard(hub.serve_signal),
            },
            settings.heartbeat_ms,
            log,
            pages={rendezvous.CONFIG_PATH: lambda: _CONFIG},
            heartbeating={protocol.VOLUNTEER_PATH},  # the dispatcher drops a silent volunteer
        )
        uplink: Uplink | None = None
        public = ""
        if settings.host is not None:
            public, socket_url = rendezvous.server_urls(settings.host)
            uplink = Uplink(socket_url, settings.host, settings.secret, rtc_config, junction, log)
            try:
                uplink.start()  # before anything runs: a refusal ends the run with nothing done
            except BaseException:
                server.close()
                raise
            if public.startswith("http:"):
                log("pando: warning: the secret went to the pando-server over plain HTTP; "
                    "put the server behind TLS and use --host https://...")
        dispatcher = Dispatcher(lender, reorder, settings.heartbeat_ms, settings.timeout)
        status_thread = StatusThread(monitor, self._console.progress)
        helper = self._helper
        outcome: protocol.Outcome | None = None  # stays None if the run itself crashes
        try:
            server.start()
            reorder.start()
            dispatcher.start()
            reader.start()
            status_thread.start()
            key = fragment(settings.join_key)
            pages = volunteer_urls(settings.bind, server.port)
            urls = ([f"{public}{key}"] if public else []) + [f"{url}/{key}" for url in pages]
            for url in urls:
                log(f"Serving volunteer code at {url}")
            log(f"Monitoring at {pages[-1]}/monitor{key}")
            self._console.qr_code(urls[0])  # the server's, else the first LAN address if there is one
            if settings.verify > 1:  # the root's helper is one voice: it would only ever vote alone
                log(f"pando: --verify {settings.verify} waits for {settings.verify} volunteers to agree on each item")
            if helper is not None:
                helper.join(helper_url(settings.bind, server.port), access.helper_secret)
            while not reorder.done.wait(0.5) and not supervisor.failed.is_set():
                if helper is not None:
                    helper.check()
                    if helper.gave_up and not lender.volunteers():
                        reason = "the root's own helper cannot compute and no volunteer is connected"
                        supervisor.fail(reason, f"pando: {reason}; stopping (with --start-idle the run waits "
                                                "for volunteers instead)")
            outcome = _outcome(supervisor, reorder, reader)
        except KeyboardInterrupt:
            log("pando: interrupted")
            outcome = protocol.Outcome(status.INTERRUPTED, "interrupted")
        finally:
            job.over.set()  # from now on a hello is told the job is over
            reorder.stop()  # no more writes once the run is over, whatever ended it
            reorder.join(5)
            _second_interrupt_exits_at_once()
            status_thread.stop(outcome)
            self._console.clear()
            with _long_gil_turns():
                dispatcher.stop()
                finish_all(lender.holders(), 2)
                if uplink is not None:
                    uplink.stop()
                gateway.stop()
                monitor.wait_viewers(2)  # the monitoring pages are sent how the run ended before the server closes
                server.close()
        assert outcome is not None  # set on every path that gets here
        return outcome.status


@contextlib.contextmanager
def _long_gil_turns() -> Iterator[None]:
    """While the run's threads end: CPython wakes every thread that waits for the GIL once per switch
    interval, and a thousand volunteers' sessions ending at once (several threads each) spent seconds
    to tens of seconds of kernel CPU in those wake-ups at the default 5 ms (bench/README.md).
    Nothing that ends needs quick turns; the run's own work does (mixed item times lose 4% at 50 ms)."""
    switch = sys.getswitchinterval()
    sys.setswitchinterval(max(switch, SHUTDOWN_SWITCH_SECONDS))
    try:
        yield
    finally:
        sys.setswitchinterval(switch)


def _outcome(supervisor: Supervisor, reorder: Reorder, reader: Reader) -> protocol.Outcome:
    """How a run that was not interrupted ended: its exit status, and why it failed if it did."""
    if supervisor.failed.is_set():
        return protocol.Outcome(status.FAILED, supervisor.reason)
    if reorder.status != status.OK:
        return protocol.Outcome(reorder.status, reorder.failure)
    if reader.error is not None:
        return protocol.Outcome(reader.error.status, str(reader.error))
    return protocol.Outcome(status.OK)


def _second_interrupt_exits_at_once() -> None:
    """While the run shuts down (up to a few seconds), a second Ctrl-C ends it on the spot."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, lambda *_: os._exit(status.INTERRUPTED))

