"""A volunteer's side of a WebRTC join: through a rendezvous, to an open data channel.

Open the signal socket, read the welcome (its ICE servers and time limit),
offer, take the answer, and wait for the channel: the steps of
``docs/protocol.md``, "Joining". The whole join is bounded by the bootstrap
timeout the root chose.
"""
from __future__ import annotations

import time

from websockets.sync.client import connect

from pando import protocol, rendezvous, rtc


class JoinFailed(Exception):
    """The join did not happen (no root there, a refusal, a timeout); worth trying again later."""


def join(signal_url: str, loop: rtc.RtcLoop, nodes: int = 1, avoid: tuple[str, ...] = ()) -> rtc.ChannelLink:
    """An open link to a parent in the tree of the root whose rendezvous is at ``signal_url``.

    ``nodes``: the subtree this volunteer brings; ``avoid``: node ids not to hang under.
    """
    with connect(signal_url, max_size=rendezvous.MAX_FRAME_BYTES, compression=None, proxy=None,
                 open_timeout=10, close_timeout=2) as socket:
        first = rendezvous.decode(socket.recv(timeout=protocol.GREETING_SECONDS), ("welcome", "bye"))
        if first["type"] == "bye":
            raise JoinFailed(first["message"])
        config = first["config"]
        deadline = time.monotonic() + config["bootstrap_timeout"]
        offer = loop.run(rtc.offer(loop, config["ice_servers"]), config["bootstrap_timeout"])
        try:
            socket.send(rendezvous.offer(offer.sdp, nodes, avoid))
            reply = rendezvous.decode(socket.recv(timeout=_left(deadline)), ("signal", "bye"))
            if reply["type"] == "bye" or reply["kind"] == "reject":
                raise JoinFailed(reply["message"])
            if reply["kind"] != "answer":
                raise protocol.ProtocolError(f"expected an answer, got {reply['kind']}")
            return loop.run(offer.accept(reply["sdp"], _left(deadline)), _left(deadline) + 1)
        except BaseException:
            loop.run(offer.cancel(), 5)
            raise


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the join took longer than the bootstrap timeout")
    return left
