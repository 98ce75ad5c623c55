"""What a session needs from its transport, whether a WebSocket or a WebRTC data channel.

A :class:`Link` carries whole text frames both ways with a blocking API, the
one ``websockets``' threaded connections already have. A session, the lender
and the reorder buffer never learn which transport a volunteer came over.
"""
from __future__ import annotations

import socket
from typing import Iterator, Protocol

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection


class LinkClosed(ConnectionClosed):
    """A link that ended. It is a ``websockets`` ``ConnectionClosed``, so one ``except`` catches either end."""

    def __init__(self, reason: str = "closed") -> None:
        super().__init__(None, None)
        self.why = reason

    def __str__(self) -> str:
        return self.why


class Duplex(Protocol):
    """Frames both ways: all a volunteer needs of its connection to the root."""

    def send(self, message: str) -> None:
        """Send one frame; raise ``ConnectionClosed`` if the link ended."""

    def recv(self, timeout: float | None = None) -> str | bytes:
        """The next frame; ``TimeoutError`` after ``timeout`` seconds, ``ConnectionClosed`` at the end."""


class Link(Duplex, Protocol):
    """A volunteer's connection as the root's sessions use it."""

    def __iter__(self) -> Iterator[str | bytes]:
        """Frames until the link ends."""

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close after what was sent has gone out."""

    def abort(self) -> None:
        """End the link now, from any thread: the reading side sees the end."""

    def limit(self, size: int) -> None:
        """Frames larger than ``size`` bytes end the link from now on."""


class WebSocketLink:
    """A :class:`Link` over a connection of ``websockets``' threaded server."""

    def __init__(self, connection: ServerConnection) -> None:
        self._connection = connection
        # The hot path goes straight to websockets.
        self.send = connection.send
        self.recv = connection.recv
        self.close = connection.close

    def __iter__(self) -> Iterator[str | bytes]:
        return iter(self._connection)

    def abort(self) -> None:
        try:
            self._connection.socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed

    def limit(self, size: int) -> None:
        self._connection.protocol.max_message_size = size
