"""ChannelLink, the blocking data-channel link: chunking, limits, backpressure, abort and close.

The cases are in channel_check.py, run in a host of their own (aiortc needs
an address other than 127.0.0.1); each reports ``ok`` or ``FAIL`` with its
traceback.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from netns import Hosts, skip_without_netns

pytestmark = pytest.mark.timeout(240)

CHECK = Path(__file__).resolve().parent / "channel_check.py"


@pytest.fixture(scope="module")
def outcomes() -> dict[str, str]:
    pytest.importorskip("aiortc")
    skip_without_netns()
    with Hosts() as hosts:
        done = hosts.add("a").run([sys.executable, str(CHECK)], capture_output=True, text=True, timeout=200)
    assert done.returncode == 0, done.stderr
    found = {}
    for line in done.stdout.splitlines():
        verdict, _, rest = line.partition(" ")
        name, _, why = rest.partition(": ")
        found[name] = why if verdict == "FAIL" else "ok"
    return found


@pytest.mark.parametrize("case", [
    "frames_of_every_size_arrive_whole_and_in_order",
    "a_frame_over_the_limit_ends_the_link",
    "the_sender_waits_above_the_high_water_mark",
    "abort_from_another_thread_ends_both_sides",
    "close_lets_queued_frames_out_first",
    "a_text_message_inside_a_chunked_frame_ends_the_link",
])
def test_channel_link(outcomes: dict[str, str], case: str) -> None:
    assert outcomes.get(case) == "ok", outcomes.get(case, "the case did not run")
