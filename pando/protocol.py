"""The wire protocol between the root and its volunteers.

Every frame is one WebSocket text message holding one JSON object with a
``"type"`` key. ``docs/protocol.md`` describes the same thing in prose; the
JavaScript volunteer in ``pando/web/`` follows it too.

Items and results always carry the item id the root gave them, so answers may
arrive in any order and in any grouping. One frame may carry many items or
results: with a cheap function the cost of a frame dominates the cost of an
item.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Union

from pando import items

#: Bumped on any incompatible change; a volunteer speaking another version is
#: refused with a ``bye`` frame that says why. Version 2 added the join key.
VERSION = 2

#: Path of the WebSocket endpoint on the root's port.
VOLUNTEER_PATH = "/volunteer"

#: Path of the monitoring page's WebSocket feed.
MONITOR_PATH = "/monitor"

#: Largest frame either side accepts. A larger one closes that session.
MAX_FRAME_BYTES = 64 * 1024 * 1024

#: Largest frame the root accepts before a peer proved it was invited (its
#: hello, or a monitoring page's watch frame): small, so that anyone who can
#: reach the port costs the root next to nothing.
MAX_GREETING_BYTES = 4096

#: Seconds a peer has to send that first frame before it is dropped.
GREETING_SECONDS = 10.0

#: Most workers a volunteer may declare.
MAX_WORKERS = 1024

#: Longest device name kept, in characters.
MAX_NAME = 200

#: Most entries of a module frame's ``native_only``.
MAX_NATIVE_ONLY = 64

#: Largest integer a frame may carry (ids, counts): JSON's exact range.
MAX_INT = 2**53

#: Shortest interval a report may cover, in seconds: rates stay finite.
MIN_INTERVAL = 0.001
#: Longest time a parent may ask between a volunteer's result frames (``spacing``), in seconds.
MAX_SPACING = 1.0

#: Largest single item or result (UTF-8 bytes). Frames are packed so that one
#: such item always fits, even if JSON escaping makes it six times longer.
MAX_ITEM_BYTES = items.MAX_ITEM_BYTES

#: A volunteer's node id in the tree: 16 hex digits, random, for its lifetime.
NODE_ID = re.compile(r"[0-9a-f]{16}")

#: A device in a status row: its node id, or the session id its parent gave it (8 hex digits) when another
#: device had taken that node id there.
DEVICE_ID = re.compile(r"[0-9a-f]{8}(?:[0-9a-f]{8})?")

#: Most device rows a status frame carries (global monitoring), and most nodes a join may avoid.
MAX_DEVICES = 256
MAX_AVOID = 16

#: A joiner's id on a rendezvous: 32 hex digits.
JOINER_ID = re.compile(r"[0-9a-f]{32}")
#: Largest session description (an offer or answer, its candidates included).
MAX_SDP = 60 * 1024
#: Default seconds a WebRTC join may take, from the signal socket's opening to the open channel.
BOOTSTRAP_TIMEOUT = 60.0
MAX_ICE_SERVERS = 8

#: A run's id in module frames: 16 hex digits, random, one per run of ``pando``.
RUN_ID = re.compile(r"[0-9a-f]{16}")

#: Longest failure text a monitoring page is sent in a run's outcome, in characters.
MAX_FAILURE = 2000

#: Roles a volunteer may declare in its hello. ``local`` is the root's own
#: helper process, which only computes while nobody else is connected.
ROLES = ("volunteer", "local")


class ProtocolError(ValueError):
    """A frame that is not valid under this protocol."""


@dataclass(frozen=True)
class Hello:
    """Volunteer → root, first frame: who it is and how many workers it has."""

    name: str
    workers: int
    key: str
    role: str = "volunteer"
    protocol: int = VERSION
    #: Its node id, and whether it can take children over WebRTC (the tree).
    node: str = ""
    relay: bool = False
    #: Whether it honours the module frame's ``raw``: volunteers that predate
    #: it would type the items of a ``--raw`` run, so such a run refuses them.
    raw: bool = False
    type = "hello"

    def payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {"protocol": self.protocol, "name": self.name, "workers": self.workers,
                               "role": self.role, "key": self.key}
        if self.node:
            out["node"] = self.node
        if self.relay:
            out["relay"] = True
        if self.raw:
            out["raw"] = True
        return out


@dataclass(frozen=True)
class Watch:
    """Monitoring page → root, first frame on the feed: the join key."""

    key: str
    type = "watch"

    def payload(self) -> dict[str, Any]:
        return {"key": self.key}


@dataclass(frozen=True)
class Module:
    """Root → volunteer, answer to hello: the session id, settings and the user's module."""

    id: str
    filename: str
    source: str
    heartbeat_ms: int
    #: Items per worker the session may hold; with ``adaptive``, those it starts with.
    batch_size: int
    reporting_interval: float = 3.0
    #: Seconds one item may run on a worker before the volunteer gives it up
    #: (reports it lost and replaces the worker); None: no limit.
    timeout: float | None = None
    #: What a relay needs to take children, when there is a tree.
    tree: Tree | None = None
    #: The function gets each item's text as it is, not typed (``--raw``).
    raw: bool = False
    #: The files that go with the module (:mod:`pando.bundle`, base64), "" for none.
    bundle: str = ""
    #: The packages it needs that a browser cannot have, each with why: browsers refuse it.
    native_only: tuple[str, ...] = ()
    #: The run's id: a volunteer that joins again and finds another run starts afresh ("": not said).
    run: str = ""
    #: The session holds what the volunteer asks for (``want`` in its result frames), and a relay
    #: lends its own children the same way.
    adaptive: bool = False
    type = "module"

    def payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "filename": self.filename,
            "source": self.source,
            "heartbeat": self.heartbeat_ms,
            "batch_size": self.batch_size,
            "reporting_interval": self.reporting_interval,
        }
        if self.timeout is not None:  # absent means no limit: the frame stays as it was without --timeout
            out["timeout"] = self.timeout
        if self.raw:  # absent means typed items, as before --raw
            out["raw"] = True
        if self.run:
            out["run"] = self.run
        if self.tree is not None:
            out.update(self.tree.payload())
        if self.bundle:
            out["bundle"] = self.bundle
        if self.native_only:
            out["native_only"] = list(self.native_only)
        if self.adaptive:
            out["adaptive"] = True
        return out


@dataclass(frozen=True)
class Tree:
    """The tree's part of a module frame: the parent's id and settings for taking children."""

    degree: int
    node: str
    depth: int
    ice_servers: list[dict[str, Any]] = field(default_factory=list)
    bootstrap_timeout: float = 60.0
    monitoring: str = "local"

    def payload(self) -> dict[str, Any]:
        return {"degree": self.degree, "node": self.node, "depth": self.depth, "ice_servers": self.ice_servers,
                "bootstrap_timeout": self.bootstrap_timeout, "monitoring": self.monitoring}


@dataclass(frozen=True)
class Lend:
    """Root → volunteer: items to compute, as ``(id, text)`` pairs; and, when it changed, how long the
    parent asks the volunteer to let its results gather between result frames (``spacing``, seconds)."""

    items: list[tuple[int, str]]
    spacing: float | None = None
    type = "lend"

    def payload(self) -> dict[str, Any]:
        if self.spacing is None:
            return {"items": self.items}
        return {"items": self.items, "spacing": self.spacing}


@dataclass(frozen=True)
class Result:
    """Volunteer → root: finished items, as ``(id, output line)`` pairs; and, under an adaptive
    module, how many items it would like to hold at once from now on (``want``)."""

    results: list[tuple[int, str]]
    want: int | None = None
    type = "result"

    def payload(self) -> dict[str, Any]:
        if self.want is None:
            return {"results": self.results}
        return {"results": self.results, "want": self.want}


@dataclass(frozen=True)
class Error:
    """Volunteer → root: an item failed, or (``id`` None) the volunteer cannot work.

    ``lost`` says the item's computation was lost rather than failed (the worker
    process died under it): the root counts it like a lost holder and lends the
    item again, up to its retry limit.
    """

    message: str
    id: int | None = None
    traceback: str = ""
    lost: bool = False
    type = "error"

    def payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {"message": self.message}
        if self.id is not None:
            out["id"] = self.id
        if self.traceback:
            out["traceback"] = self.traceback
        if self.lost:
            out["lost"] = True
        return out


@dataclass(frozen=True)
class Report:
    """Volunteer → root, every reporting interval: what its workers did in it."""

    interval: float
    items: int
    cpu_time: float
    data_transfer_time: float
    units: float
    type = "report"

    def payload(self) -> dict[str, Any]:
        return {
            "interval": self.interval,
            "items": self.items,
            "cpu_time": self.cpu_time,
            "data_transfer_time": self.data_transfer_time,
            "units": self.units,
        }


@dataclass(frozen=True)
class Heartbeat:
    """Either way: I am alive. The root answers each one with one of its own."""

    type = "heartbeat"

    def payload(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class Bye:
    """Root → volunteer, last frame: ``done`` (the job is over) or ``refused``."""

    reason: str
    message: str = ""
    type = "bye"

    def payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reason": self.reason}
        if self.message:
            out["message"] = self.message
        return out


@dataclass(frozen=True)
class Status:
    """Child → parent: its subtree, as soon as it joined, on any change, and every reporting interval."""

    nodes: int
    workers: int
    free: int
    depth: int
    #: Levels below it to its nearest free child slot (0: it has room itself; None: no room in its subtree).
    nearest: int | None = None
    #: With global monitoring: a row per device in the subtree, and how many were left out.
    devices: list[dict[str, Any]] | None = None
    more: int = 0
    type = "status"

    def payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {"nodes": self.nodes, "workers": self.workers, "free": self.free, "depth": self.depth}
        if self.nearest is not None:
            out["nearest"] = self.nearest
        if self.devices is not None:
            out["devices"] = self.devices
            out["more"] = self.more
        return out


@dataclass(frozen=True)
class Join:
    """Parent → child: a joiner's offer to take, or to pass down."""

    joiner: str
    sdp: str
    nodes: int = 1
    avoid: tuple[str, ...] = ()
    hops: int = 1
    type = "join"

    def payload(self) -> dict[str, Any]:
        return {"from": self.joiner, "sdp": self.sdp, "nodes": self.nodes, "avoid": list(self.avoid),
                "hops": self.hops}


@dataclass(frozen=True)
class Answer:
    """Child → parent: the answer to a join (``sdp``), or why nobody below took it (``message``)."""

    joiner: str
    sdp: str = ""
    message: str = ""
    type = "answer"

    def payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {"to": self.joiner}
        if self.sdp:
            out["sdp"] = self.sdp
        else:
            out["message"] = self.message
        return out


@dataclass(frozen=True)
class Reset:
    """Parent → child: everything the parent lent is void (it lost its own parent)."""

    type = "reset"

    def payload(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class Outcome:
    """Root → monitoring page, in the run's last status: how the run ended.

    Not a frame of its own: the ``outcome`` field of the last status object on
    the feed (docs/monitoring.md). ``failure`` says why a run did not succeed
    ("" when it did); a page shows it as text.
    """

    status: int
    failure: str = ""

    def payload(self) -> dict[str, Any]:
        return {"status": self.status, "failure": self.failure[:MAX_FAILURE] or None}


Frame = Union[Hello, Watch, Module, Lend, Result, Error, Report, Heartbeat, Bye, Status, Join, Answer, Reset]

#: Frames each side may receive.
FROM_VOLUNTEER = ("hello", "result", "error", "report", "heartbeat", "status", "answer")
FROM_ROOT = ("module", "lend", "heartbeat", "bye", "join", "reset")
FROM_VIEWER = ("watch",)

_HEARTBEAT = Heartbeat()

# Made once: json.dumps and json.loads with options build a new encoder or decoder on every call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def encode(frame: Frame) -> str:
    """The JSON text of a frame."""
    body = frame.payload()
    body["type"] = frame.type
    return _ENCODER.encode(body)


def decode(text: str | bytes, allowed: tuple[str, ...]) -> Frame:
    """Parse and check one frame; raise :class:`ProtocolError` if it is not valid.

    ``allowed`` names the frame types this side accepts (``FROM_VOLUNTEER`` on
    the root, ``FROM_ROOT`` on a volunteer).
    """
    if isinstance(text, bytes):
        raise ProtocolError("binary frame; the protocol uses text frames")
    try:
        body = _DECODER.decode(text)
    except ValueError as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError("JSON nested too deeply") from None
    if not isinstance(body, dict):
        raise ProtocolError("a frame must be a JSON object")
    kind = body.get("type")
    if kind not in allowed:
        raise ProtocolError(f"unexpected frame type {kind!r}")
    try:
        return _PARSERS[kind](body)
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"malformed {kind} frame: {exc}") from None


def _no_constant(name: str) -> None:
    # NaN and Infinity are not JSON; Python's parser accepts them unless told not to.
    raise ValueError(f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def _str(body: dict[str, Any], key: str, default: str | None = None) -> str:
    value = body.get(key, default)
    if not isinstance(value, str):
        raise ValueError(f"{key!r} must be a string")
    return value


def _bool(body: dict[str, Any], key: str) -> bool:
    """An optional flag: absent is false."""
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise ValueError(f"{key!r} must be a boolean")
    return value


def _int(body: dict[str, Any], key: str, minimum: int = 0, maximum: int = MAX_INT) -> int:
    value = body[key]
    if type(value) is not int or not minimum <= value <= maximum:
        raise ValueError(f"{key!r} must be an integer from {minimum} to {maximum}")
    return value


def _number(body: dict[str, Any], key: str, default: float | None = None, minimum: float = 0.0) -> float:
    """A finite number >= ``minimum`` (and > 0 when ``minimum`` is above 0)."""
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not minimum <= value <= MAX_INT:
        raise ValueError(f"{key!r} must be a number from {minimum:g} to {MAX_INT}")
    return value


def _pairs(value: Any, key: str, one_line: bool = False) -> list[tuple[int, str]]:
    """Check a list of ``[id, text]`` pairs; the hot path of the protocol.

    With ``one_line``, a text holding a line break is refused: a result is
    written as exactly one output line.
    """
    if not isinstance(value, list):
        raise ValueError(f"{key!r} must be a list")
    pairs = []
    for pair in value:
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or type(pair[0]) is not int
            or not 0 <= pair[0] <= MAX_INT
            or not isinstance(pair[1], str)
        ):
            raise ValueError(f"{key!r} must hold [id, text] pairs")
        if one_line:
            _one_line(pair[1], key)
        pairs.append((pair[0], pair[1]))
    return pairs


def _one_line(text: str, key: str) -> None:
    """A result line: no line break, and UTF-8 text (JSON escapes can smuggle in lone surrogates)."""
    if "\n" in text or "\r" in text:
        raise ValueError(f"{key!r} text must not hold a line break")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{key!r} text is not valid Unicode") from None


def _parse_hello(body: dict[str, Any]) -> Hello:
    version = _int(body, "protocol")
    if version != VERSION:  # the rest may not parse; the root answers with a clear refusal
        return Hello(name="", workers=1, key="", protocol=version)
    role = _str(body, "role", "volunteer")
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    name = _str(body, "name", "")
    return Hello(name=name[:MAX_NAME], workers=_int(body, "workers", 1, MAX_WORKERS), key=_str(body, "key", ""),
                 role=role, protocol=version, node=_node(body, "node", optional=True), relay=_bool(body, "relay"),
                 raw=_bool(body, "raw"))


def _node(body: dict[str, Any], key: str, optional: bool = False) -> str:
    value = body.get(key, "" if optional else None)
    if optional and value == "":
        return ""
    if not isinstance(value, str) or not NODE_ID.fullmatch(value):
        raise ValueError(f"{key!r} must be a node id (16 hex digits)")
    return value


def _parse_error(body: dict[str, Any]) -> Error:
    item = body.get("id")
    if item is not None and (type(item) is not int or item < 0):
        raise ValueError("'id' must be an item id")
    return Error(message=_str(body, "message"), id=item, traceback=_str(body, "traceback", ""),
                 lost=_bool(body, "lost"))


def _parse_module(body: dict[str, Any]) -> Module:
    return Module(
        id=_str(body, "id"),
        filename=_str(body, "filename"),
        source=_str(body, "source"),
        heartbeat_ms=_int(body, "heartbeat", 1),
        batch_size=_int(body, "batch_size", 1),
        reporting_interval=_number(body, "reporting_interval", 3.0, minimum=MIN_INTERVAL),
        timeout=_optional_positive(body, "timeout"),
        tree=_parse_tree(body) if "degree" in body else None,
        raw=_bool(body, "raw"),
        bundle=_str(body, "bundle", ""),
        native_only=_native_only(body.get("native_only", [])),
        run=_run_id(body),
        adaptive=_bool(body, "adaptive"),
    )


def _native_only(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > MAX_NATIVE_ONLY or not all(
            isinstance(entry, str) and 0 < len(entry) <= MAX_NAME for entry in value):
        raise ValueError(f"'native_only' must be a list of at most {MAX_NATIVE_ONLY} short texts")
    return tuple(value)


def _run_id(body: dict[str, Any]) -> str:
    value = body.get("run", "")
    if not isinstance(value, str) or (value and not RUN_ID.fullmatch(value)):
        raise ValueError("'run' must be a run id (16 hex digits)")
    return value


def _parse_tree(body: dict[str, Any]) -> Tree:
    config = check_join_config(body)
    monitoring = body.get("monitoring", "local")
    if monitoring not in ("local", "global"):
        raise ValueError("'monitoring' must be local or global")
    return Tree(degree=_int(body, "degree", 0, 1000), node=_node(body, "node"), depth=_int(body, "depth", 1, 1000),
                ice_servers=config["ice_servers"], bootstrap_timeout=config["bootstrap_timeout"],
                monitoring=monitoring)


def _parse_status(body: dict[str, Any]) -> Status:
    devices = body.get("devices")
    if devices is not None:
        if not isinstance(devices, list) or len(devices) > MAX_DEVICES:
            raise ValueError(f"'devices' must be a list of at most {MAX_DEVICES} rows")
        devices = [_device(row) for row in devices]
    return Status(nodes=_int(body, "nodes", 1), workers=_int(body, "workers", 0), free=_int(body, "free"),
                  depth=_int(body, "depth", 0, 1000),
                  nearest=_int(body, "nearest", 0, 1000) if body.get("nearest") is not None else None,
                  devices=devices, more=_int(body, "more") if "more" in body else 0)


def _device(row: Any) -> dict[str, Any]:
    """One device row of a status frame, checked; the name is kept as text (made printable where shown)."""
    if not isinstance(row, dict):
        raise ValueError("a device row must be an object")
    parent = row.get("parent")
    if parent is not None and (not isinstance(parent, str) or not DEVICE_ID.fullmatch(parent)):
        raise ValueError("a device's 'parent' must be a device id or null")
    device = row.get("id")
    if not isinstance(device, str) or not DEVICE_ID.fullmatch(device):
        raise ValueError("a device's 'id' must be a node id or a session id")
    return {"id": device, "name": _str(row, "name", "")[:MAX_NAME], "parent": parent,
            "depth": _int(row, "depth", 1, 1000), "items": _int(row, "items"),
            "workers": _int(row, "workers", 0, MAX_WORKERS)}


def _parse_join(body: dict[str, Any]) -> Join:
    return Join(joiner=_joiner(body, "from"), sdp=_bounded(body, "sdp", MAX_SDP), nodes=_int(body, "nodes", 1),
                avoid=check_avoid(body.get("avoid", [])), hops=_int(body, "hops", 1, 1000))


def check_avoid(avoid: Any) -> tuple[str, ...]:
    """A join's ``avoid``: at most MAX_AVOID node ids."""
    if not isinstance(avoid, list) or len(avoid) > MAX_AVOID or not all(
            isinstance(node, str) and NODE_ID.fullmatch(node) for node in avoid):
        raise ValueError(f"'avoid' must be a list of at most {MAX_AVOID} node ids")
    return tuple(avoid)


def _parse_answer(body: dict[str, Any]) -> Answer:
    joiner = _joiner(body, "to")
    if "sdp" in body:
        return Answer(joiner, sdp=_bounded(body, "sdp", MAX_SDP))
    return Answer(joiner, message=_str(body, "message")[:300] or "no answer")


def _joiner(body: dict[str, Any], key: str) -> str:
    value = _str(body, key)
    if not JOINER_ID.fullmatch(value):
        raise ValueError(f"{key!r} must be a joiner id (32 hex digits)")
    return value


def _bounded(body: dict[str, Any], key: str, limit: int = 512) -> str:
    """A non-empty string of at most ``limit`` characters."""
    value = body[key]
    if not isinstance(value, str) or not value or len(value) > limit:
        raise ValueError(f"{key!r} must be a string of 1 to {limit} characters")
    return value


def check_join_config(config: Any) -> dict[str, Any]:
    """A join config from the network, checked field by field; only known keys are kept."""
    if not isinstance(config, dict):
        raise ValueError("'config' must be an object")
    servers = config.get("ice_servers", [])
    if not isinstance(servers, list) or len(servers) > MAX_ICE_SERVERS:
        raise ValueError(f"'ice_servers' must be a list of at most {MAX_ICE_SERVERS}")
    checked = []
    for server in servers:
        if not isinstance(server, dict):
            raise ValueError("an ICE server must be an object")
        entry = {"urls": _bounded(server, "urls")}
        if not entry["urls"].startswith(("stun:", "turn:", "turns:")):
            raise ValueError("an ICE server's urls must start with stun:, turn: or turns:")
        for key in ("username", "credential"):
            if server.get(key) is not None:
                entry[key] = _bounded(server, key)
        checked.append(entry)
    timeout = config.get("bootstrap_timeout", BOOTSTRAP_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 1 <= timeout <= 3600:
        raise ValueError("'bootstrap_timeout' must be a number of seconds from 1 to 3600")
    return {"ice_servers": checked, "bootstrap_timeout": timeout}


def _optional_positive(body: dict[str, Any], key: str) -> float | None:
    """A finite number above 0, or None when absent or null (optional fields of version 2)."""
    if body.get(key) is None:
        return None
    value = _number(body, key)
    if value <= 0:
        raise ValueError(f"{key!r} must be a number above 0, or null")
    return value


def _spacing(body: dict[str, Any]) -> float | None:
    if body.get("spacing") is None:
        return None
    value = _number(body, "spacing")
    if value > MAX_SPACING:
        raise ValueError(f"'spacing' must be a number of seconds from 0 to {MAX_SPACING:g}")
    return value


def _parse_report(body: dict[str, Any]) -> Report:
    return Report(
        interval=_number(body, "interval", minimum=MIN_INTERVAL),
        items=_int(body, "items"),
        cpu_time=_number(body, "cpu_time"),
        data_transfer_time=_number(body, "data_transfer_time", 0.0),
        units=_number(body, "units", body.get("items")),
    )


_PARSERS: dict[str, Callable[[dict[str, Any]], Frame]] = {
    "hello": _parse_hello,
    "watch": lambda body: Watch(_str(body, "key")),
    "module": _parse_module,
    "lend": lambda body: Lend(_pairs(body["items"], "items"), _spacing(body)),
    "result": lambda body: Result(_pairs(body["results"], "results", one_line=True),
                                  _int(body, "want", 1) if "want" in body else None),
    "error": _parse_error,
    "report": _parse_report,
    "heartbeat": lambda body: _HEARTBEAT,
    "bye": lambda body: Bye(reason=_str(body, "reason"), message=_str(body, "message", "")),
    "status": _parse_status,
    "join": _parse_join,
    "answer": _parse_answer,
    "reset": lambda body: Reset(),
}


def pack(pairs: list[tuple[int, str]], limit: int = MAX_FRAME_BYTES // 8) -> list[list[tuple[int, str]]]:
    """Split ``(id, text)`` pairs into groups of at most ``limit`` characters of text.

    Counting characters is cheap and safe: JSON-encoded, a character takes at
    most six bytes, so a group of ``MAX_FRAME_BYTES // 8`` characters stays
    inside a frame, and so does a lone item of :data:`MAX_ITEM_BYTES`.
    """
    if sum(len(text) for _, text in pairs) + 16 * len(pairs) <= limit:
        return [pairs]  # the usual case: everything fits one frame
    groups: list[list[tuple[int, str]]] = [[]]
    size = 0
    for pair in pairs:
        if groups[-1] and size + len(pair[1]) > limit:
            groups.append([])
            size = 0
        groups[-1].append(pair)
        size += len(pair[1]) + 16
    return groups


def frame_limit(capacity: int) -> int:
    """Largest frame an invited volunteer holding ``capacity`` items can need: its results, escaped."""
    return min(MAX_FRAME_BYTES, MAX_GREETING_BYTES + capacity * (6 * MAX_ITEM_BYTES + 64))


__all__ = [
    "VERSION", "VOLUNTEER_PATH", "MONITOR_PATH", "MAX_FRAME_BYTES", "MAX_GREETING_BYTES", "GREETING_SECONDS", "MAX_ITEM_BYTES",
    "MAX_WORKERS", "MAX_NAME", "MAX_NATIVE_ONLY", "MAX_INT", "MIN_INTERVAL", "MAX_SPACING", "ROLES", "ProtocolError",
    "Hello", "Watch", "Module", "Lend", "Result", "Error", "Report", "Heartbeat", "Bye", "Frame",
    "Tree", "Status", "Join", "Answer", "Reset", "Outcome", "NODE_ID", "RUN_ID", "MAX_FAILURE", "MAX_DEVICES", "MAX_AVOID",
    "FROM_VOLUNTEER", "FROM_ROOT", "FROM_VIEWER", "encode", "decode", "pack", "frame_limit",
]
