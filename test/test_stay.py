"""Volunteers that stay: ``pando-volunteer --stay`` serves one run after another at the same address.

Real processes on 127.0.0.1: staying volunteers started once, then runs of
``pando`` one after the other on the same port and join key (each starting
after the last one exited), as a Makefile's targets would. Each job starts
afresh (a module's globals do not survive into the next run), a root that
refuses the key ends the wait, and Ctrl-C and SIGTERM end it with status 0.
(A volunteer without --stay leaving after its job: test_cli.py.)
"""
from __future__ import annotations

import signal
import socket
import subprocess
import textwrap
from pathlib import Path

import pytest

from conftest import COUNTER, EXAMPLES, PANDO, Processes, lines, squares

pytestmark = pytest.mark.timeout(120)

FAST = str(EXAMPLES / "square_fast.py")

WAITING = "waiting for the next job"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def module(tmp: Path, name: str, body: str) -> str:
    path = tmp / name
    path.write_text(textwrap.dedent(body))
    return str(path)


def stop(volunteer: subprocess.Popen[bytes], how: signal.Signals) -> tuple[int, str]:
    """Signal a staying volunteer; its exit status and everything it said."""
    volunteer.send_signal(how)
    code = volunteer.wait(15)
    assert volunteer.stderr is not None
    return code, volunteer.stderr.read().decode()


def test_a_staying_volunteer_computes_run_after_run_each_afresh(procs: Processes) -> None:
    port = free_port()
    volunteer = procs.volunteer(port, "--workers", "1", "--name", "stayer", "--stay")
    counter = module(procs.tmp, "counter.py", COUNTER)
    # --start-idle: only the volunteer computes. Each run starts after the last one exited.
    first = procs.pando(FAST, "--start-idle", "--stdin", stdin=lines(*range(200)), port=port)
    assert first.wait() == 0, first.err
    assert first.out == squares(range(200))
    second = procs.pando(counter, "--start-idle", "1", "2", "3", port=port)  # another module
    assert second.wait() == 0, second.err
    assert second.out == b"1:1\n2:2\n3:3\n"
    third = procs.pando(counter, "--start-idle", "4", "5", port=port)  # the same module: nothing of the last job
    assert third.wait() == 0, third.err
    assert third.out == b"4:1\n5:2\n"
    assert volunteer.poll() is None, "the staying volunteer left"

    code, err = stop(volunteer, signal.SIGTERM)
    assert code == 0, err
    assert err.count(WAITING) == 3, err
    assert err.count("computing") == 3 and "square_fast.py" in err and "counter.py" in err, err
    # Looking for the next run says nothing per look: after the first join (the first root may have
    # started after it), no "cannot reach" or "retrying" line.
    after = err[err.index("joined as"):]
    assert "cannot reach" not in after and "retrying" not in after, err
    assert err.rstrip().endswith("pando-volunteer: stopped"), err


def test_a_staying_volunteer_facing_another_key_stops_with_the_refusal(procs: Processes) -> None:
    port = free_port()
    volunteer = procs.volunteer(port, "--workers", "1", "--stay")
    first = procs.pando(FAST, "--start-idle", "1", "2", port=port)
    assert first.wait() == 0, first.err
    assert first.out == b"1\n4\n"
    # Another user's run on the same port: it waits for volunteers, and this one is refused.
    procs.pando(FAST, "--start-idle", "--join-key", "another-users-key-0123456789", "3", port=port)
    assert volunteer.wait(30) == 2
    assert volunteer.stderr is not None
    err = volunteer.stderr.read().decode()
    assert "the root refused this volunteer: wrong or missing join key" in err, err
    assert err.count(WAITING) == 1, err


# Slow enough that a run lasts longer than a staying volunteer's longest pause between two looks.
SLOW_DOUBLE = """
import time
import pando

@pando.function
def double(x):
    time.sleep(0.1)
    return 2 * x
"""


def test_a_makefile_reuses_the_volunteers_started_once(procs: Processes) -> None:
    port = free_port()
    stayers = [procs.volunteer(port, "--workers", "1", "--name", f"stayer {n}", "--stay") for n in (1, 2)]
    double = module(procs.tmp, "double.py", SLOW_DOUBLE)
    (procs.tmp / "Makefile").write_text(textwrap.dedent(f"""\
        RUN = {PANDO} --port {port} --start-idle --stdin

        quadrupled.txt: doubled.txt
        \t$(RUN) {double} < doubled.txt > $@

        doubled.txt:
        \tseq 1 50 | $(RUN) {double} > $@
        """))
    done = procs.run(["make", "-s", "quadrupled.txt"], cwd=procs.tmp, timeout=90)
    assert done.returncode == 0, done.stderr.decode()
    assert (procs.tmp / "doubled.txt").read_bytes() == lines(*(2 * n for n in range(1, 51)))
    assert (procs.tmp / "quadrupled.txt").read_bytes() == lines(*(4 * n for n in range(1, 51)))

    for stayer, how in zip(stayers, (signal.SIGINT, signal.SIGTERM)):
        code, err = stop(stayer, how)
        assert code == 0, err
        assert err.count("computing double.py") == 2, err  # it joined both runs
        assert err.count(WAITING) == 2, err
