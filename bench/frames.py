"""The frame-level ceiling: websockets' threaded API echoing 32-byte text frames on loopback.

    python bench/frames.py serve PORT          (an echo server, until killed)
    python bench/frames.py client PORT SECONDS (JSON: sequential and pipelined round trips/s)

Server and client are separate processes, configured like pando's server and
native volunteer (no compression, the sync API). Sequential: send one frame,
wait for its echo, repeat. Pipelined: one thread sends frames as fast as it
can, with at most WINDOW unanswered, while another reads the echoes.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from typing import Any

WINDOW = 256
FRAME = "x" * 32


def serve(port: int) -> None:
    from websockets.sync.server import serve as ws_serve

    def echo(connection: Any) -> None:
        for message in connection:
            connection.send(message)

    with ws_serve(echo, "127.0.0.1", port, compression=None, max_size=2**26) as server:
        server.serve_forever()


def client(port: int, seconds: float) -> dict[str, Any]:
    from websockets.sync.client import connect

    out: dict[str, Any] = {"frame_bytes": len(FRAME), "window": WINDOW}
    with connect(f"ws://127.0.0.1:{port}/", compression=None, max_size=2**26) as ws:
        for _ in range(200):  # warm up
            ws.send(FRAME)
            ws.recv()
        count = 0
        start = time.perf_counter()
        while (now := time.perf_counter()) - start < seconds:
            ws.send(FRAME)
            ws.recv()
            count += 1
        out["sequential_per_s"] = count / (now - start)

        total = max(2000, int(out["sequential_per_s"] * seconds * 3))
        credit = threading.Semaphore(WINDOW)

        def sender() -> None:
            for _ in range(total):
                credit.acquire()
                ws.send(FRAME)

        start = time.perf_counter()
        thread = threading.Thread(target=sender)
        thread.start()
        for _ in range(total):
            ws.recv()
            credit.release()
        out["pipelined_per_s"] = total / (time.perf_counter() - start)
        thread.join()
    return out


def measure(seconds: float = 2.0) -> dict[str, Any]:
    """Start the echo server, run the client, stop the server; used by bench/run.py."""
    from common import PYTHON, Procs, free_port, wait_port

    procs = Procs()
    try:
        port = free_port()
        procs.popen([PYTHON, __file__, "serve", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port)
        popen = procs.popen([PYTHON, __file__, "client", str(port), str(seconds)], stdout=subprocess.PIPE)
        out, _ = popen.communicate(timeout=120 + 10 * seconds)
        return json.loads(out.decode().strip().splitlines()[-1])
    finally:
        procs.cleanup()


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    else:
        print(json.dumps(client(int(sys.argv[2]), float(sys.argv[3]))))
