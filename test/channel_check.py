"""Run inside a test host by test_channel_link.py: two real data channels in one process, checked case by case.

Prints one line per case, ``ok NAME`` or ``FAIL NAME: why``. (aiortc skips
127.0.0.1, so this runs in a network namespace with an address of its own.)
"""
from __future__ import annotations

import sys
import threading
import time
import traceback
from typing import Callable

from pando import rtc
from pando.link import LinkClosed

LOOPS = (rtc.RtcLoop("pando-webrtc-a"), rtc.RtcLoop("pando-webrtc-b"))


def pair(limit: int = 1 << 26) -> tuple[rtc.ChannelLink, rtc.ChannelLink]:
    """A joiner's link and the answerer's, open."""
    joiner_loop, answer_loop = LOOPS
    opened: list[rtc.ChannelLink] = []
    ready = threading.Event()
    offer = joiner_loop.run(rtc.offer(joiner_loop, []), 10)
    answer = answer_loop.run(rtc.answer(answer_loop, offer.sdp, [], limit, 10,
                                        opened=lambda link: (opened.append(link), ready.set()),
                                        expired=lambda: None), 10)
    joiner = joiner_loop.run(offer.accept(answer, 10), 11)
    assert ready.wait(10), "the answerer's channel never opened"
    return joiner, opened[0]


def ends(link: rtc.ChannelLink, why: str) -> None:
    """The link's next recv finds it closed, for a reason that says ``why``."""
    try:
        got = link.recv(10)
    except LinkClosed as exc:
        assert why in str(exc), exc
    else:
        raise AssertionError(f"a frame was delivered ({len(got)} characters) where the link should end: {why}")


def frames_of_every_size_arrive_whole_and_in_order() -> None:
    joiner, answerer = pair()
    sizes = [1, 10, rtc.CHUNK - 1, rtc.CHUNK, rtc.CHUNK + 1, 3 * rtc.CHUNK, 5 * 1024 * 1024]
    frames = [("é" if n % 2 else "x") * (size // 2 if n % 2 else size) for n, size in enumerate(sizes)]
    for frame in frames:
        joiner.send(frame)
    for frame in frames:
        got = answerer.recv(30)
        assert got == frame, f"a frame of {len(frame)} characters came back as {len(got)}"
    answerer.send("back")
    assert joiner.recv(10) == "back"


def a_frame_over_the_limit_ends_the_link() -> None:
    joiner, answerer = pair(limit=100_000)
    joiner.send("y" * 50_000)
    assert answerer.recv(10) == "y" * 50_000
    joiner.send("z" * 200_000)  # chunked, and over the answerer's limit
    ends(answerer, "too large")


def the_sender_waits_above_the_high_water_mark() -> None:
    joiner, answerer = pair()
    frame = "w" * 200_000
    most = 0
    received = []
    reader = threading.Thread(target=lambda: received.extend(answerer.recv(60) for _ in range(250)))
    reader.start()
    for _ in range(250):  # 50 MB, far faster than aiortc moves it
        joiner.send(frame)
        with joiner._flow:  # both at one moment: the loop moves bytes from one to the other
            most = max(most, joiner._pending + joiner._buffered)
    reader.join(120)
    assert len(received) == 250 and all(r == frame for r in received)
    markers = (rtc.HIGH_WATER + len(frame)) // rtc.CHUNK + 1  # aiortc counts each chunk's first byte too
    assert most <= rtc.HIGH_WATER + len(frame) + markers, f"{most} bytes queued"


def abort_from_another_thread_ends_both_sides() -> None:
    joiner, answerer = pair()
    threading.Timer(0.2, answerer.abort).start()
    started = time.monotonic()
    for link in (answerer, joiner):
        try:
            link.recv(15)
        except LinkClosed:
            pass
        else:
            raise AssertionError("a frame after abort")
    assert time.monotonic() - started < 15
    try:
        joiner.send("late")
    except LinkClosed:
        pass
    else:
        raise AssertionError("send on a closed link did not raise")


def close_lets_queued_frames_out_first() -> None:
    joiner, answerer = pair()
    for n in range(20):
        answerer.send(f"frame {n} " + "q" * 100_000)
    answerer.send("bye")
    answerer.close()
    got = [joiner.recv(30) for _ in range(21)]
    assert got[-1] == "bye", got[-1][:20]


def a_text_message_inside_a_chunked_frame_ends_the_link() -> None:
    joiner, answerer = pair()
    joiner_loop = LOOPS[0]
    channel = joiner._channel
    joiner_loop.call(channel.send, b"\x01" + b"part")
    joiner_loop.call(channel.send, "whole")
    ends(answerer, "chunked")


CASES: list[Callable[[], None]] = [
    frames_of_every_size_arrive_whole_and_in_order,
    a_frame_over_the_limit_ends_the_link,
    the_sender_waits_above_the_high_water_mark,
    abort_from_another_thread_ends_both_sides,
    close_lets_queued_frames_out_first,
    a_text_message_inside_a_chunked_frame_ends_the_link,
]

if __name__ == "__main__":
    for case in CASES:
        try:
            case()
            print(f"ok {case.__name__}", flush=True)
        except Exception:
            print(f"FAIL {case.__name__}: {traceback.format_exc()!r}", flush=True)
    for loop in LOOPS:
        loop.stop()
    sys.exit(0)
