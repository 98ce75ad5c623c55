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
from typing import BinaryIO, Iterable

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


def start_helper(port: int) -> subprocess.Popen[bytes]:
    """Start the root's own helper volunteer, connected to ``port`` on loopback."""
    return subprocess.Popen(
        [sys.executable, "-m", "pando.local", f"ws://127.0.0.1:{port}/volunteer"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C is for the root, which then stops the helper
    )


if __name__ == "__main__":
    sys.exit(Volunteer(sys.argv[1], workers=1, name="root", role="local", quiet=True, retry=False).run())
