"""The benchmarks still run: each workload that needs no benchmark peer (Dask, GNU parallel, py-spy)
at its smallest size (``bench/run.py smoke``), its outputs exact and its crowds all joined.

Their figures are not checked here (bench/README.md has them): a benchmark that quietly stopped
measuring what it says is what this catches, as when the tree's stand-in for the workers lagged
behind theirs, or the WebRTC crowds outgrew the root's degree.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from conftest import REPO

BENCH = REPO / "bench"
sys.path.insert(0, str(BENCH))
import run as bench_run  # noqa: E402

WORKLOADS = [name for name, params in bench_run.SIZES["smoke"].items() if params is not None]
#: What a workload reports about its outputs and joins: each must be true wherever it appears.
TRUE_FLAGS = {"exact", "all_exact", "lines_exact", "output_exact", "timed_exact", "same_as_local", "complete",
              "journal_complete", "all_joined"}


def reported(tree: Any, path: str = "") -> Iterator[tuple[str, str, Any]]:
    """Every (path, key, value) in a workload's JSON whose key names an outcome."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key in TRUE_FLAGS or key in ("exit", "all_joined_s"):
                yield path, key, value
            yield from reported(value, f"{path}.{key}")
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            yield from reported(value, f"{path}[{index}]")


@pytest.mark.timeout(240)
@pytest.mark.parametrize("workload", WORKLOADS)
def test_each_workload_runs_with_exact_outputs(workload: str, tmp_path: Path) -> None:
    with subprocess.Popen([sys.executable, str(BENCH / "run.py"), "smoke", "--only", workload, "--results", str(tmp_path)],
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as bench:
        try:
            _, log = bench.communicate(timeout=200)
        except subprocess.TimeoutExpired:
            bench.send_signal(signal.SIGINT)  # its exit handlers end the processes it started
            _, log = bench.communicate(timeout=30)
            pytest.fail(f"{workload} ran for over 200 s:\n{log[-3000:]}")
    assert bench.returncode == 0, log[-3000:]
    [written] = tmp_path.glob("*-smoke.json")
    result = json.loads(written.read_text())["workloads"][workload]
    outcomes = list(reported(result))
    if workload != "frames":  # round trips of bare frames: no output to check
        assert any(key in TRUE_FLAGS for _, key, _ in outcomes), f"{workload} reports nothing about its outputs"
    wrong = [(path, key, value) for path, key, value in outcomes
             if (key in TRUE_FLAGS and value is not True) or (key == "exit" and value != 0)
             or (key == "all_joined_s" and value is None)]
    assert not wrong, f"{workload}: {wrong}\n{log[-3000:]}"
