"""What a session needs from its transport, whether a WebSocket or a WebRTC data channel.

A :class:`Link` carries whole text frames both ways with a blocking API, the
one ``websockets``' threaded connections already have. A session, the lender
and the reorder buffer never learn which transport a volunteer came over.
"""
from __future__ import annotations

import socket
import threading
from typing import Callable, Iterable, Iterator, Protocol

from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.sync.server import ServerConnection
from websockets.typing import DataLike


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

    def direct(self, handler: Callable[[str], bool]) -> None:
        """From now on the link may hand text frames to ``handler`` in the thread that reads the
        socket; the frames it returns False for come out of iteration as usual (a link that has
        no such thread, a data channel's, keeps them all for iteration)."""


class DirectConnection(ServerConnection):
    """A connection of ``websockets``' threaded server whose reading thread can handle frames itself.

    Each frame a session reads through ``recv()`` costs a hand-off from that
    thread to the session's, the largest part of a small frame's cost: a
    handler set in :attr:`on_text` takes whole text frames where they are
    parsed. A fragmented message turns it off, so frames keep their order. An
    exception in the handler (a bug) shuts the socket; iteration over a
    :class:`WebSocketLink` then raises it in the session's thread.

    A text frame sent from the reading thread (a handler's answer) goes out at
    once while the connection is open and is dropped otherwise: ``websockets``
    would have that thread wait for the connection to close, which only that
    thread can make happen.
    """

    on_text: Callable[[str], bool] | None = None
    crashed: Exception | None = None

    def process_event(self, event: object) -> None:
        if self.crashed is not None:
            return  # the frames parsed with the one that crashed: the link is over
        handler = self.on_text
        if handler is not None and isinstance(event, Frame):
            if event.opcode is Opcode.TEXT and event.fin:
                try:
                    if handler(str(event.data, "utf-8")):
                        return
                except UnicodeDecodeError:
                    pass  # recv() says so, as for any other peer
                except Exception as exc:
                    self.on_text, self.crashed = None, exc
                    _shut(self.socket)
                    return
            elif event.opcode in (Opcode.TEXT, Opcode.CONT):
                self.on_text = None
        super().process_event(event)  # type: ignore[arg-type]

    def send(self, message: DataLike | Iterable[DataLike], *, text: bool | None = None) -> None:
        if not isinstance(message, str) or threading.current_thread() is not self.recv_events_thread:
            super().send(message, text=text)
            return
        with self.protocol_mutex:
            if self.protocol.state is State.OPEN:
                self.protocol.send_text(message.encode())
                self.send_data()  # OSError if the socket broke: the reading side sees the end next


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


class WebSocketLink:
    """A :class:`Link` over a connection of ``websockets``' threaded server."""

    def __init__(self, connection: ServerConnection) -> None:
        self._connection = connection
        # The hot path goes straight to websockets.
        self.send = connection.send
        self.recv = connection.recv
        self.close = connection.close

    def __iter__(self) -> Iterator[str | bytes]:
        try:
            yield from self._connection
        finally:
            # Whatever way the link ended: a crash in the reading thread is what ended it.
            if isinstance(self._connection, DirectConnection) and self._connection.crashed is not None:
                raise self._connection.crashed

    def direct(self, handler: Callable[[str], bool]) -> None:
        if isinstance(self._connection, DirectConnection):
            self._connection.on_text = handler

    def abort(self) -> None:
        _shut(self._connection.socket)

    def limit(self, size: int) -> None:
        self._connection.protocol.max_message_size = size
