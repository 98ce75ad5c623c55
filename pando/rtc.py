"""WebRTC data channels for a threaded program: one asyncio thread, blocking links.

aiortc is asyncio code and none of its objects is thread-safe, so every one of
them is made, used and closed on the :class:`RtcLoop` thread. Other threads
see a data channel as a :class:`ChannelLink`, which has the blocking API of a
WebSocket connection (:class:`pando.link.Link`): a session does not know which
one it holds. Framing on the channel is in ``docs/protocol.md``.

aiortc (and PyAV under it) takes half a second and 60 MB to import, so this
module imports it only when a data channel is first needed.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from concurrent.futures import Future
from typing import Any, Awaitable, Callable, Iterator, TypeVar

from pando import protocol, status
from pando.link import LinkClosed

#: The one data channel of a connection.
LABEL = "pando"
#: Largest message sent as is; a longer frame goes in binary chunks of this much at most.
CHUNK = 60 * 1024
#: A sender waits while more than HIGH_WATER bytes are queued, until LOW_WATER remain.
HIGH_WATER = 4 * 1024 * 1024
LOW_WATER = 1024 * 1024
#: A closing channel waits for what it queued (a bye, a big result) while that keeps moving:
#: it hangs up after STALL_SECONDS without progress, or DRAIN_SECONDS in all. SCTP retransmits a
#: lost chunk after at least 1 s, doubling each time: two losses in a row on a busy host stall a
#: healthy channel for 3 s.
STALL_SECONDS = 5.0
DRAIN_SECONDS = 60.0

_MORE, _LAST = b"\x01", b"\x00"
LOG = logging.getLogger("pando.webrtc")
_T = TypeVar("_T")
INSTALL_HINT = "WebRTC needs the aiortc package: pip install 'pando-computing[webrtc]'"


def _aiortc() -> Any:
    """The aiortc module, imported on first use."""
    try:
        import aiortc
    except ImportError:
        raise status.PandoError(INSTALL_HINT) from None
    return aiortc


def configuration(ice_servers: list[dict[str, Any]]) -> Any:
    """An ``RTCConfiguration`` with exactly these ICE servers (none: host candidates only, no STUN)."""
    aiortc = _aiortc()
    servers = [aiortc.RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
               for s in ice_servers]
    # iceServers=[] matters: aiortc falls back to a public STUN server when it is None.
    return aiortc.RTCConfiguration(iceServers=servers)


class RtcLoop:
    """The asyncio thread that owns every peer connection of this process."""

    def __init__(self, name: str = "pando-webrtc") -> None:
        _aiortc()  # fail here, with the install hint, not on the loop
        self._loop = asyncio.new_event_loop()
        # aiortc's stray errors (a peer gone mid-handshake) end that peer's link, not the run:
        # to the debug log, never raw to the terminal.
        self._loop.set_exception_handler(lambda _, context: LOG.debug("%s", context.get("message"), exc_info=context.get("exception")))
        self._connections: set[Any] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coroutine: Awaitable[_T], timeout: float | None) -> _T:
        """Run ``coroutine`` on the loop and wait for its outcome (``TimeoutError`` after ``timeout``)."""
        future = asyncio.run_coroutine_threadsafe(_wrap(coroutine), self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def submit(self, coroutine: Awaitable[_T]) -> Future[_T]:
        """Start ``coroutine`` on the loop; its outcome comes in the returned future."""
        return asyncio.run_coroutine_threadsafe(_wrap(coroutine), self._loop)

    def call(self, function: Callable[..., Any], *args: Any) -> None:
        """Call ``function(*args)`` on the loop soon."""
        try:
            self._loop.call_soon_threadsafe(function, *args)
        except RuntimeError:
            pass  # the loop is closed: the run is over

    def peer(self, ice_servers: list[dict[str, Any]]) -> Any:
        """A new ``RTCPeerConnection`` (on the loop only), closed by :meth:`stop` if nobody did."""
        connection = _aiortc().RTCPeerConnection(configuration(ice_servers))
        self._connections.add(connection)

        @connection.on("connectionstatechange")
        def _forget() -> None:
            if connection.connectionState == "closed":
                self._connections.discard(connection)

        return connection

    def stop(self, timeout: float = 3.0) -> None:
        """Close every peer connection, then the loop and its thread."""
        if not self._loop.is_running():
            return
        try:
            self.run(self._close_all(), timeout)
        except (TimeoutError, RuntimeError):
            pass  # a peer that does not close in time is dropped with the loop
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)

    async def _close_all(self) -> None:
        await asyncio.gather(*(c.close() for c in list(self._connections)), return_exceptions=True)
        # aiortc's own tasks (ICE checks of a peer that never closed) end with the loop, quietly.
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)


async def _wrap(coroutine: Awaitable[_T]) -> _T:
    return await coroutine


class ChannelLink:
    """A data channel with the blocking API of a WebSocket connection; see :class:`pando.link.Link`.

    Made on the loop by :func:`answer` or :func:`offer`; used from any thread.
    """

    def __init__(self, rtc: RtcLoop, connection: Any, channel: Any, limit: int) -> None:
        self._rtc = rtc
        self._pc = connection
        self._channel = channel
        self._limit = limit
        self._inbox: queue.SimpleQueue[str | LinkClosed] = queue.SimpleQueue()
        self._parts: list[bytes] = []
        self._size = 0
        # Bytes handed to the loop and not yet sent on (_pending), plus aiortc's
        # own buffer (_buffered), against the high-water mark.
        self._flow = threading.Condition()
        self._pending = 0
        self._buffered = 0
        self._closed: LinkClosed | None = None
        channel.bufferedAmountLowThreshold = LOW_WATER
        channel.on("message", self._on_message)
        channel.on("close", lambda: self._end("the data channel closed"))
        channel.on("bufferedamountlow", self._on_low)
        connection.on("connectionstatechange", self._on_state)

    # -- any thread --------------------------------------------------------

    def send(self, message: str) -> None:
        data = message.encode("utf-8")
        with self._flow:
            while self._closed is None and self._pending + self._buffered > HIGH_WATER:
                self._flow.wait(0.5)
            if self._closed is not None:
                raise self._closed
            self._pending += len(data)
        self._rtc.call(self._transmit, message, data)

    def recv(self, timeout: float | None = None) -> str:
        try:
            item = self._inbox.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError("no frame in time") from None
        if isinstance(item, LinkClosed):
            self._inbox.put(item)  # every later call sees the end too
            raise item
        return item

    def __iter__(self) -> Iterator[str]:
        while True:
            try:
                yield self.recv()
            except LinkClosed:
                return

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close once what was queued has gone out (a bye, say), or when it stops moving."""
        self._rtc.call(lambda: asyncio.ensure_future(self._close(drain=True)))

    def abort(self) -> None:
        self._end("aborted")
        self._rtc.call(lambda: asyncio.ensure_future(self._close(drain=False)))

    def limit(self, size: int) -> None:
        self._limit = size

    def direct(self, handler: Callable[[str], bool]) -> None:
        pass  # frames arrive on the asyncio loop, which must never wait on a session's work

    def __enter__(self) -> ChannelLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()

    # -- the loop ----------------------------------------------------------

    def _transmit(self, message: str, data: bytes) -> None:
        with self._flow:
            self._pending -= len(data)
        if self._closed is not None or self._channel.readyState != "open":
            return
        try:
            if len(data) <= CHUNK:
                self._channel.send(message)
            else:
                last = len(data) - CHUNK
                for start in range(0, len(data), CHUNK):
                    self._channel.send((_MORE if start < last else _LAST) + data[start:start + CHUNK])
        except Exception as exc:  # aiortc raises a variety here (InvalidStateError, ValueError)
            self._end(f"cannot send: {exc}")
            return
        with self._flow:
            self._buffered = self._channel.bufferedAmount

    def _on_low(self) -> None:
        with self._flow:
            self._buffered = self._channel.bufferedAmount
            self._flow.notify_all()

    def _on_message(self, message: str | bytes) -> None:
        if isinstance(message, str):
            if self._parts:
                self._end("a text message inside a chunked frame")
            elif len(message) > self._limit or (4 * len(message) > self._limit
                                                 and len(message.encode("utf-8")) > self._limit):
                self._end("frame too large")
            else:
                self._inbox.put(message)
            return
        if not message or message[:1] not in (_MORE, _LAST):
            self._end("a binary message that is no chunk")
            return
        self._size += len(message) - 1
        if self._size > self._limit:
            self._end("frame too large")
            return
        self._parts.append(message[1:])
        if message[:1] == _LAST:
            data, self._parts, self._size = b"".join(self._parts), [], 0
            try:
                self._inbox.put(data.decode("utf-8"))
            except UnicodeDecodeError:
                self._end("a chunked frame that is not UTF-8")

    def _on_state(self) -> None:
        if self._pc.connectionState in ("failed", "closed"):
            self._end(f"the connection {self._pc.connectionState}")

    def _end(self, reason: str) -> None:
        """The link is over: wake whoever waits on it (any thread)."""
        with self._flow:
            if self._closed is not None:
                return
            self._closed = LinkClosed(reason)
            self._flow.notify_all()
        self._inbox.put(self._closed)

    async def _close(self, drain: bool) -> None:
        now = time.monotonic()
        deadline, moved, left = now + DRAIN_SECONDS, now, self._unsent()
        while drain and left and self._channel.readyState == "open" and now < deadline and now - moved < STALL_SECONDS:
            await asyncio.sleep(0.02)
            now, before, left = time.monotonic(), left, self._unsent()
            if left < before:
                moved = now
        self._end("closed")
        await self._pc.close()

    def _unsent(self) -> int:
        """What was sent and is still on its way: queued here or in the channel (bytes), or unacknowledged (chunks)."""
        # A channel's bufferedAmount falls as soon as SCTP takes the data; closing
        # then would drop what SCTP has not sent or seen acknowledged (a bye, say).
        sctp = self._pc.sctp
        chunks = len(getattr(sctp, "_outbound_queue", ())) + len(getattr(sctp, "_sent_queue", ())) if sctp else 0
        return int(self._pending + self._channel.bufferedAmount + chunks)


async def answer(
    rtc: RtcLoop, offer_sdp: str, ice_servers: list[dict[str, Any]], limit: int, timeout: float,
    opened: Callable[[ChannelLink], None], expired: Callable[[], None],
) -> str:
    """Answer a joiner's offer; ``opened`` gets its link (on the loop) once the channel opens.

    A join whose channel has not opened within ``timeout`` seconds is closed,
    and ``expired`` is called (on the loop).
    """
    aiortc = _aiortc()
    connection = rtc.peer(ice_servers)
    done = False

    @connection.on("datachannel")
    def _channel(channel: Any) -> None:
        nonlocal done
        if done or channel.label != LABEL:
            return  # one channel per connection, ours
        done = True
        opened(ChannelLink(rtc, connection, channel, limit))

    def _expire() -> None:
        if not done:
            asyncio.ensure_future(connection.close())
            expired()

    asyncio.get_running_loop().call_later(timeout, _expire)
    try:
        await connection.setRemoteDescription(aiortc.RTCSessionDescription(sdp=offer_sdp, type="offer"))
        await connection.setLocalDescription(await connection.createAnswer())
    except BaseException:
        done = True  # no expiry for a join that never started
        await connection.close()
        raise
    return str(connection.localDescription.sdp)


class Offer:
    """A join under way on the joiner's side: the offer's SDP, then the answer opens the link."""

    def __init__(self, rtc: RtcLoop, connection: Any, channel: Any, opened: asyncio.Future[None]) -> None:
        self._rtc = rtc
        self._connection = connection
        self._channel = channel
        self._opened = opened
        self.sdp = str(connection.localDescription.sdp)

    async def accept(self, answer_sdp: str, timeout: float) -> ChannelLink:
        """Take the answer and wait up to ``timeout`` seconds for the channel to open."""
        session = _aiortc().RTCSessionDescription(sdp=answer_sdp, type="answer")
        try:
            await self._connection.setRemoteDescription(session)
            await asyncio.wait_for(self._opened, timeout)
        except BaseException:
            await self._connection.close()
            raise
        return ChannelLink(self._rtc, self._connection, self._channel, protocol.MAX_FRAME_BYTES)

    async def cancel(self) -> None:
        await self._connection.close()


async def offer(rtc: RtcLoop, ice_servers: list[dict[str, Any]]) -> Offer:
    """Start a join: a peer connection with our one channel, and its offer (candidates included)."""
    connection = rtc.peer(ice_servers)
    channel = connection.createDataChannel(LABEL, ordered=True)
    opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @channel.on("open")
    def _open() -> None:
        if not opened.done():
            opened.set_result(None)

    await connection.setLocalDescription(await connection.createOffer())  # aiortc gathers here: no trickle
    return Offer(rtc, connection, channel, opened)
