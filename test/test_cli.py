"""End-to-end: real pando processes, their volunteers, stdin, stdout, stderr and exit statuses."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from conftest import EXAMPLES, PANDO, Processes, lines, squares

pytestmark = pytest.mark.timeout(120)

FAST = str(EXAMPLES / "square_fast.py")


def module(tmp: Path, name: str, body: str) -> str:
    path = tmp / name
    path.write_text(textwrap.dedent(body))
    return str(path)


# -- items and results -------------------------------------------------------------------------


def test_argv_items_computed_by_the_root_alone(procs: Processes) -> None:
    root = procs.pando(FAST, "1", "2", "3", "10")
    assert root.wait() == 0, root.err
    assert root.out == b"1\n4\n9\n100\n"
    assert "Serving volunteer code at http://localhost:" in root.err


def test_stdin_items(procs: Processes) -> None:
    root = procs.pando(FAST, "--stdin", stdin=lines(*range(1, 1001)))
    assert root.wait() == 0, root.err
    assert root.out == squares(range(1, 1001))


KINDS = """
import pando

@pando.function
def kind(x):
    return f"{type(x).__name__}:{x}"
"""


@pytest.mark.parametrize("local", [True, False])
def test_values_become_int_float_or_str(procs: Processes, local: bool) -> None:
    items = ["42", "-7", "007", "2.5", "1e3", "abc", "", "12345678901234567890123456789", "0x10", "-"]
    root = procs.pando(module(procs.tmp, "kinds.py", KINDS), *(["--local"] if local else []), "--", *items)
    assert root.wait() == 0, root.err
    assert root.out.decode().splitlines() == [
        "int:42", "int:-7", "str:007", "float:2.5", "float:1000.0", "str:abc", "str:",
        "int:12345678901234567890123456789", "str:0x10", "str:-",
    ]


def test_stdin_line_endings_and_last_line(procs: Processes) -> None:
    kinds = module(procs.tmp, "kinds.py", KINDS)
    root = procs.pando(kinds, "--stdin", stdin=b"1\r\n\r\nx y\n3")
    assert root.wait() == 0, root.err
    assert root.out == b"int:1\nstr:\nstr:x y\nint:3\n"
    empty = procs.pando(kinds, "--stdin", stdin=b"")
    assert empty.wait() == 0 and empty.out == b""


def test_results_other_than_str_and_numbers_are_json(procs: Processes) -> None:
    path = module(procs.tmp, "shapes.py", """
        import pando

        @pando.function
        def shape(x):
            return {"n": x, "list": [x, None, True]} if x % 2 else x / 2
    """)
    root = procs.pando(path, "--local", "1", "2")
    assert root.wait() == 0, root.err
    assert root.out == b'{"n":1,"list":[1,null,true]}\n1.0\n'


def test_async_and_callback_forms(procs: Processes) -> None:
    path = module(procs.tmp, "forms.py", """
        import asyncio
        import pando

        @pando.function
        async def slow_double(x):
            await asyncio.sleep(0.001)
            return 2 * x
    """)
    root = procs.pando(path, "1", "2", "3")
    assert root.wait() == 0, root.err
    assert root.out == b"2\n4\n6\n"


# -- the root's own computing, volunteers ------------------------------------------------------

TAGGED = """
import os
import time
import pando

@pando.function
def tag(x):
    time.sleep(float(os.environ.get("DELAY", "0")))
    return f"{x}:{os.environ.get('TAG', 'root')}"
"""


def test_start_idle_waits_for_a_volunteer(procs: Processes) -> None:
    path = module(procs.tmp, "tagged.py", TAGGED)
    root = procs.pando(path, "--start-idle", "1", "2", "3")
    port = root.port
    time.sleep(1.5)
    assert root.popen.poll() is None and root.out == b"", "with --start-idle nothing is computed without volunteers"
    volunteer = procs.volunteer(port, "--workers", "1")
    assert root.wait() == 0, root.err
    assert root.out == b"1:root\n2:root\n3:root\n"  # the volunteer inherits no TAG either
    assert volunteer.wait(10) == 0


def test_root_stops_computing_while_a_volunteer_is_connected(procs: Processes) -> None:
    path = module(procs.tmp, "tagged.py", TAGGED)
    source = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        root = procs.pando(path, "--stdin", "--heartbeat", "1000", stdin=source.stdout)
        port = root.port

        def feed(values: range) -> None:
            assert source.stdin is not None
            source.stdin.write(lines(*values))
            source.stdin.flush()

        def wait_for_lines(count: int) -> list[str]:
            deadline = time.monotonic() + 30
            while len(root.out.splitlines()) < count:
                assert time.monotonic() < deadline, root.err
                time.sleep(0.05)
            return root.out.decode().splitlines()

        feed(range(0, 50))
        assert all(line.endswith(":root") for line in wait_for_lines(50))
        volunteer = procs.volunteer(port, "--workers", "1", TAG="vol")
        time.sleep(2)  # let it join
        feed(range(50, 100))
        # At most the item the helper was computing at the switch may still be its own.
        assert sum(line.endswith(":root") for line in wait_for_lines(100)[50:]) <= 1
        volunteer.kill()
        volunteer.wait()
        time.sleep(1)
        feed(range(100, 150))
        assert all(line.endswith(":root") for line in wait_for_lines(150)[100:])
        assert source.stdin is not None
        source.stdin.close()
        assert root.wait() == 0, root.err
        assert [line.split(":")[0] for line in root.out.decode().splitlines()] == [str(i) for i in range(150)]
    finally:
        source.kill()
        source.wait()


def test_order_kept_with_volunteers_of_very_different_speeds(procs: Processes) -> None:
    path = module(procs.tmp, "tagged.py", TAGGED)
    root = procs.pando(path, "--stdin", "--start-idle", "--batch-size", "4", stdin=lines(*range(400)))
    slow = procs.volunteer(root.port, "--workers", "1", TAG="x", DELAY="0.05")
    fast = procs.volunteer(root.port, "--workers", "2", TAG="x")
    assert root.wait() == 0, root.err
    assert root.out == lines(*(f"{i}:x" for i in range(400)))
    assert slow.wait(10) == 0 and fast.wait(10) == 0


def test_batch_size_with_several_volunteers(procs: Processes) -> None:
    root = procs.pando(FAST, "--stdin", "--start-idle", "--batch-size", "16", stdin=lines(*range(20000)))
    for _ in range(3):
        procs.volunteer(root.port, "--workers", "2")
    assert root.wait() == 0, root.err
    assert root.out == squares(range(20000))


def test_volunteer_waits_for_the_root_and_retries(procs: Processes) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    volunteer = procs.volunteer(port, "--workers", "1")
    time.sleep(1.5)  # it fails to connect and backs off meanwhile
    root = procs.pando(FAST, "--start-idle", "5", "6", port=port)
    assert root.wait() == 0, root.err
    assert root.out == b"25\n36\n"
    assert volunteer.wait(10) == 0
    assert b"retrying" in volunteer.stderr.read()


# -- configuration -----------------------------------------------------------------------------


def write_config(procs: Processes, text: str) -> None:
    (procs.home / ".pando").mkdir(exist_ok=True)
    (procs.home / ".pando" / "config.json").write_text(text)


def test_config_supplies_defaults_and_the_command_line_wins(procs: Processes) -> None:
    write_config(procs, json.dumps({"local": True}))
    local = procs.pando(FAST, "3", port=None)
    assert local.wait() == 0 and local.out == b"9\n"
    assert "Serving" not in local.err  # --local from the config: no server

    with socket.socket() as probe:
        probe.bind(("", 0))
        taken = probe.getsockname()[1]
        probe.listen()
        write_config(procs, json.dumps({"port": taken, "start-idle": False, "batch-size": 2}))
        clash = procs.pando(FAST, "3", port=None)
        assert clash.wait() == 2 and f"port {taken} is already in use" in clash.err
        free = procs.pando(FAST, "3")  # --port 0 on the command line wins
        assert free.wait() == 0 and free.out == b"9\n"


def test_batch_size_auto_from_the_config_or_the_command_line(procs: Processes) -> None:
    write_config(procs, json.dumps({"batch-size": "auto"}))
    assert procs.run([PANDO, FAST, "--local", "2"]).stdout == b"4\n"  # the config is read and accepted
    root = procs.pando(FAST, "--batch-size", "auto", "1", "2", "3")  # its own helper computes
    assert root.wait() == 0 and root.out == b"1\n4\n9\n", root.err


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "must hold a JSON object"),
        ('{"port": "5000"}', "'port' must be a JSON integer"),
        ('{"start-idle": 1}', "'start-idle' must be a JSON boolean"),
        ('{"batch-size": "big"}', "'batch-size' must be a JSON integer or \"auto\""),
        ('{"colour": "blue"}', "unknown option 'colour'"),
    ],
)
def test_malformed_config_is_a_clear_error(procs: Processes, text: str, message: str) -> None:
    write_config(procs, text)
    done = procs.run([PANDO, FAST, "1"])
    assert done.returncode == 2
    assert message in done.stderr.decode()
    assert b"Traceback" not in done.stderr and done.stdout == b""


def test_config_keys_of_later_options_are_ignored_with_a_warning(procs: Processes) -> None:
    write_config(procs, json.dumps({"headless": True, "local": True}))
    done = procs.run([PANDO, FAST, "4"])
    assert done.returncode == 0 and done.stdout == b"16\n"
    assert b"'headless' is not supported" in done.stderr


# -- bad modules, bad command lines ------------------------------------------------------------

BAD_MODULES = {
    "syntax.py": ("def f(:\n", "syntax error"),
    "nokey.py": ("def f(x, cb):\n    cb(None, x)\n", "no function under '/pando/1.0.0'"),
    "oneargument.py": ("globals()['/pando/1.0.0'] = lambda x: x\n", "must take (value, callback)"),
    "notcallable.py": ("globals()['/pando/1.0.0'] = 42\n", "is a int, not a function"),
    "raises.py": ("raise RuntimeError('boom at import')\n", "failed while loading"),
}


@pytest.mark.parametrize("name", sorted(BAD_MODULES))
def test_bad_module_is_refused_before_any_server_starts(procs: Processes, name: str) -> None:
    body, message = BAD_MODULES[name]
    path = procs.tmp / name
    path.write_text(body)
    done = procs.run([PANDO, str(path), "--port", "0", "1"])
    assert done.returncode == 2
    first = done.stderr.decode().splitlines()[0]
    assert first.startswith("pando: ") and name in first and message in done.stderr.decode()
    assert b"Serving" not in done.stderr and done.stdout == b""


def test_unreadable_module(procs: Processes) -> None:
    done = procs.run([PANDO, str(procs.tmp / "missing.py"), "1"])
    assert done.returncode == 2
    assert done.stderr.decode().startswith("pando: cannot read module")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--batch-size", "0"], "--batch-size must be between"),
        (["--batch-size", "fast"], "--batch-size must be an integer or auto"),
        (["--port", "http"], "--port must be an integer"),
        (["--stdin", "1"], "give the items in one way"),
        (["--frobnicate"], "Usage:"),
        (["--ice-servers", "http://example.org"], "is not a stun:, turn: or turns: URL"),
        (["--bootstrap-timeout", "0"], "--bootstrap-timeout must be between"),
        (["--host", "ftp://example.org", "--secret", "s", "1"], "--host must be HOST:PORT or an http(s):// URL"),
        (["--host", "example.org:99999", "--secret", "s", "1"], "--host has a bad port"),
    ],
)
def test_bad_command_line(procs: Processes, args: list[str], message: str) -> None:
    done = procs.run([PANDO, FAST, *args])
    assert done.returncode == 2
    assert message in done.stderr.decode() and b"Traceback" not in done.stderr


def test_help_and_version(procs: Processes) -> None:
    shown = procs.run([PANDO, "--help"])
    assert shown.returncode == 0
    text = shown.stdout.decode()
    for option in ("--stdin", "--local", "--start-idle", "--port", "--batch-size", "--heartbeat", "--seed",
                   "--reporting-interval", "--global-monitoring", "--quiet", "--host", "--secret", "--ice-servers",
                   "--bootstrap-timeout", "--degree"):
        assert option in text
    assert procs.run([PANDO, "--version"]).stdout.strip() == b"1.0.0"


# -- failures ----------------------------------------------------------------------------------

RAISES = """
import pando

@pando.function
def thirteen(x):
    if x == 13:
        raise ValueError("unlucky " + str(x))
    return x
"""

CALLS_BACK_AN_ERROR = """
def thirteen(x, callback):
    callback("no thirteen here" if x == 13 else None, x)

globals()['/pando/1.0.0'] = thirteen
"""


@pytest.mark.parametrize("body, shown", [(RAISES, "ValueError: unlucky 13"), (CALLS_BACK_AN_ERROR, "no thirteen here")])
@pytest.mark.parametrize("mode", [["--local"], [], ["--start-idle", "--batch-size", "4"]])
def test_function_error_writes_what_came_before_and_exits_1(
    procs: Processes, body: str, shown: str, mode: list[str]
) -> None:
    path = module(procs.tmp, "thirteen.py", body)
    root = procs.pando(path, "--stdin", *mode, stdin=lines(*range(1, 40)))
    if "--start-idle" in mode:
        procs.volunteer(root.port, "--workers", "2")
    assert root.wait() == 1
    assert root.out == lines(*range(1, 13))
    assert "pando: item 13 (value '13') failed" in root.err and shown in root.err
    if body is RAISES:
        assert 'thirteen.py", line 7, in thirteen' in root.err  # the user's own frame
        assert "pando/module.py" not in root.err


def test_poison_item_that_kills_its_worker_is_failed_after_three_holders(procs: Processes) -> None:
    path = module(procs.tmp, "poison.py", """
        import os
        import signal
        import pando

        @pando.function
        def poison(x):
            if x == 5:
                os.kill(os.getpid(), signal.SIGKILL)
            return x
    """)
    root = procs.pando(path, "--stdin", stdin=lines(*range(1, 20)))
    assert root.wait() == 1
    assert root.out == lines(1, 2, 3, 4)
    assert "item 5 (value '5') failed" in root.err and "lost 3 times" in root.err
    assert "killed by SIGKILL" in root.err


def test_a_result_with_a_line_break_is_an_error(procs: Processes) -> None:
    path = module(procs.tmp, "multiline.py", """
        import pando

        @pando.function
        def two_lines(x):
            return f"{x}\\n{x}" if x == 2 else x
    """)
    root = procs.pando(path, "1", "2", "3")
    assert root.wait() == 1
    assert root.out == b"1\n" and "line break" in root.err


# -- input errors, stdout closed, Ctrl-C, port in use -------------------------------------------


@pytest.mark.parametrize("mode", [["--local"], []])
def test_non_utf8_line_is_named(procs: Processes, mode: list[str]) -> None:
    root = procs.pando(FAST, "--stdin", *mode, stdin=b"1\n2\n\xff\xfe\n4\n")
    assert root.wait() == 3
    assert root.out == b"1\n4\n"
    assert "line 3 is not valid UTF-8" in root.err and "Traceback" not in root.err


def test_line_longer_than_the_limit(procs: Processes) -> None:
    root = procs.pando(FAST, "--stdin", stdin=b"1\n" + b"9" * (9 * 1024 * 1024) + b"\n3\n")
    assert root.wait() == 3
    assert root.out == b"1\n"
    assert "line 2 is longer than" in root.err


@pytest.mark.parametrize("mode", [["--local"], []])
def test_closed_stdout_downstream_exits_quietly(procs: Processes, mode: list[str]) -> None:
    count = subprocess.Popen([str(Path(__file__).with_name("count"))], stdout=subprocess.PIPE)
    try:
        root = subprocess.Popen(
            [PANDO, FAST, "--stdin", "--port", "0", *mode],
            stdin=count.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=procs.env(),
        )
        assert root.stdout is not None and root.stderr is not None
        assert root.stdout.readline() == b"0\n"
        root.stdout.close()  # like `| head -1`
        assert root.wait(30) == 141
        err = root.stderr.read().decode()
        assert "Traceback" not in err and "Exception ignored" not in err, err
    finally:
        count.kill()
        count.wait()


def test_ctrl_c_stops_with_130(procs: Processes) -> None:
    writer = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert writer.stdin is not None
        writer.stdin.write(lines(*range(100)))
        writer.stdin.flush()  # and stdin stays open: the reader is blocked reading it
        root = procs.pando(FAST, "--stdin", "--start-idle", stdin=writer.stdout)
        root.port  # wait until it serves
        time.sleep(0.5)
        root.popen.send_signal(signal.SIGINT)
        assert root.wait(20) == 130, root.err
    finally:
        writer.kill()
        writer.wait()
    assert "Fatal Python error" not in root.err
    assert "pando: interrupted" in root.err and "Traceback" not in root.err


def test_ctrl_c_while_the_root_computes(procs: Processes) -> None:
    root = procs.pando(str(EXAMPLES / "square.py"), "--stdin", stdin=lines(*range(100)))
    root.port
    time.sleep(1)
    root.popen.send_signal(signal.SIGINT)
    assert root.wait(20) == 130, root.err
    assert "Traceback" not in root.err
    assert len(root.out.splitlines()) < 5


def test_port_in_use(procs: Processes) -> None:
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = procs.run([PANDO, FAST, "--port", str(port), "1"])
    assert done.returncode == 2
    assert f"port {port} is already in use" in done.stderr.decode() and b"Traceback" not in done.stderr


# -- ids, memory -------------------------------------------------------------------------------


def test_seed_makes_volunteer_ids_repeatable(procs: Processes) -> None:
    def first_id(seed: str) -> str:
        root = procs.pando(FAST, "--start-idle", "--seed", seed, "1")
        volunteer = procs.volunteer(root.port, "--workers", "1")
        assert root.wait() == 0 and volunteer.wait(10) == 0
        assert volunteer.stderr is not None
        return volunteer.stderr.read().decode().split("joined as ")[1].split(";")[0]

    assert first_id("7") == first_id("7") != first_id("8")


def test_endless_input_is_read_only_as_fast_as_results_are_written(procs: Processes) -> None:
    count = subprocess.Popen([str(Path(__file__).with_name("count"))], stdout=subprocess.PIPE)
    try:
        root = procs.pando(FAST, "--stdin", "--start-idle", stdin=count.stdout)
        root.port
        time.sleep(3)  # no volunteer: nothing is written, so the window fills and reading stops
        rss_kib = int(Path(f"/proc/{root.popen.pid}/status").read_text().split("VmRSS:")[1].split()[0])
        assert rss_kib < 150 * 1024, f"the root grew to {rss_kib} KiB"
        procs.volunteer(root.port, "--workers", "1")
        deadline = time.monotonic() + 30
        while len(root.out) < 200_000:  # the stream flows again once a volunteer computes
            assert time.monotonic() < deadline, root.err
            time.sleep(0.1)
    finally:
        count.kill()
        count.wait()


def test_help_into_a_closed_pipe_is_quiet(procs: Processes) -> None:
    for program in (PANDO, str(Path(PANDO).with_name("pando-volunteer"))):
        shown = subprocess.run(f"{program} --help | head -1", shell=True, capture_output=True, timeout=30)
        assert shown.stdout.startswith(b"pando") and shown.stderr == b""


@pytest.mark.parametrize("args", [[], ["http://127.0.0.1:1", "--workers", "none"], ["ftp://x"]])
def test_volunteer_usage_errors_exit_2(procs: Processes, args: list[str]) -> None:
    done = procs.run([str(Path(PANDO).with_name("pando-volunteer")), *args])
    assert done.returncode == 2 and b"Traceback" not in done.stderr


def test_the_roots_own_helper_is_started_again_if_it_dies(procs: Processes) -> None:
    root = procs.pando(str(EXAMPLES / "square.py"), "--stdin", stdin=lines(*range(1, 6)))
    root.port
    deadline = time.monotonic() + 20
    while not (helpers := subprocess.run(["pgrep", "-f", "-P", str(root.popen.pid), "pando.helper"],
                                         capture_output=True, text=True).stdout.split()):
        assert time.monotonic() < deadline, "the helper never started"
        time.sleep(0.1)
    time.sleep(1.5)  # it holds an item by now
    os.kill(int(helpers[0]), signal.SIGKILL)
    root.wait_for_stderr("the root's own helper ended .*; starting it again")
    assert root.wait() == 0, root.err
    assert root.out == squares(range(1, 6))
