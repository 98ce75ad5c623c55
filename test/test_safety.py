"""Safe by default, as a careless user meets it: the join key, stdout that holds results only,
modules that exit or print, results that cannot be written, helpers that cannot run, and
processes that never outlive their volunteer."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import EXAMPLES, KEY, PANDO, REPO, VOLUNTEER, Processes, join_url, lines, squares
from pando.addresses import lan_ipv4

pytestmark = pytest.mark.timeout(120)

FAST = str(EXAMPLES / "square_fast.py")
SERVING = re.compile(r"Serving volunteer code at (http://\S+)")

# The three places a module runs: the root's own helper, --local, and a native volunteer.
MODES = ["helper", "local", "volunteer"]


def module(procs: Processes, name: str, body: str) -> str:
    path = procs.tmp / name
    path.write_text(body)
    return str(path)


def run_in(procs: Processes, mode: str, path: str, *items: object) -> tuple[int, bytes, str, str]:
    """Run ``path`` on ``items`` in ``mode``: the root's status, stdout and stderr, and the volunteer's stderr
    (its stdout must stay empty)."""
    # One worker in the helper too: what two workers print at once may interleave mid-line.
    options = {"helper": ["--workers", "1"], "local": ["--local"], "volunteer": ["--start-idle"]}[mode]
    root = procs.pando(path, *options, "--", *map(str, items))
    volunteer_err = ""
    if mode == "volunteer":
        volunteer = procs.popen([VOLUNTEER, join_url(root.port), "--workers", "1"], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        code = root.wait()
        out, err = volunteer.communicate(timeout=30)
        assert out == b"", "the volunteer wrote to its stdout"
        volunteer_err = err.decode()
    else:
        code = root.wait()
    return code, root.out, root.err, volunteer_err


# -- the join key -------------------------------------------------------------------------------


def printed_key(err: str) -> str:
    keys = set(re.findall(r"#key=([\w-]+);", err))
    assert len(keys) == 1, err
    return keys.pop()


def test_a_join_key_is_made_once_private_and_reused(procs: Processes, tmp_path: Path) -> None:
    home = tmp_path / "fresh-home"
    home.mkdir()
    first = procs.pando(FAST, "1", HOME=str(home))
    assert first.wait() == 0, first.err
    key = printed_key(first.err)
    assert re.fullmatch(r"[A-Za-z0-9_-]{22,}", key)  # 128 bits and more, URL-safe
    saved = home / ".pando" / "join-key"
    assert saved.read_text().strip() == key
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    second = procs.pando(FAST, "2", HOME=str(home))
    assert second.wait() == 0 and printed_key(second.err) == key
    for line in SERVING.findall(first.err):
        assert line.endswith(f"/#key={key};")
    assert f"/monitor#key={key};" in first.err


def test_join_key_from_the_command_line_or_the_config(procs: Processes) -> None:
    chosen = "scripted-experiment-key-1"
    root = procs.pando(FAST, "--join-key", chosen, "1")
    assert root.wait() == 0 and printed_key(root.err) == chosen
    (procs.home / ".pando" / "config.json").write_text(json.dumps({"join-key": "from-the-config-file-0"}))
    root = procs.pando(FAST, "1")
    assert root.wait() == 0 and printed_key(root.err) == "from-the-config-file-0"


@pytest.mark.parametrize("key", ["short", "has space in it here", "ünïcode-ünïcode-ünïcode"])
def test_a_bad_join_key_is_a_usage_error(procs: Processes, key: str) -> None:
    done = procs.run([PANDO, FAST, "--join-key", key, "1"])
    assert done.returncode == 2 and b"join key" in done.stderr and b"Traceback" not in done.stderr


def test_a_volunteer_url_without_the_key_is_refused_before_connecting(procs: Processes) -> None:
    done = procs.run([VOLUNTEER, "http://127.0.0.1:1/"])
    assert done.returncode == 2 and b"join key" in done.stderr


def test_a_volunteer_with_a_wrong_key_is_told_and_stops(procs: Processes) -> None:
    root = procs.pando(FAST, "--start-idle", "1")
    done = procs.run([VOLUNTEER, join_url(root.port, "not-the-right-key-at-all")])
    assert done.returncode == 2 and b"join key" in done.stderr
    procs.volunteer(root.port)
    assert root.wait() == 0 and root.out == b"1\n"


def test_bind_listens_on_that_address_only(procs: Processes) -> None:
    root = procs.pando(FAST, "--start-idle", "--bind", "127.0.0.1", "1")
    port = int(root.wait_for_stderr(r"Serving volunteer code at http://127.0.0.1:(\d+)/").group(1))
    root.wait_for_stderr("Monitoring at")
    assert SERVING.findall(root.err) == [f"http://127.0.0.1:{port}/#key={KEY};"]
    assert f"Monitoring at http://127.0.0.1:{port}/monitor#key={KEY};" in root.err
    for address in lan_ipv4():
        with pytest.raises(OSError):
            socket.create_connection((address, port), timeout=2).close()
    procs.volunteer(port)
    assert root.wait() == 0 and root.out == b"1\n"


def test_the_roots_helper_computes_when_the_root_listens_on_one_lan_address(procs: Processes) -> None:
    addresses = lan_ipv4()
    if not addresses:
        pytest.skip("this machine has no LAN address")
    root = procs.pando(FAST, "--bind", addresses[0], "1", "2", "3")
    assert root.wait() == 0, root.err
    assert root.out == b"1\n4\n9\n"


# -- stdout is for results only -----------------------------------------------------------------


PRINTS = """
import os
import sys
import pando

print("printed at import")
sys.stdout.write("written at import\\n")
sys.stdout.flush()
os.write(1, b"os.write at import\\n")

@pando.function
def noisy(x):
    print("printed for", x)
    os.write(1, b"os.write in the function\\n")
    return x * x
"""


@pytest.mark.parametrize("mode", MODES)
def test_what_the_module_prints_goes_to_stderr(procs: Processes, mode: str) -> None:
    code, out, err, volunteer_err = run_in(procs, mode, module(procs, "noisy.py", PRINTS), 1, 2, 3)
    assert code == 0, err
    assert out == b"1\n4\n9\n"
    assert "printed at import" in err  # the root loads the module once to check it
    assert "printed for 2" in err + volunteer_err and "os.write in the function" in err + volunteer_err


@pytest.mark.parametrize("mode", MODES)
def test_a_result_that_is_not_unicode_is_that_items_error(procs: Processes, mode: str) -> None:
    path = module(procs, "surrogate.py", "import pando\n\n@pando.function\ndef f(x):\n"
                                         "    return '\\udcff' if x == 3 else str(x)\n")
    code, out, err, _ = run_in(procs, mode, path, 1, 2, 3, 4)
    assert code == 1, err
    assert out == b"1\n2\n"
    assert "item 3 (value '3') failed" in err and "not valid Unicode" in err


@pytest.mark.parametrize("local", [True, False])
def test_results_into_a_full_disk_fail_the_run(procs: Processes, local: bool) -> None:
    with open("/dev/full", "wb") as full:
        done = subprocess.run([PANDO, FAST, "--port", "0", *(["--local"] if local else []), "1", "2", "3"],
                              stdout=full, stderr=subprocess.PIPE, env=procs.env(), timeout=60)
    assert done.returncode == 1
    assert b"cannot write results: No space left on device" in done.stderr
    assert b"Traceback" not in done.stderr


# -- modules that exit -----------------------------------------------------------------------------


@pytest.mark.parametrize("call", ["sys.exit(0)", "sys.exit(3)", "os._exit(0)"])
def test_a_module_that_exits_while_loading_is_refused(procs: Processes, call: str) -> None:
    path = module(procs, "exits.py", f"import os, sys\n{call}\n")
    done = procs.run([PANDO, path, "--port", "0", "1"])
    assert done.returncode == 2
    assert b"exits.py: exited" in done.stderr and b"while loading" in done.stderr
    assert done.stdout == b"" and b"Serving" not in done.stderr


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("call", ["sys.exit(5)", "os._exit(5)"])
def test_an_exit_inside_the_function_is_that_items_error(procs: Processes, mode: str, call: str) -> None:
    path = module(procs, "exits.py", f"import os, sys, pando\n\n@pando.function\ndef f(x):\n"
                                     f"    if x == 2:\n        {call}\n    return x\n")
    code, out, err, _ = run_in(procs, mode, path, 1, 2, 3)
    assert code == 1, err
    assert out == b"1\n"
    assert "item 2 (value '2') failed" in err and "SystemExit: 5" in err


# -- the root's helper -------------------------------------------------------------------------


def test_a_stray_pando_package_in_the_working_directory_is_never_imported(procs: Processes) -> None:
    stray = procs.tmp / "pando"
    stray.mkdir()
    (stray / "__init__.py").write_text("raise SystemExit('the stray pando package was imported')\n")
    for command in ([PANDO], [str(REPO / "bin" / "pando")]):
        done = procs.run([*command, FAST, "--port", "0", "1", "2", "3"], cwd=procs.tmp)
        assert done.returncode == 0, done.stderr.decode()
        assert done.stdout == b"1\n4\n9\n" and b"stray" not in done.stderr


SLOW_START = """
import time
import pando

time.sleep(1)  # each worker takes a while to start: longer than the heartbeat

@pando.function
def f(x):
    return x * x
"""


def test_short_heartbeats_while_workers_start(procs: Processes) -> None:
    root = procs.pando(module(procs, "slow_start.py", SLOW_START), "--heartbeat", "100", "--stdin",
                       stdin=lines(*range(200)))
    assert root.wait() == 0, root.err
    assert root.out == squares(range(200))
    assert "dropping" not in root.err


BROKEN_IN_WORKERS = """
import multiprocessing
import pando

if multiprocessing.current_process().name != "MainProcess":  # loads in the root, not in a worker
    raise ImportError("cannot load in a worker process")

@pando.function
def f(x):
    return x
"""


def test_a_helper_that_cannot_compute_with_nobody_else_fails_the_run(procs: Processes) -> None:
    root = procs.pando(module(procs, "broken.py", BROKEN_IN_WORKERS), "1", "2")
    assert root.wait(90) == 1
    assert "cannot compute and no volunteer is connected" in root.err
    assert root.out == b""


def test_a_crashed_thread_fails_the_run_instead_of_passing_for_the_end(procs: Processes) -> None:
    # A reader whose input source raises something no code expects (a bug): the run must not end
    # with exit 0 as if the input had ended there.
    script = procs.tmp / "crash.py"
    script.write_text(f"""
import sys
from pando.console import Console
from pando.root import Root, Settings

def batches():
    yield ["1", "2"]
    raise RuntimeError("a bug in the reader")

settings = Settings(join_key={KEY!r}, port=0, start_idle=False)
sys.exit(Root(settings, "square.py", open({FAST!r}).read(), batches(), None, sys.stdout.buffer,
              Console()).run())
""")
    done = procs.run([sys.executable, str(script)], cwd=procs.tmp)
    assert done.returncode == 1
    assert b"internal error in the reader thread: RuntimeError: a bug in the reader" in done.stderr


# -- nothing outlives its volunteer ------------------------------------------------------------


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_volunteer_killed_mid_item_leaves_no_process_behind(procs: Processes) -> None:
    path = module(procs, "long.py", "import time, pando\n\n@pando.function\ndef f(x):\n"
                                    "    time.sleep(3600)\n    return x\n")
    root = procs.pando(path, "--start-idle", "1", "2")
    volunteer = procs.volunteer(root.port, "--workers", "2")
    deadline = time.monotonic() + 30
    while len(workers := [pid for pid in children(volunteer.pid) if alive(pid)]) < 2:
        assert time.monotonic() < deadline, "the workers never started"
        time.sleep(0.1)
    time.sleep(1)  # both are inside an item by now
    volunteer.kill()
    volunteer.wait()
    deadline = time.monotonic() + 10
    while survivors := [pid for pid in workers if alive(pid)]:
        assert time.monotonic() < deadline, f"worker processes {survivors} outlived their volunteer"
        time.sleep(0.1)
    root.popen.send_signal(signal.SIGINT)
    assert root.wait() == 130


def test_a_run_that_stops_before_serving_leaves_no_helper_behind(procs: Processes, tmp_path: Path) -> None:
    # The root's helper starts before the rest of the command line is checked; a bad join key ends the run.
    here = tmp_path / "run"
    here.mkdir()
    done = procs.run([PANDO, FAST, "--join-key", "short", "1"], cwd=here)
    assert done.returncode == 2 and b"join-key" in done.stderr, done.stderr
    deadline = time.monotonic() + 5
    while left := [entry.name for entry in Path("/proc").iterdir() if entry.name.isdigit() and _cwd(entry) == here]:
        assert time.monotonic() < deadline, f"processes {left} outlived the run"
        time.sleep(0.1)


def _cwd(entry: Path) -> Path | None:
    try:
        return Path(os.readlink(entry / "cwd"))
    except OSError:
        return None


FD_HOG = """
import pathlib
import threading
import time
import pando

# In the root (the process that loads this module first): once the test says "go", take every
# free file descriptor for a few seconds, so that accepting a connection fails (EMFILE).
here = pathlib.Path(__file__).parent

def hog():
    while not (here / "go").exists():
        time.sleep(0.05)
    (here / "holding").touch()
    hogs = []
    try:
        while True:
            hogs.append(open(__file__))
    except OSError:
        pass
    (here / "holding").rename(here / "held")  # needs no descriptor: the test can knock now
    time.sleep(4)
    for hog in hogs:
        hog.close()

if not (here / "go").exists():  # the root; not the volunteer's workers, later
    threading.Thread(target=hog, daemon=True).start()

@pando.function
def f(x):
    return x * x
"""


def test_the_accept_loop_listens_again_after_running_out_of_descriptors(procs: Processes) -> None:
    root = procs.pando(module(procs, "fd_hog.py", FD_HOG), "--start-idle", "1", "2", "3", nofile=256)
    port = root.port
    (procs.tmp / "go").touch()
    deadline = time.monotonic() + 10
    while not (procs.tmp / "held").exists():
        assert time.monotonic() < deadline, root.err
        time.sleep(0.05)
    # A knock while no descriptor is free: websockets' accept loop ends on the first EMFILE.
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        root.wait_for_stderr("stopped accepting connections", timeout=5)
    procs.volunteer(port)  # it retries until the descriptors are back and the root listens again
    assert root.wait() == 0, root.err
    assert root.out == b"1\n4\n9\n"
    assert root.err.count("stopped accepting connections") == 1
