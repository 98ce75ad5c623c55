"""The root's server: one port, plain HTTP for the page and a WebSocket per volunteer.

It is ``websockets``' threaded server: a thread per connection and blocking
sockets. ``process_request`` answers plain GETs from :mod:`pando.assets`; an
upgrade request on the volunteer path becomes a :class:`~pando.session.Session`.
"""
from __future__ import annotations

import errno
import logging
import threading
from typing import Callable

from websockets.http11 import Request, Response
from websockets.sync.server import ServerConnection, serve

from pando import protocol, status
from pando.assets import serve_file

#: websockets' own log; silent unless PANDO_DEBUG asks for it.
LOG = logging.getLogger("pando.websockets")


Handler = Callable[[ServerConnection], None]


class Server:
    """Listens on ``port`` (0: any free port) on every interface, from its own thread.

    ``websockets`` maps WebSocket paths (the volunteer endpoint, the monitoring
    feed) to the function that runs each such connection in its own thread.
    """

    def __init__(self, port: int, websockets: dict[str, Handler], heartbeat_ms: int) -> None:
        self._websockets = websockets
        seconds = heartbeat_ms / 1000
        try:
            self._server = serve(
                self._handle,
                host="",
                port=port,
                process_request=self._route,
                max_size=protocol.MAX_FRAME_BYTES,
                ping_interval=seconds,
                ping_timeout=seconds,
                compression=None,  # frames are small JSON; deflate costs more CPU than it saves here
                close_timeout=2,  # a stopped peer must not hold up the end of the run
                backlog=1024,  # a thousand volunteers joining at once must not see SYNs dropped
                logger=LOG,
            )
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise status.PandoError(f"port {port} is already in use; choose another with --port") from None
            raise status.PandoError(f"cannot listen on port {port}: {exc.strerror}") from None
        self.port: int = self._server.socket.getsockname()[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="server", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Close every connection, stop listening and wait for the server thread."""
        if self._thread.ident is None:  # never started: only the socket is open
            self._server.socket.close()
            return
        self._server.shutdown()
        self._thread.join()

    def _route(self, connection: ServerConnection, request: Request) -> Response | None:
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        if upgrade and _path(request) in self._websockets:
            return None  # go on with the WebSocket handshake
        return serve_file(request)

    def _handle(self, connection: ServerConnection) -> None:
        assert connection.request is not None  # the handshake is done
        self._websockets[_path(connection.request)](connection)


def _path(request: Request) -> str:
    return request.path.split("?", 1)[0]
