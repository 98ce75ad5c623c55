"""``pando.report()``: what a module tells the monitoring about its own work.

Standard library only: this file also runs in Pyodide. Each worker keeps one
interval's worth of reports here; the runner calls :func:`take` once per
interval with what it measured itself.
"""
from __future__ import annotations

from typing import Optional

FIELDS = ("items", "cpu_time", "data_transfer_time", "units")

#: The largest figure a report frame may carry: the root refuses a frame with more.
LARGEST = 2**53

_sums: dict[str, float] = {}


def report(
    cpu_time: Optional[float] = None,
    data_transfer_time: Optional[float] = None,
    items: Optional[int] = None,
    units: Optional[float] = None,
) -> None:
    """Add to this interval's report; a field given here replaces Pando's own measure of it."""
    for name, value in (("cpu_time", cpu_time), ("data_transfer_time", data_transfer_time),
                        ("items", items), ("units", units)):
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= LARGEST:
                raise ValueError(f"pando.report: {name} must be a number from 0 to 2**53, not {value!r}")
            _sums[name] = _sums.get(name, 0) + value


def take(items: int, cpu_time: float) -> dict[str, float]:
    """This interval's report (measured values unless the module gave its own); starts a new one."""
    measured = {"items": items, "cpu_time": cpu_time, "data_transfer_time": 0.0}
    out = {**measured, **_sums}
    out.setdefault("units", out["items"])
    _sums.clear()
    return capped(out)


def capped(figures: dict[str, float]) -> dict[str, float]:
    """``figures`` with each at most :data:`LARGEST`: sums of many reports stay sendable."""
    return {name: min(value, LARGEST) for name, value in figures.items()}
