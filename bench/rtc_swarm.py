"""WebRTC joiners from one process: real signal sockets, real data channels, the real protocol.

    python bench/rtc_swarm.py SIGNAL_URL KEY --sessions K --mode sequential|crowd [--task S] [--gap S]
                              [--hold S] [--timeout S]

Each joiner calls ``pando.joiner.join`` (signal socket → welcome → offer →
answer → open data channel) on the process's one :class:`pando.rtc.RtcLoop`,
from a thread of its own, then speaks protocol v1 over the channel through
``pando.protocol``, as bench/swarm.py does over WebSocket: hello (one worker)
→ module → lend / result / heartbeat. It emulates the function (``x * x``
after ``S`` seconds of sleep) rather than running the module, and stays
connected, computing, until every joiner has had its first ``lend`` (plus
``--hold`` seconds); then it closes its channel.

``sequential``: one join after another; the next starts ``--gap`` seconds
after the previous one's first ``lend``. ``crowd``: every thread waits at a
barrier and they all call ``join`` at the same instant. Before the first
join, the process makes (and drops) one offer of its own, so the one-time
costs of a fresh aiortc in this process (lazy imports, first certificate) are
paid outside the measurements and reported as ``warmup_offer_s``.

Per joiner: ``start`` (just before ``join``: the signal socket opens first),
``open`` (``join`` returned: the channel is open), ``module``, ``first_lend``
(all ``time.monotonic()``), ``items`` computed, ``error``. Printed as one JSON
object on stdout at the end, with the process's CPU seconds (all threads)
during the joins.
"""
from __future__ import annotations

import argparse
import json
import queue
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pando import joiner, protocol, rtc  # noqa: E402
from pando.link import LinkClosed  # noqa: E402


def cpu_now() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Joiner:
    def __init__(self, index: int, url: str, key: str, loop: rtc.RtcLoop, task: float) -> None:
        self.index = index
        self.url = url
        self.key = key
        self.loop = loop
        self.task = task
        self.record: dict[str, Any] = {"index": index, "items": 0}
        self.lent = threading.Event()  # first lend received, or the join failed
        self.link: rtc.ChannelLink | None = None
        self._queue: queue.SimpleQueue[tuple[int, str] | None] = queue.SimpleQueue()
        self._heartbeat_s = 10.0

    def run(self) -> None:
        record = self.record
        record["start"] = time.monotonic()
        try:
            link = joiner.join(self.url, self.loop)
            record["open"] = time.monotonic()
            self.link = link
            link.send(protocol.encode(protocol.Hello(f"rtc-swarm-{self.index}", 1, self.key)))
            module = protocol.decode(link.recv(timeout=30), protocol.FROM_ROOT)
            if not isinstance(module, protocol.Module):
                raise RuntimeError(f"expected the module, got {module}")
            record["module"] = time.monotonic()
            self._heartbeat_s = module.heartbeat_ms / 3000
            threading.Thread(target=self._compute, daemon=True).start()
            for message in link:
                frame = protocol.decode(message, protocol.FROM_ROOT)
                if isinstance(frame, protocol.Lend):
                    if "first_lend" not in record:
                        record["first_lend"] = time.monotonic()
                        record["first_lend_items"] = len(frame.items)
                        self.lent.set()
                    for pair in frame.items:
                        self._queue.put((pair[0], pair[1]))
                elif isinstance(frame, protocol.Bye):
                    record["end"] = f"bye {frame.reason}"
                    break
        except LinkClosed:
            pass
        except Exception as exc:  # noqa: BLE001 - a harness reports, it does not crash
            record["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            self._queue.put(None)
            self.lent.set()

    def _compute(self) -> None:
        link = self.link
        assert link is not None
        while True:
            try:
                got = self._queue.get(timeout=self._heartbeat_s)
            except queue.Empty:
                try:
                    link.send(protocol.encode(protocol.Heartbeat()))
                except LinkClosed:
                    return
                continue
            if got is None:
                return
            time.sleep(self.task)
            value = int(got[1])
            try:
                link.send(protocol.encode(protocol.Result([(got[0], str(value * value))])))
            except LinkClosed:
                return
            self.record["items"] += 1

    def close(self) -> None:
        if self.link is not None:
            self.link.abort()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url", help="the signal socket: ws://HOST:PORT/rendezvous/signal")
    parser.add_argument("key")
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--mode", choices=("sequential", "crowd"), required=True)
    parser.add_argument("--task", type=float, default=0.5)
    parser.add_argument("--gap", type=float, default=0.2)
    parser.add_argument("--hold", type=float, default=0.5)
    parser.add_argument("--timeout", type=float, default=90)
    args = parser.parse_args()

    out: dict[str, Any] = {"mode": args.mode, "sessions": args.sessions}
    t = time.monotonic()
    loop = rtc.RtcLoop()  # imports aiortc
    out["rtc_loop_s"] = time.monotonic() - t
    t = time.monotonic()
    warm = loop.run(rtc.offer(loop, []), 30)
    out["warmup_offer_s"] = time.monotonic() - t
    loop.run(warm.cancel(), 5)

    joiners = [Joiner(i, args.url, args.key, loop, args.task) for i in range(args.sessions)]
    cpu0 = cpu_now()
    deadline = time.monotonic() + args.timeout
    if args.mode == "sequential":
        for j in joiners:
            threading.Thread(target=j.run, daemon=True).start()
            j.lent.wait(max(0.0, deadline - time.monotonic()))
            time.sleep(args.gap)
    else:
        barrier = threading.Barrier(args.sessions + 1)

        def go(j: Joiner) -> None:
            barrier.wait()
            j.run()

        for j in joiners:
            threading.Thread(target=go, args=(j,), daemon=True).start()
        time.sleep(0.2)  # every thread is at the barrier
        out["t0"] = time.monotonic()
        barrier.wait()
        for j in joiners:
            j.lent.wait(max(0.0, deadline - time.monotonic()))
    out["cpu_joins_s"] = cpu_now() - cpu0
    out["all_lent_at"] = time.monotonic()
    time.sleep(args.hold)
    for j in joiners:
        j.close()
    out["records"] = [j.record for j in joiners]
    loop.stop()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
