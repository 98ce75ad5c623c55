"""Many lightweight volunteer sessions from one process: real WebSockets, the real protocol.

    python bench/swarm.py URL --sessions K --task SECONDS --start-at MONOTONIC [--first-id I]

Each session is its own WebSocket connection to the root (URL with ``#key=KEY;``)
and speaks the protocol through ``pando.protocol``: hello (one worker) → module → lend / result /
heartbeat → bye. It does not run the module's code: it *emulates* the
benchmark's function (``x * x`` after ``SECONDS`` of ``asyncio.sleep``, what
examples/square.py does with ``time.sleep``) so that a thousand sessions fit in
a couple of processes. Items held are computed one at a time, in order, as a
one-worker volunteer does, and answered as pando-volunteer answers them
(``pando.pace``): results share a frame for up to ``Pace.window()`` while more
are owed, the last goes at once, and an adaptive module hears ``want``.
``--frame-per-result`` sends each result alone instead, without ``want``
(volunteers before adaptive batching), for comparison. Sessions all start connecting at ``MONOTONIC``
(CLOCK_MONOTONIC is shared by the processes of a machine); without
``--start-at`` the process says ``ready`` on stderr and reads that time from
stdin, so that start-up costs of the harness never count as join time. On exit it prints
one JSON object: per-session join times and counts, and completion times.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pando import pace, protocol  # noqa: E402
from pando.volunteer import parse_url  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402


async def session(index: int, given: str, task: float, stats: dict[str, Any], done_times: list[float],
                  grouped: bool = True) -> None:
    url, key = parse_url(given)
    record: dict[str, Any] = {"connect_start": time.monotonic(), "attempts": 0, "items": 0}
    stats["sessions"].append(record)
    while True:
        record["attempts"] += 1
        try:
            async with connect(url, compression=None, max_size=protocol.MAX_FRAME_BYTES, open_timeout=120,
                               ping_interval=None, close_timeout=2, proxy=None) as ws:
                record["open"] = time.monotonic()
                await ws.send(protocol.encode(protocol.Hello(f"swarm-{index}", 1, key)))
                module = protocol.decode(await ws.recv(), protocol.FROM_ROOT)
                if not isinstance(module, protocol.Module):
                    record["end"] = f"refused: {module}"
                    return
                record["module"] = time.monotonic()
                queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
                paced = pace.Pace(1)
                paced.round_trip(record["module"] - record["open"])
                outbox: list[tuple[int, str]] = []
                sent_at = -math.inf
                timer: asyncio.TimerHandle | None = None

                def send_later() -> None:
                    nonlocal timer
                    timer = None
                    if outbox:
                        helpers.append(asyncio.create_task(send_up()))

                async def send_up() -> None:
                    nonlocal sent_at, timer
                    if timer is not None:
                        timer.cancel()
                        timer = None
                    results = outbox[:]
                    outbox.clear()
                    sent_at = time.monotonic()
                    want = paced.want(0) if module.adaptive and grouped else None
                    await ws.send(protocol.encode(protocol.Result(results, want)))
                    paced.sent()

                async def compute() -> None:
                    nonlocal timer
                    while True:
                        item_id, text = await queue.get()
                        began = time.monotonic()
                        await asyncio.sleep(task)
                        paced.computed(1, time.monotonic() - began)
                        outbox.append((item_id, str(int(text) ** 2)))
                        record["items"] += 1
                        done_times.append(time.monotonic())
                        # As pando.node.Upstream: the last result owed, or one after a quiet spell, goes at
                        # once; others wait for the window since the last frame to end, sharing its frame.
                        wait = sent_at + paced.window() - time.monotonic()
                        if not grouped or queue.empty() or wait <= 0:
                            await send_up()
                        elif timer is None:
                            timer = asyncio.get_running_loop().call_later(wait, send_later)

                async def heartbeat() -> None:
                    while True:
                        await asyncio.sleep(module.heartbeat_ms / 3000)
                        await ws.send(protocol.encode(protocol.Heartbeat()))

                helpers = [asyncio.create_task(compute()), asyncio.create_task(heartbeat())]
                try:
                    async for message in ws:
                        frame = protocol.decode(message, protocol.FROM_ROOT)
                        if isinstance(frame, protocol.Lend):
                            paced.lent(frame.spacing)
                            if "first_lend" not in record:
                                record["first_lend"] = time.monotonic()
                            for pair in frame.items:
                                queue.put_nowait((pair[0], pair[1]))
                        elif isinstance(frame, protocol.Bye):
                            record["end"] = frame.reason
                            return
                finally:
                    if timer is not None:
                        timer.cancel()
                    for helper in helpers:
                        helper.cancel()
                record["end"] = "closed"
                return
        except Exception as exc:  # noqa: BLE001 - a harness reports, it does not crash
            record["error"] = f"{type(exc).__name__}: {exc}"
            if record["attempts"] >= 5 or "first_lend" in record:
                return
            await asyncio.sleep(0.5 * record["attempts"])


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    stats: dict[str, Any] = {"sessions": []}
    done_times: list[float] = []
    start_at = args.start_at
    if not start_at:  # wait for the start time on stdin, after saying we are ready
        print("ready", file=sys.stderr, flush=True)
        start_at = float(await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline))
    delay = start_at - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
    stats["start_at"] = start_at
    tasks = [asyncio.create_task(session(args.first_id + i, args.url, args.task, stats, done_times,
                                         not args.frame_per_result))
             for i in range(args.sessions)]
    await asyncio.wait(tasks, timeout=args.timeout)
    for task in tasks:
        task.cancel()
    stats["done_times"] = done_times
    return stats


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--task", type=float, required=True)
    parser.add_argument("--start-at", type=float, default=0.0)
    parser.add_argument("--first-id", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--frame-per-result", action="store_true")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main_async(args))))


if __name__ == "__main__":
    main()
