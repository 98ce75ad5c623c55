"""Monitoring on the root: volunteers' reports, the run's totals, and who sees them.

:class:`Monitor` keeps, under one lock, the latest report and running
statistics of every connected volunteer. Its thread, owned by the root, turns
that into a status object (documented in ``docs/monitoring.md``) every
reporting interval — for the JSON log and the monitoring page's WebSocket —
and refreshes the terminal's progress line more often.
"""
from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection

from pando import protocol
from pando.access import refuse
from pando.printable import printable

#: The JSON log: one status object per line, when PANDO_DEBUG names "monitoring".
LOG = logging.getLogger("pando.monitoring")

#: Devices the monitoring page gets at most (the busiest first).
FEED_DEVICES = 50

PROGRESS_SECONDS = 0.5


@dataclass
class Stats:
    """Running average, standard deviation, minimum and maximum (Welford's method)."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    low: float = math.inf
    high: float = -math.inf

    def add(self, value: float) -> None:
        self.count += 1
        delta = value - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (value - self.mean)
        self.low = min(self.low, value)
        self.high = max(self.high, value)

    def summary(self) -> dict[str, float | int | None]:
        if not self.count:
            return {"average": None, "stdev": None, "min": None, "max": None, "count": 0}
        return {
            "average": self.mean,
            "stdev": math.sqrt(self.m2 / self.count),
            "min": self.low,
            "max": self.high,
            "count": self.count,
        }


@dataclass
class _Device:
    id: str
    name: str
    workers: int
    local: bool
    items: int = 0
    disagreements: int = 0
    report: dict[str, float] | None = None
    throughput: float = 0.0
    cpu_usage: float = 0.0
    throughput_stats: Stats = field(default_factory=Stats)
    cpu_stats: Stats = field(default_factory=Stats)
    #: A tree child's subtree (itself included), from its latest status, and its rows under global monitoring.
    nodes: int = 1
    subtree_workers: int | None = None
    descendants: list[dict[str, Any]] = field(default_factory=list)
    more: int = 0


class Monitor:
    """The run's status, fed by sessions, read by the status thread."""

    def __init__(
        self,
        interval: float,
        counts: Callable[[], dict[str, int]],
        held: Callable[[], dict[Any, int]],
        total: int | None,
    ) -> None:
        self.interval = interval
        self._counts = counts  # items read/lent/relent/done/failed/written, from their owners
        self._held = held
        self._total = total
        self._lock = threading.Lock()
        self._devices: dict[Hashable, _Device] = {}
        self._ever = 0
        self._started = time.monotonic()
        self._last = (self._started, 0)  # (time, items written) of the last status
        self._viewers: set[queue.SimpleQueue[str | None]] = set()
        self._no_viewers = threading.Condition(self._lock)
        self._latest_feed = ""
        self._closed = False

    # -- sessions ----------------------------------------------------------

    def joined(self, key: Hashable, session_id: str, name: str, workers: int, local: bool) -> None:
        with self._lock:
            self._devices[key] = _Device(session_id, name, workers, local)
            if not local:
                self._ever += 1

    def left(self, key: Hashable) -> None:
        with self._lock:
            self._devices.pop(key, None)

    def accepted(self, key: Hashable, count: int) -> None:
        with self._lock:
            device = self._devices.get(key)
            if device is not None:
                device.items += count

    def disagreed(self, key: Hashable) -> None:
        """A device's answer lost a --verify vote."""
        with self._lock:
            device = self._devices.get(key)
            if device is not None:
                device.disagreements += 1

    def subtree(self, key: Hashable, status: protocol.Status) -> None:
        """A tree child's status: its subtree's size and workers, and (global monitoring) its devices."""
        with self._lock:
            device = self._devices.get(key)
            if device is not None:
                device.nodes = status.nodes
                device.subtree_workers = status.workers
                device.descendants = status.devices or []
                device.more = status.more

    def reported(self, key: Hashable, report: protocol.Report) -> None:
        with self._lock:
            device = self._devices.get(key)
            if device is None or report.interval <= 0:
                return
            device.report = report.payload()
            device.throughput = report.items / report.interval
            device.cpu_usage = min(1.0, report.cpu_time / (report.interval * device.workers))
            device.throughput_stats.add(device.throughput)
            device.cpu_stats.add(device.cpu_usage)

    # -- views -------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The status object, devices the busiest first; call once per interval."""
        counts = self._counts()
        held = self._held()
        now = time.monotonic()
        with self._lock:
            then, written_then = self._last
            self._last = (now, counts["written"])
            devices = sorted(self._devices.items(), key=lambda pair: -pair[1].throughput)
            connected = sum(device.nodes for _, device in devices if not device.local)
            ever = self._ever
            shown = [self._device(device, held.get(key, 0)) for key, device in devices]
            for _, device in devices:  # global monitoring: every device under the direct children
                # Rows count depth from the child that sent them; the child is at depth 1.
                shown.extend({**row, "name": printable(row["name"], protocol.MAX_NAME), "depth": row["depth"] + 1}
                             for row in device.descendants)
            tree = {"nodes": connected, "children": sum(device.subtree_workers is not None for _, device in devices),
                    "depth": max((row["depth"] for row in shown), default=0),
                    "hidden": sum(device.more for _, device in devices)}
        return {
            "time": time.time(),
            "elapsed": now - self._started,
            "interval": self.interval,
            "items": {"total": self._total, **counts},
            "throughput": (counts["written"] - written_then) / max(now - then, 1e-9),
            "volunteers": {"now": connected, "ever": ever},
            "tree": tree,
            "devices": shown,
        }

    @staticmethod
    def _device(device: _Device, held: int) -> dict[str, Any]:
        return {
            "id": device.id,
            "name": device.name,
            "parent": None,
            "depth": 1,
            "nodes": device.nodes,
            "workers": device.workers,
            "subtree_workers": device.subtree_workers if device.subtree_workers is not None else device.workers,
            "local": device.local,
            "state": "computing" if held else "idle",
            "items": device.items,
            "disagreements": device.disagreements,
            "held": held,
            "report": device.report,
            "throughput": device.throughput,
            "cpu_usage": device.cpu_usage,
            "throughput_stats": device.throughput_stats.summary(),
            "cpu_stats": device.cpu_stats.summary(),
        }

    def progress(self) -> str:
        """The one-line summary for a terminal."""
        counts = self._counts()
        with self._lock:
            volunteers = sum(device.nodes for device in self._devices.values() if not device.local)
        elapsed = time.monotonic() - self._started
        rate = counts["written"] / elapsed if elapsed > 0 else 0.0
        done = f"{counts['written']}/{self._total}" if self._total is not None else f"{counts['written']}"
        text = f"pando: {done} written, {counts['read']} read, {rate:.1f}/s, {volunteers} volunteer(s)"
        if self._total is not None and rate > 0:
            remaining = (self._total - counts["written"]) / rate
            text += f", ETA {int(remaining // 60)}:{int(remaining % 60):02d}"
        return text

    # -- the monitoring page's feed ----------------------------------------

    def publish(self, outcome: protocol.Outcome | None = None) -> None:
        """Send a fresh status to the log (all devices) and the page's viewers (the busiest);
        the run's last one carries its ``outcome``."""
        status = self.status()
        if outcome is not None:
            status["outcome"] = outcome.payload()
        if LOG.isEnabledFor(logging.DEBUG):
            LOG.debug(json.dumps(status, allow_nan=False))
        devices = status["devices"]
        status.update(type="status", devices=devices[:FEED_DEVICES], more_devices=max(0, len(devices) - FEED_DEVICES))
        text = json.dumps(status, allow_nan=False)  # the page's JSON.parse takes no NaN
        with self._lock:
            self._latest_feed = text
            viewers = list(self._viewers)
        for viewer in viewers:
            viewer.put(text)

    def serve_viewer(self, connection: ServerConnection, admits: Callable[[str], bool]) -> None:
        """One monitoring page's WebSocket: once it showed the join key (``admits`` it), a status
        every interval until either side stops."""
        try:
            frame = protocol.decode(connection.recv(timeout=protocol.GREETING_SECONDS), protocol.FROM_VIEWER)
        except (TimeoutError, ConnectionClosed):
            return
        except protocol.ProtocolError:
            frame = None
        if not isinstance(frame, protocol.Watch) or not admits(frame.key):
            refuse(connection, "the feed starts with a watch frame holding the join key: open the monitoring "
                               "URL the root printed, with its #key=...")
            return
        viewer: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        with self._lock:
            if self._closed:
                return  # the run is ending: the server closes this connection
            self._viewers.add(viewer)
            latest = self._latest_feed
        try:
            if latest:
                connection.send(latest)
            while (text := viewer.get()) is not None:
                connection.send(text)
        except ConnectionClosed:
            pass
        finally:
            with self._lock:
                self._viewers.discard(viewer)
                self._no_viewers.notify_all()

    def close_viewers(self) -> None:
        """End every viewer's feed, after what was published, and any that comes later at once."""
        with self._lock:
            self._closed = True
            for viewer in self._viewers:
                viewer.put(None)

    def wait_viewers(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the closed feeds to send what they still hold."""
        with self._no_viewers:
            self._no_viewers.wait_for(lambda: not self._viewers, timeout)


class StatusThread:
    """Publishes the status every interval and refreshes the progress line; owned by the root."""

    def __init__(self, monitor: Monitor, show_progress: Callable[[str], None] | None) -> None:
        self._monitor = monitor
        self._show_progress = show_progress
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pando-status", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, outcome: protocol.Outcome | None) -> None:
        """Stop, after a last status with the run's ``outcome`` (None: the run crashed): the log and the
        page then show how the run ended."""
        self._stopping.set()
        if self._thread.ident is not None:
            self._thread.join()
            self._monitor.publish(outcome)
        self._monitor.close_viewers()

    def _run(self) -> None:
        tick = min(PROGRESS_SECONDS, self._monitor.interval)
        next_status = time.monotonic() + self._monitor.interval
        while not self._stopping.wait(tick):
            if self._show_progress is not None:
                self._show_progress(self._monitor.progress())
            if time.monotonic() >= next_status:
                next_status += self._monitor.interval
                self._monitor.publish()
