"""pando-volunteer: join a Pando root as a headless volunteer.

Usage:
  pando-volunteer URL [--workers=N] [--name=NAME] [--protocol=P]
  pando-volunteer (-h | --help | --version)

Connects to the root at URL, exactly as pando printed it
(http://HOST:PORT/#key=KEY; the join key after #key= is what lets this
volunteer in), receives the Python module to run, and computes the items it
is lent with N worker processes. When the connection drops it retries with
back-off, until the root says the job is over. A URL of a pando-server
(pando --host) is joined over a WebRTC data channel to the root.

The module comes from the root and runs with your rights on this machine: only
join roots you trust.

Options:
  --workers=N   Worker processes (default: one per core).
  --name=NAME   Device name shown to the root (default: this host's name).
  --protocol=P  websocket, webrtc, or auto: WebRTC when URL is a
                pando-server's, WebSocket otherwise (default: auto).
                WebRTC needs aiortc: pip install 'pando-computing[webrtc]'.
  -h --help     Show this text.
  --version     Show the version.

Whatever the module prints goes to stderr; stdout stays empty.

Exit status: 0 when the job is over, 1 if the module cannot run here, 2 for a
bad command line or URL, or a root that refuses this volunteer (wrong join
key, other protocol version), 130 on Ctrl-C.
"""
from __future__ import annotations

import json
import os
import random
import socket
import sys
import threading
import time
import urllib.request
from typing import ContextManager
from urllib.parse import unquote, urlsplit, urlunsplit

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.sync.client import connect

from pando import protocol, rendezvous, rtc, status, stdout, usage
from pando.access import KEY_PATTERN
from pando.joiner import JoinFailed, join
from pando.link import Duplex
from pando.printable import printable
from pando.workers import Answer, ModuleBroken, Workers

MAX_BACKOFF = 10.0
PROTOCOLS = ("auto", "websocket", "webrtc")


def parse_url(url: str) -> tuple[str, str]:
    """A root's URL as printed (``http://h:p/#key=K;``) → its WebSocket URL and the join key."""
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise status.PandoError(f"not a root URL: {printable(url)!r} (expected http://HOST:PORT/#key=KEY;)")
    settings = dict(part.partition("=")[::2] for part in parts.fragment.split(";") if "=" in part)
    key = unquote(settings.get("key", "").strip())
    if not KEY_PATTERN.fullmatch(key):
        raise status.PandoError("the URL lacks the root's join key (#key=...): pass the URL exactly as pando printed it")
    path = parts.path if parts.path not in ("", "/") else protocol.VOLUNTEER_PATH
    return urlunsplit((scheme, parts.netloc, path, "", "")), key


class Volunteer:
    """Connects, computes, reconnects: the life of one native volunteer."""

    def __init__(
        self, url: str, key: str, workers: int, name: str, role: str = "volunteer", quiet: bool = False,
        retry: bool = True, transport: str = "websocket",
    ) -> None:
        self._url = url
        self._transport = transport
        self._rtc: rtc.RtcLoop | None = None
        self._key = key
        self._retry = retry
        self._workers = workers
        self._name = name
        self._role = role
        self._quiet = quiet

    def log(self, text: str) -> None:
        if not self._quiet:
            print(f"pando-volunteer: {text}", file=sys.stderr, flush=True)

    def run(self) -> int:
        """Work for the root until the job is over; return the exit status."""
        delay = 0.5
        while True:
            try:
                outcome = self._session()
            except (OSError, InvalidHandshake, TimeoutError, ConnectionClosed) as exc:
                self.log(f"cannot reach the root at {self._url}: {exc or type(exc).__name__}")
            except protocol.ProtocolError as exc:
                self.log(f"the root sent a bad frame ({exc})")
            except JoinFailed as exc:
                self.log(f"could not join through {self._url}: {printable(str(exc))}")
            else:
                if outcome is not None:
                    return outcome
                self.log("connection lost")
                delay = 0.5  # we were connected: start the back-off again
            if not self._retry:
                return status.OK
            pause = delay * random.uniform(0.5, 1.0)  # jitter keeps a crowd from reconnecting at once
            self.log(f"retrying in {pause:.1f} s")
            time.sleep(pause)
            delay = min(delay * 2, MAX_BACKOFF)

    def close(self) -> None:
        """Close the WebRTC loop, if a join started one."""
        if self._rtc is not None:
            self._rtc.stop()

    def _connect(self) -> ContextManager[Duplex]:
        if self._uses_webrtc():
            if self._rtc is None:
                self._rtc = rtc.RtcLoop()
            return join(_with_path(self._url, rendezvous.SIGNAL_PATH), self._rtc)
        # max_queue=None: frames keep being read (and pings answered) while the
        # main thread is busy starting workers; the root lends no more than it may.
        return connect(self._url, max_size=protocol.MAX_FRAME_BYTES, max_queue=None, compression=None, proxy=None,
                       open_timeout=10)

    def _uses_webrtc(self) -> bool:
        """``auto``: WebRTC when the page's server says so (a pando-server), else WebSocket."""
        if self._transport != "auto":
            return self._transport == "webrtc"
        page = _with_path(self._url, rendezvous.CONFIG_PATH).replace("ws", "http", 1)
        try:
            with urllib.request.urlopen(page, timeout=10) as answer:
                return bool(json.loads(answer.read(4096)).get("transport") == "webrtc")
        except (OSError, ValueError, AttributeError):
            return False  # an older root, or not reachable now: WebSocket says why soon enough

    def _session(self) -> int | None:
        """One connection; an exit status when the job is over, None if it dropped."""
        with self._connect() as ws:
            ws.send(protocol.encode(protocol.Hello(self._name, self._workers, self._key, self._role)))
            frame = protocol.decode(ws.recv(timeout=30), protocol.FROM_ROOT)
            if isinstance(frame, protocol.Bye):
                return self._bye(frame)
            if not isinstance(frame, protocol.Module):
                raise protocol.ProtocolError(f"expected the module, got {frame.type}")
            self.log(f"joined as {printable(frame.id)}; computing {printable(frame.filename)} "
                     f"with {self._workers} worker(s)")
            # Heartbeats from their own thread: starting workers (or a new one
            # after a crash) can take longer than the root waits in silence.
            ended = threading.Event()
            beats = threading.Thread(target=_beat, args=(ws, frame.heartbeat_ms / 3000, ended), daemon=True)
            beats.start()
            try:
                workers = Workers(
                    self._workers,
                    frame.source,
                    frame.filename,
                    on_answers=lambda answers: _send_answers(ws, answers),
                    on_report=lambda figures: _send(ws, protocol.Report(**figures)),
                    report_seconds=frame.reporting_interval,
                    timeout=frame.timeout,
                )
            except ModuleBroken as exc:
                ended.set()
                ws.send(protocol.encode(protocol.Error(message=str(exc))))
                print(f"pando-volunteer: cannot run the module: {exc}", file=sys.stderr, flush=True)
                return status.FAILED
            # The root answers every heartbeat: silence this long means it is gone,
            # even where the transport cannot tell (a data channel to a killed peer).
            silence = 2 * frame.heartbeat_ms / 1000
            try:
                while True:
                    try:
                        message = ws.recv(timeout=silence)
                    except TimeoutError:
                        self.log("the root went silent")
                        return None
                    except ConnectionClosed:
                        return None
                    frame = protocol.decode(message, protocol.FROM_ROOT)
                    if isinstance(frame, protocol.Lend):
                        workers.submit(frame.items)
                    elif isinstance(frame, protocol.Bye):
                        return self._bye(frame)
                    elif not isinstance(frame, protocol.Heartbeat):
                        raise protocol.ProtocolError(f"unexpected {frame.type} frame")
            finally:
                ended.set()
                workers.close()
        return None

    def _bye(self, frame: protocol.Bye) -> int:
        if frame.reason == "done":
            self.log("the job is over")
            return status.OK
        message = printable(frame.message, 500)
        print(f"pando-volunteer: the root refused this volunteer: {message}", file=sys.stderr, flush=True)
        return status.USAGE


def _with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def _beat(ws: Duplex, seconds: float, ended: threading.Event) -> None:
    while not ended.wait(seconds):
        _send(ws, protocol.Heartbeat())


def _send(ws: Duplex, frame: protocol.Frame) -> None:
    try:
        ws.send(protocol.encode(frame))
    except ConnectionClosed:
        pass  # the main thread sees the end and reconnects


def _send_answers(ws: Duplex, answers: list[Answer]) -> None:
    """Turn worker answers into result and error frames."""
    results = []
    for answer in answers:
        if answer[0] == "ok":
            results.append((answer[1], answer[2]))
        elif answer[0] == "error":
            _send(ws, protocol.Error(id=answer[1], message=answer[2], traceback=answer[3]))
        else:
            _send(ws, protocol.Error(id=answer[1], message=answer[2], lost=True))
    for group in protocol.pack(results) if results else ():
        _send(ws, protocol.Result(group))


def _count(text: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise status.PandoError(f"{what} must be a positive integer, not {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``pando-volunteer``."""
    args = usage.parse(__doc__, argv)
    if isinstance(args, int):
        return args
    try:
        url, key = parse_url(args["URL"])
        workers = _count(args["--workers"], "--workers") if args["--workers"] else os.cpu_count() or 1
        transport = args["--protocol"] or "auto"
        if transport not in PROTOCOLS:
            raise status.PandoError(f"--protocol must be one of {', '.join(PROTOCOLS)}, not {printable(transport)!r}")
    except status.PandoError as exc:
        print(f"pando-volunteer: {exc}", file=sys.stderr)
        return exc.status
    name = args["--name"] or socket.gethostname()
    stdout.claim()  # the module's prints go to stderr, here and in the worker processes
    print(
        f"pando-volunteer: warning: this runs Python code sent by the root at {printable(args['URL'].split('#')[0])} "
        "with your rights; "
        "only join roots you trust.",
        file=sys.stderr,
        flush=True,
    )
    volunteer = Volunteer(url, key, workers, name, transport=transport)
    try:
        return volunteer.run()
    except status.PandoError as exc:  # WebRTC asked for, and aiortc missing
        print(f"pando-volunteer: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        print("pando-volunteer: interrupted", file=sys.stderr)
        return status.INTERRUPTED
    except InvalidURI as exc:
        print(f"pando-volunteer: {exc}", file=sys.stderr)
        return status.USAGE
    finally:
        volunteer.close()


if __name__ == "__main__":
    sys.exit(main())
