"""The root's server: one port, plain HTTP for the page and a WebSocket per volunteer.

It is ``websockets``' threaded server: a thread per connection and blocking
sockets. A plain GET is answered straight from :mod:`pando.assets`; an upgrade
request on a known path, from no foreign page, becomes a WebSocket whose
handler runs in the connection's thread.

Nothing here trusts the peer: connections are capped below the file
descriptor limit, a download that stops moving is dropped, and the accept
loop, which ``websockets`` ends on any accept error (out of descriptors, say),
is started again on the same listening socket.
"""
from __future__ import annotations

import errno
import logging
import resource
import select
import socket
import threading
import time
from http import HTTPStatus
from typing import Any, Callable, Iterable

from websockets.http11 import SERVER, Request, Response
from websockets.sync.server import Server as WebSocketServer
from websockets.sync.server import ServerConnection, serve

from pando import access, assets, protocol, status
from pando.link import DirectConnection

#: websockets' own log; silent unless PANDO_DEBUG asks for it.
LOG = logging.getLogger("pando.websockets")

Handler = Callable[[ServerConnection], None]

#: Most connections at once, whatever the descriptor limit allows.
MAX_CONNECTIONS = 4096
#: Descriptors one connection costs (its socket, websockets' wake-up pair, a poller).
FDS_PER_CONNECTION = 4
#: Descriptors kept for everything else (the helper, worker pipes, files).
FDS_RESERVED = 64
#: Pause before the accept loop starts again after it died.
RESTART_PAUSE = 0.5
#: Shortest stall that drops a page download, whatever the heartbeat: a phone on a busy link
#: pauses for seconds while fetching Pyodide.
MIN_STALL_SECONDS = 5.0


def raise_file_limit() -> int:
    """Raise the soft limit on open files to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # some systems cap it lower than they say: keep the soft limit
    return soft


def connection_cap() -> int:
    """How many connections the root may hold without running out of descriptors."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(1, min(MAX_CONNECTIONS, (soft - FDS_RESERVED) // FDS_PER_CONNECTION))


#: Answers made on each request rather than read from a file, by path.
Pages = dict[str, Callable[[], assets.Answer]]


class _Connection(DirectConnection):
    """A connection that answers a plain GET itself, from the one cached copy of the file."""

    # Both set per server, by a subclass.
    pages: Pages = {}
    #: A download that moves no byte for this long is dropped: a heartbeat, as for a silent WebSocket
    #: (MIN_STALL_SECONDS at least).
    stall_seconds = 30.0
    #: WebSocket paths whose peers send heartbeats the run checks itself (a volunteer's session):
    #: websockets' pings there would only cost a thread per connection, a thousand threads for a
    #: thousand volunteers.
    heartbeating: frozenset[str] = frozenset()

    def handshake(
        self,
        process_request: Any = None,
        process_response: Any = None,
        server_header: str | None = SERVER,
        timeout: float | None = None,
    ) -> None:
        if not self.request_rcvd.wait(timeout):
            raise TimeoutError("no request in time")
        if self.request is not None and not _is_upgrade(self.request):
            page = self.pages.get(_path(self.request))
            answer = page() if page is not None else assets.answer(self.request)
            try:
                for part in (answer.head(), answer.body):
                    _send(self.socket, memoryview(part), self.server.socket_closed, self.stall_seconds)
            except (OSError, TimeoutError):
                pass  # the client left or stalled, or the run ended; the socket is closed either way
            return  # still CONNECTING: the server closes the connection now
        super().handshake(process_request, process_response, server_header, timeout)

    def start_keepalive(self) -> None:
        if self.request is None or _path(self.request) not in self.heartbeating:
            super().start_keepalive()


def _send(sock: socket.socket, data: memoryview, closed: threading.Event, stall_seconds: float) -> None:
    """Send all of ``data`` unless the reader stalls for ``stall_seconds`` or the server closes."""
    moved = time.monotonic()
    while data:
        if closed.is_set():
            raise TimeoutError("the server is closing")
        if time.monotonic() - moved > stall_seconds:
            raise TimeoutError("the client stopped reading")
        if not select.select([], [sock], [], 0.5)[1]:
            continue
        try:
            sent = sock.send(data[: 1 << 18], socket.MSG_DONTWAIT)
        except BlockingIOError:
            continue
        data = data[sent:]
        moved = time.monotonic()


def _is_upgrade(request: Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


class Server:
    """Listens on ``bind`` (all interfaces if empty) and ``port`` (0: any free port), from its own thread.

    ``websockets`` maps WebSocket paths (the volunteer endpoint, the monitoring
    feed) to the function that runs each such connection in its own thread;
    ``pages`` maps GET paths to answers made on each request. WebSockets are
    pinged every heartbeat, except on the ``heartbeating`` paths.
    """

    def __init__(
        self, bind: str, port: int, websockets: dict[str, Handler], heartbeat_ms: int, log: Callable[[str], None],
        pages: Pages | None = None, heartbeating: Iterable[str] = (),
    ) -> None:
        self._websockets = websockets
        self._heartbeat = heartbeat_ms / 1000
        self._connection_type = type("Connection", (_Connection,),
                                     {"pages": pages or {}, "stall_seconds": max(MIN_STALL_SECONDS, self._heartbeat),
                                      "heartbeating": frozenset(heartbeating)})
        self._log = log
        self._cap = connection_cap()
        self._active = 0
        self._refusing = False  # said once per crowd, not once per connection
        self._relistening = False  # said once until a connection gets through again
        self._lock = threading.Lock()
        self._closing = threading.Event()
        try:
            family = socket.AF_INET6 if ":" in bind else socket.AF_INET
            self._socket = socket.create_server((bind, port), family=family, backlog=1024)  # a crowd joining at once
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise status.PandoError(f"port {port} is already in use; choose another with --port") from None
            where = f"{bind or '*'}:{port}"
            raise status.PandoError(f"cannot listen on {where}: {exc.strerror}") from None
        self.port: int = self._socket.getsockname()[1]
        # Every websockets server made on the socket: one more each time the accept loop died.
        self._servers: list[WebSocketServer] = []
        self._thread = threading.Thread(target=self._serve, name="pando-server", daemon=True)

    def start(self) -> None:
        """Serve from now on; first say if the page it serves cannot start Python."""
        problem = assets.pyodide_problem()
        if problem is not None:
            self._log(problem)
        self._thread.start()

    def close(self) -> None:
        """Close every connection, stop listening and wait for the server thread."""
        self._closing.set()
        with self._lock:
            servers = list(self._servers)
        for server in servers:
            server.shutdown()
        if self._thread.ident is not None:
            self._thread.join()
        self._socket.close()  # if no server was made on it yet

    def _new_server(self) -> WebSocketServer:
        server = serve(
            self._route_websocket,
            sock=self._socket,
            process_request=self._check_upgrade,
            create_connection=self._connection_type,
            # Until a peer proves it was invited, a frame is a few KiB at most;
            # a session raises its own limit after the hello.
            max_size=protocol.MAX_GREETING_BYTES,
            ping_interval=self._heartbeat,
            ping_timeout=self._heartbeat,
            open_timeout=10,
            compression=None,  # frames are small JSON; deflate costs more CPU than it saves here
            close_timeout=2,  # a stopped peer must not hold up the end of the run
            logger=LOG,
        )
        handle = server.handler
        server.handler = lambda sock, address: self._counted(handle, sock, address)
        return server

    def _serve(self) -> None:
        while True:
            with self._lock:
                if self._closing.is_set():
                    return
                server: WebSocketServer | None = None
                try:
                    server = self._new_server()
                    self._servers.append(server)
                except OSError:
                    pass  # no descriptor for its wake-up pair either: try again shortly
            if server is not None:
                server.serve_forever()
                if self._closing.is_set():
                    return
                # websockets gives up on the first accept error: say so, and listen again.
                with self._lock:
                    tell, self._relistening = not self._relistening, True
                if tell:
                    self._log("pando: the server stopped accepting connections (out of file descriptors?); "
                              "listening again")
            time.sleep(RESTART_PAUSE)

    def _counted(self, handle: Callable[[socket.socket, Any], None], sock: socket.socket, address: Any) -> None:
        """Run one connection, unless there are too many: then it is closed at once."""
        with self._lock:
            admitted = self._active < self._cap
            self._relistening = False
            if admitted:
                self._active += 1
                self._refusing = False
            else:
                tell, self._refusing = not self._refusing, True
        if not admitted:
            if tell:
                self._log(f"pando: {self._cap} connections at once, the most this root takes; "
                          "refusing more until some end")
            try:
                sock.shutdown(socket.SHUT_RDWR)  # websockets then sees no request and cleans up at once
            except OSError:
                pass  # the peer is gone already
        try:
            handle(sock, address)
        finally:
            if admitted:
                with self._lock:
                    self._active -= 1

    def _check_upgrade(self, connection: ServerConnection, request: Request) -> Response | None:
        if _path(request) not in self._websockets:
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        if not access.same_origin(request):
            return connection.respond(HTTPStatus.FORBIDDEN, "pages from other sites may not connect\n")
        return None  # go on with the WebSocket handshake

    def _route_websocket(self, connection: ServerConnection) -> None:
        assert connection.request is not None  # the handshake is done
        self._websockets[_path(connection.request)](connection)


def _path(request: Request) -> str:
    return request.path.split("?", 1)[0]
