"""A node's door for WebRTC children: it answers their offers and gives each open channel a session.

At the root, offers come from its own hub (joiners on its LAN) or from a
``pando-server`` through the :class:`pando.uplink.Uplink`; at a relay, from its
parent. Either way the gateway answers on the :class:`pando.rtc.RtcLoop` and,
once a joiner's channel opens, runs an ordinary session over it in a thread of
its own. The loop, and aiortc with it, starts on the first offer: a run
without WebRTC joiners never imports it.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from pando import protocol, rtc, status
from pando.link import Link

LOG = logging.getLogger("pando.webrtc.gateway")

#: Answers a joiner: (its id, the answer's SDP, or else why not).
Reply = Callable[[str, str, str], None]


class Gateway:
    """Answers joins with the run's ICE servers; ``start`` runs a session over each opened link.

    ``ended`` is called for an offer taken whose join failed (no answer, or no channel in time);
    a join whose channel opened is the session's from then on.
    """

    def __init__(self, config: dict[str, Any], start: Callable[[Link], None], ended: Callable[[], None]) -> None:
        self.config = config
        self._start = start
        self._ended = ended
        self._lock = threading.Lock()
        self._rtc: rtc.RtcLoop | None = None
        self._stopped = False

    def offer(self, joiner: str, sdp: str, reply: Reply) -> None:
        """Answer ``joiner``'s offer, from a thread of its own: the caller reads a socket."""
        threading.Thread(target=self._answer, args=(joiner, sdp, reply), name="pando-join", daemon=True).start()

    def stop(self) -> None:
        """Close every peer connection; sessions over them see their link end."""
        with self._lock:
            self._stopped = True
            loop, self._rtc = self._rtc, None
        if loop is not None:
            loop.stop()

    def _loop(self) -> rtc.RtcLoop:
        with self._lock:
            if self._stopped:
                raise status.PandoError("the run is over")
            if self._rtc is None:
                self._rtc = rtc.RtcLoop()
            return self._rtc

    def _answer(self, joiner: str, sdp: str, reply: Reply) -> None:
        timeout = self.config["bootstrap_timeout"]
        try:
            loop = self._loop()
            answer = loop.run(
                rtc.answer(loop, sdp, self.config["ice_servers"], protocol.MAX_GREETING_BYTES, timeout,
                           opened=self._opened, expired=self._ended),
                timeout,
            )
        except status.PandoError as exc:
            self._ended()
            reply(joiner, "", str(exc))
        except Exception as exc:  # aiortc's errors on an offer it cannot take vary (ValueError, parse errors)
            self._ended()
            LOG.debug("cannot answer %s: %r", joiner, exc)
            reply(joiner, "", "cannot answer this offer")
        else:
            reply(joiner, answer, "")

    def _opened(self, link: rtc.ChannelLink) -> None:
        threading.Thread(target=self._start, args=(link,), name="pando-session", daemon=True).start()
