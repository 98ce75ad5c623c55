"""The root's socket to a ``pando-server``: the secret first, then offers in and answers out.

The first connection is made before the run starts, so a wrong secret, a
server that already serves another root, or one that cannot be reached
stops ``pando`` at once with a clear message. Later losses are not fatal:
volunteers already joined talk to the root directly, so the run goes on and
the uplink reconnects with back-off for new joiners.
"""
from __future__ import annotations

import random
import threading
from typing import Any, Callable

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.sync.client import ClientConnection, connect

from pando import protocol, rendezvous
from pando.junction import Junction
from pando.printable import printable
from pando.status import PandoError

MAX_BACKOFF = 10.0


class Refused(PandoError):
    """The server will not take this root (wrong secret, another root, other version)."""


class Uplink:
    """Joins the server at ``url`` (``…/rendezvous/root``) as its root, for ``gateway``."""

    def __init__(self, url: str, host: str, secret: str, config: dict[str, Any], junction: Junction,
                 log: Callable[[str], None]) -> None:
        self._url = url
        self._host = host
        self._secret = secret
        self._config = config
        self._junction = junction
        self._log = log
        self._socket: ClientConnection | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="pando-uplink", daemon=True)

    def start(self) -> None:
        """Connect (PandoError, status 2, if the server refuses or cannot be reached), then serve joins."""
        try:
            self._socket = self._connect()
        except (OSError, InvalidHandshake, TimeoutError, ConnectionClosed, protocol.ProtocolError) as exc:
            raise PandoError(f"cannot join pando-server at {self._host}: {printable(str(exc) or type(exc).__name__)}") from None
        except InvalidURI:
            raise PandoError(f"--host: not a server address: {self._host}") from None
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._socket is not None:
            self._socket.close()
        if self._thread.ident is not None:
            self._thread.join(5)

    def _connect(self) -> ClientConnection:
        # Entered here, closed by stop() or when the server drops it: it outlives this call.
        socket = connect(self._url, max_size=rendezvous.MAX_FRAME_BYTES, compression=None, proxy=None,
                         open_timeout=10, close_timeout=2).__enter__()
        try:
            socket.send(rendezvous.root(self._secret, self._config))
            frame = rendezvous.decode(socket.recv(timeout=10), ("welcome", "bye"))
        except BaseException:
            socket.close()
            raise
        if frame["type"] == "bye":
            socket.close()
            if frame["reason"] == "refused" and frame["message"] == "wrong secret":
                raise Refused(f"wrong secret for {self._host}")
            raise Refused(f"pando-server at {self._host} refused this root: {frame['message']}")
        return socket

    def _serve(self) -> None:
        delay = 0.5
        while not self._stopped.is_set():
            socket = self._socket
            if socket is not None:
                self._relay(socket)
                delay = 0.5
                if self._stopped.is_set():
                    return
                self._log(f"pando: lost pando-server at {self._host}; volunteers already joined go on, "
                          "reconnecting for new ones")
            self._socket = None
            if self._stopped.wait(delay * random.uniform(0.5, 1.0)):
                return
            delay = min(delay * 2, MAX_BACKOFF)
            try:
                self._socket = self._connect()
                self._log(f"pando: back on pando-server at {self._host}")
            except Refused as exc:
                self._log(f"pando: {exc}; trying again")
            except (OSError, InvalidHandshake, TimeoutError, ConnectionClosed, protocol.ProtocolError):
                pass  # still away

    def _relay(self, socket: ClientConnection) -> None:
        def send(frame: str) -> None:
            try:
                socket.send(frame)
            except ConnectionClosed:
                pass  # the joiner tries again later

        reply = rendezvous.replier(send)

        try:
            for text in socket:
                frame = rendezvous.decode(text, ("signal",))
                if frame["kind"] != "offer" or "from" not in frame:
                    raise protocol.ProtocolError("the server relays offers only")
                self._junction.offer(rendezvous.join_of(frame["from"], frame), reply)
        except protocol.ProtocolError as exc:
            self._log(f"pando: pando-server at {self._host} sent a bad frame ({printable(str(exc))}); reconnecting")
            socket.close()
        except ConnectionClosed:
            pass
