"""The rendezvous frames: how a joiner, a root and a ``pando-server`` set up a data channel.

They travel on ``/rendezvous/root`` and ``/rendezvous/signal`` as JSON text
messages, checked as strictly as the session frames of :mod:`pando.protocol`;
``docs/protocol.md`` says the same in prose. Frames are plain dicts here: a
relay forwards them and only needs their shape checked.
"""
from __future__ import annotations

import json
import re
from typing import Any, Callable
from urllib.parse import unquote, urlsplit

from pando import protocol
from pando.printable import printable
from pando.status import PandoError

ROOT_PATH = "/rendezvous/root"
SIGNAL_PATH = "/rendezvous/signal"
CONFIG_PATH = "/rendezvous/config"

#: Largest rendezvous frame (an SDP with its candidates is a few KiB).
MAX_FRAME_BYTES = 64 * 1024
#: Frames a joiner may send on one signal socket.
MAX_SIGNAL_FRAMES = 8
#: Signal sockets one address may hold at once, and all addresses together.
MAX_PER_ADDRESS = 32
MAX_SIGNALS = 1000
BOOTSTRAP_TIMEOUT = protocol.BOOTSTRAP_TIMEOUT
MAX_ICE_SERVERS = protocol.MAX_ICE_SERVERS
_MAX_SDP = protocol.MAX_SDP
_MAX_FIELD = 512
_ID = protocol.JOINER_ID
REASONS = ("refused", "busy", "no-root", "limit", "timeout")


def encode(frame: dict[str, Any]) -> str:
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))


def welcome(config: dict[str, Any], joiner: str | None = None) -> str:
    """The server's first frame: to a joiner (with its id), or to the root."""
    frame: dict[str, Any] = {"type": "welcome", "config": config}
    if joiner is not None:
        frame["id"] = joiner
    return encode(frame)


def bye(reason: str, message: str) -> str:
    return encode({"type": "bye", "reason": reason, "message": message})


def offer(sdp: str, nodes: int = 1, avoid: tuple[str, ...] = ()) -> str:
    """A joiner's offer, with the subtree it brings and the nodes it must not hang under."""
    frame: dict[str, Any] = {"type": "signal", "kind": "offer", "sdp": sdp}
    if nodes > 1:
        frame["nodes"] = nodes
    if avoid:
        frame["avoid"] = list(avoid)
    return encode(frame)


def join_of(joiner: str, offer: dict[str, Any]) -> protocol.Join:
    """The tree's join for a checked offer frame from ``joiner``."""
    return protocol.Join(joiner, offer["sdp"], offer.get("nodes", 1), tuple(offer.get("avoid", ())), hops=0)


def replier(send: Callable[[str], None]) -> Callable[[str, str, str], None]:
    """Turns a node's reply to a join (its id, the SDP or else why not) into the rendezvous frame ``send`` takes."""
    return lambda joiner, sdp, message: send(answer(joiner, sdp) if sdp else reject(joiner, message))


def answer(joiner: str, sdp: str) -> str:
    return encode({"type": "signal", "to": joiner, "kind": "answer", "sdp": sdp})


def reject(joiner: str, message: str) -> str:
    return encode({"type": "signal", "to": joiner, "kind": "reject", "message": message})


def root(secret: str, config: dict[str, Any]) -> str:
    return encode({"type": "root", "protocol": protocol.VERSION, "secret": secret, "config": config})


def decode(text: str | bytes, allowed: tuple[str, ...]) -> dict[str, Any]:
    """Parse and check one rendezvous frame; :class:`protocol.ProtocolError` if it is not valid."""
    if isinstance(text, bytes):
        raise protocol.ProtocolError("binary frame; rendezvous frames are text")
    if len(text) > MAX_FRAME_BYTES:
        raise protocol.ProtocolError("frame too large")
    try:
        body = json.loads(text, parse_constant=_no_constant)
    except ValueError as exc:
        raise protocol.ProtocolError(f"not JSON: {exc}") from None
    except RecursionError:
        raise protocol.ProtocolError("JSON nested too deeply") from None
    if not isinstance(body, dict) or body.get("type") not in allowed:
        raise protocol.ProtocolError(f"unexpected frame {printable(str(body)[:80])!r}")
    try:
        return _CHECKS[body["type"]](body)
    except (KeyError, TypeError, ValueError) as exc:
        raise protocol.ProtocolError(f"malformed {body['type']} frame: {exc}") from None


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _text(body: dict[str, Any], key: str, limit: int = _MAX_FIELD) -> str:
    value = body[key]
    if not isinstance(value, str) or len(value) > limit:
        raise ValueError(f"{key!r} must be a string of at most {limit} characters")
    return value


def _signal(body: dict[str, Any]) -> dict[str, Any]:
    kind = body.get("kind")
    out: dict[str, Any] = {"type": "signal", "kind": kind}
    if kind in ("offer", "answer"):
        out["sdp"] = _text(body, "sdp", _MAX_SDP)
    elif kind == "reject":
        out["message"] = printable(_text(body, "message"), 300)
    else:
        raise ValueError("'kind' must be offer, answer or reject")
    if kind == "offer":
        nodes = body.get("nodes", 1)
        if type(nodes) is not int or not 1 <= nodes <= protocol.MAX_INT:
            raise ValueError("'nodes' must be a positive integer")
        avoid = protocol.check_avoid(body.get("avoid", []))
        out.update({"nodes": nodes} if nodes > 1 else {}, **({"avoid": list(avoid)} if avoid else {}))
    for key in ("from", "to"):
        if key in body and body[key] is not None:
            if not isinstance(body[key], str) or not _ID.fullmatch(body[key]):
                raise ValueError(f"{key!r} must be a joiner id")
            out[key] = body[key]
    return out


def _root(body: dict[str, Any]) -> dict[str, Any]:
    version = body.get("protocol")
    if type(version) is not int:
        raise ValueError("'protocol' must be an integer")
    return {"type": "root", "protocol": version, "secret": _text(body, "secret"),
            "config": protocol.check_join_config(body.get("config", {})) if version == protocol.VERSION else {}}


def _welcome(body: dict[str, Any]) -> dict[str, Any]:
    out = {"type": "welcome", "config": protocol.check_join_config(body["config"])}
    if "id" in body:
        if not isinstance(body["id"], str) or not _ID.fullmatch(body["id"]):
            raise ValueError("'id' must be 32 hex digits")
        out["id"] = body["id"]
    return out


def _bye(body: dict[str, Any]) -> dict[str, Any]:
    reason = body.get("reason")
    if reason not in REASONS:
        raise ValueError(f"unknown reason {printable(str(reason)[:40])!r}")
    return {"type": "bye", "reason": reason, "message": printable(_text(body, "message"), 300)}


_CHECKS = {"signal": _signal, "root": _root, "welcome": _welcome, "bye": _bye}


def ice_servers(text: str) -> list[dict[str, Any]]:
    """``--ice-servers``: comma-separated ``stun:`` and ``turn:`` URLs; a TURN URL may carry ``user:password@``."""
    servers = []
    for url in filter(None, (part.strip() for part in text.split(","))):
        scheme, _, rest = url.partition(":")
        if scheme not in ("stun", "turn", "turns") or not rest:
            raise PandoError(f"--ice-servers: {printable(url)!r} is not a stun:, turn: or turns: URL")
        entry: dict[str, Any] = {"urls": url}
        if "@" in rest:
            credentials, _, address = rest.rpartition("@")
            username, _, password = credentials.partition(":")
            entry = {"urls": f"{scheme}:{address}", "username": unquote(username), "credential": unquote(password)}
        servers.append(entry)
    if len(servers) > MAX_ICE_SERVERS:
        raise PandoError(f"--ice-servers: at most {MAX_ICE_SERVERS} servers")
    try:
        return protocol.check_join_config({"ice_servers": servers})["ice_servers"]
    except ValueError as exc:
        raise PandoError(f"--ice-servers: {exc}") from None


def server_urls(host: str) -> tuple[str, str]:
    """``--host``: a pando-server's page URL and the root's rendezvous socket URL.

    ``example.org:8080`` and ``http://…`` mean plain HTTP and WebSocket;
    ``https://…`` means TLS (the server behind a TLS proxy).
    """
    if "://" not in host:
        host = "http://" + host
    parts = urlsplit(host)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PandoError(f"--host must be HOST:PORT or an http(s):// URL, not {printable(host)!r}")
    try:
        parts.port  # noqa: B018 -- raises on a bad port
    except ValueError:
        raise PandoError(f"--host has a bad port: {printable(host)!r}") from None
    base = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
    socket_scheme = "wss" if parts.scheme == "https" else "ws"
    return base + "/", f"{socket_scheme}://{parts.netloc}{parts.path.rstrip('/')}{ROOT_PATH}"
