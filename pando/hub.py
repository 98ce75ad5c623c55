"""The rendezvous hub: joiners' offers go to the one root, its answers come back.

``pando-server`` runs one for roots anywhere (they connect to
``/rendezvous/root`` and prove they hold the secret); a root runs one on its
own port for WebRTC joiners on its LAN and answers them in-process. Both ways
the hub is the same: it hands each signal socket an id, stamps that id on the
socket's offers (no joiner speaks for another), and bounds what a socket may
cost before anyone knows who is behind it.
"""
from __future__ import annotations

import hmac
import logging
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection

from pando import protocol, rendezvous
from pando.printable import printable

LOG = logging.getLogger("pando.webrtc.hub")

#: Hands a joiner's offer (its id, the checked offer frame) to the root.
Deliver = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class _Root:
    config: dict[str, Any]
    deliver: Deliver


class Hub:
    """Relays joins between signal sockets and the root; thread-safe.

    ``secret`` is what a remote root must send (None: only an in-process root,
    by :meth:`attach`). ``absent`` is what joiners are told while no root is here.
    """

    def __init__(self, secret: str | None, log: Callable[[str], None],
                 absent: str = "no job here now: no root is connected; try again later") -> None:
        self._secret = secret.encode("utf-8") if secret is not None else None
        self._log = log
        self._absent = absent
        self._lock = threading.Lock()
        self._root: _Root | None = None
        self._joiners: dict[str, ServerConnection] = {}
        self._per_address: Counter[str] = Counter()
        self._open = 0

    @property
    def has_root(self) -> bool:
        return self._root is not None

    def attach(self, config: dict[str, Any], deliver: Deliver) -> None:
        """Make an in-process root the one that answers joins."""
        with self._lock:
            self._root = _Root(config, deliver)

    def reply(self, joiner: str, frame: str) -> None:
        """Pass the root's answer (or refusal) to the joiner, if its socket is still open."""
        connection = self._joiners.get(joiner)
        if connection is None:
            return  # it gave up, or it never existed
        try:
            connection.send(frame)
        except ConnectionClosed:
            pass

    # -- /rendezvous/signal ----------------------------------------------

    def serve_signal(self, connection: ServerConnection) -> None:
        """One joiner's signal socket, from welcome to answer, within the bootstrap timeout."""
        address = str(connection.remote_address[0]) if connection.remote_address else "?"
        with self._lock:
            admitted = self._open < rendezvous.MAX_SIGNALS and self._per_address[address] < rendezvous.MAX_PER_ADDRESS
            if admitted:
                self._open += 1
                self._per_address[address] += 1
        if not admitted:
            _close(connection, rendezvous.bye("limit", "too many joins at once from here; try again later"), 1008)
            return
        joiner = secrets.token_hex(16)
        try:
            self._signal(connection, joiner)
        except protocol.ProtocolError as exc:
            LOG.debug("signal socket %s: %s", joiner, exc)
            connection.close(1008, "bad frame")
        except ConnectionClosed:
            pass
        finally:
            with self._lock:
                self._joiners.pop(joiner, None)
                self._open -= 1
                self._per_address[address] -= 1
                if not self._per_address[address]:
                    del self._per_address[address]

    def _signal(self, connection: ServerConnection, joiner: str) -> None:
        root = self._root
        if root is None:
            _close(connection, rendezvous.bye("no-root", self._absent))
            return
        connection.protocol.max_message_size = rendezvous.MAX_FRAME_BYTES
        self._joiners[joiner] = connection
        connection.send(rendezvous.welcome(root.config, joiner))
        deadline = time.monotonic() + root.config["bootstrap_timeout"]
        for _ in range(rendezvous.MAX_SIGNAL_FRAMES):
            try:
                text = connection.recv(timeout=max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                _close(connection, rendezvous.bye("timeout", "the join took too long"))
                return
            frame = rendezvous.decode(text, ("signal",))
            if frame["kind"] != "offer":
                raise protocol.ProtocolError("a joiner sends offers only")
            root = self._root
            if root is None:
                _close(connection, rendezvous.bye("no-root", self._absent))
                return
            root.deliver(joiner, frame)
        _close(connection, rendezvous.bye("limit", "too many frames on one signal socket"), 1008)

    # -- /rendezvous/root (pando-server) ----------------------------------

    def serve_root(self, connection: ServerConnection) -> None:
        """A remote root: it proves it holds the secret, then answers the joins relayed to it."""
        try:
            frame = rendezvous.decode(connection.recv(timeout=protocol.GREETING_SECONDS), ("root",))
        except (protocol.ProtocolError, TimeoutError):
            connection.close(1008, "a root frame first")
            return
        except ConnectionClosed:
            return
        if frame["protocol"] != protocol.VERSION:
            _close(connection, rendezvous.bye(
                "refused", f"this pando-server speaks protocol {protocol.VERSION}, not {frame['protocol']}: "
                "use the same version of pando on both sides"), 1008)
            return
        if self._secret is None or not hmac.compare_digest(frame["secret"].encode("utf-8"), self._secret):
            _close(connection, rendezvous.bye("refused", "wrong secret"), 1008)
            return
        address = printable(str(connection.remote_address[0])) if connection.remote_address else "?"
        root = _Root(frame["config"], lambda joiner, offer: connection.send(rendezvous.encode({**offer, "from": joiner})))
        with self._lock:
            busy = self._root is not None
            if not busy:
                self._root = root
        if busy:
            _close(connection, rendezvous.bye("busy", "another root is connected to this server; "
                                              "only one job at a time"), 1008)
            return
        self._log(f"pando-server: a root joined from {address}")
        bad = False
        try:
            connection.protocol.max_message_size = rendezvous.MAX_FRAME_BYTES
            connection.send(rendezvous.welcome(root.config))
            for text in connection:
                frame = rendezvous.decode(text, ("signal",))
                if frame["kind"] == "offer" or "to" not in frame:
                    raise protocol.ProtocolError("a root sends answers and rejections to a joiner")
                self.reply(frame["to"], rendezvous.encode(frame))
        except protocol.ProtocolError as exc:
            self._log(f"pando-server: the root sent a bad frame ({printable(str(exc))}); closing its socket")
            bad = True
        except ConnectionClosed:
            pass
        finally:
            with self._lock:  # free the slot before the root can see its socket closed
                if self._root is root:
                    self._root = None
            if bad:
                connection.close(1008, "bad frame")
            self._log(f"pando-server: the root from {address} left")


def _close(connection: ServerConnection, frame: str, code: int = 1000) -> None:
    """Say why, then close."""
    try:
        connection.send(frame)
        connection.close(code)
    except ConnectionClosed:
        pass
