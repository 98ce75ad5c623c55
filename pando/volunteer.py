"""pando-volunteer: join a Pando root as a headless volunteer.

Usage:
  pando-volunteer URL [--workers=N] [--name=NAME] [--protocol=P] [--stay]
  pando-volunteer (-h | --help | --version)

Connects to the root at URL, exactly as pando printed it
(http://HOST:PORT/#key=KEY; the join key after #key= is what lets this
volunteer in), receives the Python module to run, and computes the items it
is lent with N worker processes. When the connection drops it retries with
back-off, until the root says the job is over. A URL of a pando-server
(pando --host) is joined over a WebRTC data channel to the root.

With --stay it does not end with the job: it says so on stderr, drops the
job's workers, and joins the next run served at the same URL (the same
join key), looking for it every few seconds, quietly, until it starts.
Each job starts afresh: new worker processes load the new run's module.

The module comes from the root and runs with your rights on this machine: only
join roots you trust.

Options:
  --workers=N   Worker processes (default: one per core).
  --name=NAME   Device name shown to the root (default: this host's name).
  --protocol=P  websocket, webrtc, or auto: WebRTC when URL is a
                pando-server's, WebSocket otherwise (default: auto).
                WebRTC needs aiortc: pip install 'pando-computing[webrtc]'.
  --stay        After each job, wait for the next run at URL and join it;
                Ctrl-C or SIGTERM ends the wait (exit status 0).
  -h --help     Show this text.
  --version     Show the version.

Whatever the module prints goes to stderr; stdout stays empty.

Exit status: 0 when the job is over (with --stay: when stopped by Ctrl-C or
SIGTERM), 1 if the module cannot run here, 2 for a bad command line or URL,
or a root that refuses this volunteer (wrong join key, other protocol
version: with --stay too, which ends the wait), 130 on Ctrl-C without --stay.
"""
from __future__ import annotations

import os
import signal
import socket
import sys
from urllib.parse import unquote, urlsplit, urlunsplit

from websockets.exceptions import InvalidURI

from pando import protocol, status, stdout, usage
from pando.access import KEY_PATTERN
from pando.node import Node
from pando.printable import printable

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


def _count(text: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise usage.UsageError(f"{what} must be a positive integer, not {text!r}")
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
            raise usage.UsageError(f"--protocol must be one of {', '.join(PROTOCOLS)}, not {printable(transport)!r}")
    except status.PandoError as exc:
        return usage.fail(__doc__, exc)
    name = args["--name"] or socket.gethostname()
    stay = bool(args["--stay"])
    if stay:  # a service's way to stop: SIGTERM ends the wait as Ctrl-C does, through the same clean-up
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    stdout.claim()  # the module's prints go to stderr, here and in the worker processes
    print(
        f"pando-volunteer: warning: this runs Python code sent by the root at {printable(args['URL'].split('#')[0])} "
        "with your rights; "
        "only join roots you trust.",
        file=sys.stderr,
        flush=True,
    )
    try:
        return Node(url, key, workers, name, transport=transport, stay=stay).run()
    except status.PandoError as exc:  # WebRTC asked for, and aiortc missing
        return usage.fail(__doc__, exc)
    except KeyboardInterrupt:
        if stay:  # the way a staying volunteer ends: its items, if it held any, are lent to others
            print("pando-volunteer: stopped", file=sys.stderr)
            return status.OK
        print("pando-volunteer: interrupted", file=sys.stderr)
        return status.INTERRUPTED
    except InvalidURI as exc:
        print(f"pando-volunteer: {exc}", file=sys.stderr)
        return status.USAGE


if __name__ == "__main__":
    sys.exit(main())
