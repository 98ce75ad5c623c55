"""pando-server: a public meeting point for a Pando root and volunteers anywhere.

Usage:
  pando-server [--port=PORT] [--bind=ADDR] [--secret=SECRET] [-q]
  pando-server (-h | --help | --version)

Serves the volunteer page (with Pyodide) from this installation and relays
the WebRTC handshake between the browsers or pando-volunteer processes that
open it and the one root that joined with the secret:

  pando MODULE --host HOST:PORT --secret SECRET ...

Volunteers then compute over data channels straight to the root: once they
have joined, they go on if this server goes away; only new joins need it.
The server never sees the module, the items, the results or the join key.

The secret is what makes a root the root of this server: only one at a time,
and a second one with the right secret is refused while the first is
connected. Give it with --secret, or in the environment as PANDO_SECRET (not
visible to other users in the process list). Serve over TLS from a reverse
proxy (https://, wss://): over plain HTTP the secret crosses the network in
clear.

Options:
  --port=PORT       Port to listen on (default: $PORT, else 8080).
  --bind=ADDR       Address to listen on (default: every interface).
  --secret=SECRET   The roots' secret (default: $PANDO_SECRET).
  -q                Say nothing but errors.
  -h --help         Show this text.
  --version         Show the version.

Exit status: 0 stopped by SIGTERM; 2 bad command line, no secret, or a port
that cannot be used; 130 on Ctrl-C.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
from http import HTTPStatus
from typing import Any

from pando import assets, debug, rendezvous, status, usage
from pando.addresses import volunteer_urls
from pando.console import Console
from pando.hub import Hub
from pando.server import Server, raise_file_limit
from pando.supervisor import Supervisor

#: WebSocket ping interval on the server's sockets: a vanished root frees its slot within twice this.
HEARTBEAT_MS = 15_000


def config_answer(hub: Hub) -> assets.Answer:
    """``GET /rendezvous/config`` on a pando-server: pages here use WebRTC."""
    body = json.dumps({"service": "pando-server", "transport": "webrtc", "root": hub.has_root}).encode()
    return assets.Answer(HTTPStatus.OK, (("Content-Type", "application/json"), ("Cache-Control", "no-store")), body)


def _port(args: dict[str, Any]) -> int:
    text = args["--port"] or os.environ.get("PORT") or "8080"
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise usage.UsageError(f"--port must be an integer from 0 to 65535, not {text!r}")
    return port


def serve(port: int, bind: str, secret: str, console: Console, stop: threading.Event) -> None:
    """Serve until ``stop`` is set (or a thread of the server fails)."""
    with Supervisor(console.log) as supervisor:
        hub = Hub(secret, console.log)
        server = Server(
            bind, port,
            {
                rendezvous.ROOT_PATH: supervisor.guard(hub.serve_root),
                rendezvous.SIGNAL_PATH: supervisor.guard(hub.serve_signal),
            },
            HEARTBEAT_MS, console.log,
            pages={rendezvous.CONFIG_PATH: lambda: config_answer(hub)},
        )
        server.start()
        for url in volunteer_urls(bind, server.port):
            console.log(f"Serving volunteer code at {url}/")
        try:
            while not stop.wait(0.5) and not supervisor.failed.is_set():
                pass
        finally:
            server.close()
        if supervisor.failed.is_set():
            raise status.PandoError("internal error (see above)", status.FAILED)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``pando-server``."""
    args = usage.parse(__doc__, argv)
    if isinstance(args, int):
        return args
    console = Console(sys.stderr) if not args["-q"] else Console(open(os.devnull, "w"))
    debug.configure(os.environ.get("PANDO_DEBUG", ""), console)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        secret = args["--secret"] or os.environ.get("PANDO_SECRET", "")
        if not secret:
            raise status.PandoError("a secret is needed: --secret SECRET, or PANDO_SECRET in the environment")
        if len(secret) < 16:
            print("pando-server: warning: a secret this short can be guessed; use 16 characters or more",
                  file=sys.stderr)
        raise_file_limit()
        serve(_port(args), args["--bind"] or "", secret, console, stop)
    except status.PandoError as exc:
        return usage.fail(__doc__, exc)
    except KeyboardInterrupt:
        print("pando-server: interrupted", file=sys.stderr)
        return status.INTERRUPTED
    return status.OK


if __name__ == "__main__":
    sys.exit(main())
