"""Computing on the root's own machine.

``--local`` runs the module in this process on one item after another, with no
server at all. Without ``--start-idle``, the root instead starts
``python -m pando.local URL``: an ordinary volunteer of one worker that says it
is the root's own helper, so the lender gives it items only while no other
volunteer is connected, and its function never runs on the dispatcher's thread.
"""
from __future__ import annotations

import subprocess
import sys
from typing import BinaryIO, Callable, Iterable

from pando import items, status
from pando.lender import Failure
from pando.module import PandoFunction
from pando.reorder import describe_failure
from pando.volunteer import Volunteer
from pando.workers import compute


def run_local(fn: PandoFunction, batches: Iterable[list[str]], out: BinaryIO) -> int:
    """Compute every item in order, here; return the exit status."""
    items.allow_big_integers()
    position = 0
    for batch in batches:
        for text in batch:
            answer = compute(fn, position, text)
            if answer[0] != "ok":
                out.flush()
                print(describe_failure(Failure(position, text, answer[3] or answer[2])), file=sys.stderr)
                return status.ITEM_FAILED
            out.write(answer[2].encode("utf-8") + b"\n")
            out.flush()  # results appear as they come, as they do from volunteers
            position += 1
    return status.OK


class Helper:
    """The root's own helper volunteer process, on ``port`` over loopback; owned by the root."""

    #: Times a helper that died is started again before the root gives up on it.
    RESTARTS = 3

    def __init__(self, port: int, log: Callable[[str], None]) -> None:
        self._port = port
        self._log = log
        self._restarts = 0
        self._process: subprocess.Popen[bytes] | None = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "pando.local", f"ws://127.0.0.1:{self._port}/volunteer"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C is for the root, which then stops the helper
        )

    def check(self) -> None:
        """Start the helper again if it died while the run goes on (its items are lent again)."""
        if self._process is None or (code := self._process.poll()) is None:
            return
        if self._restarts == self.RESTARTS:
            self._log(f"pando: the root's own helper ended (status {code}) {self.RESTARTS + 1} times; "
                      "only volunteers compute from now on")
            self._process = None
            return
        self._restarts += 1
        self._log(f"pando: the root's own helper ended (status {code}); starting it again")
        self._process = self._start()

    def stop(self) -> None:
        """Give it a moment to end by itself (it got a bye), then make it."""
        if self._process is None:
            return
        try:
            self._process.wait(2)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


if __name__ == "__main__":
    sys.exit(Volunteer(sys.argv[1], workers=1, name="root", role="local", quiet=True, retry=False).run())
