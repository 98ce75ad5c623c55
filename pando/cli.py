"""pando: lend a stream of items to volunteers and print their results in input order.

Usage:
  pando MODULE [options] [--] [ITEM...]
  pando (-h | --help | --version)

MODULE is a Python file that binds a function to the key '/pando/1.0.0',
most simply with the @pando.function decorator. Each ITEM, or without ITEM
arguments each line of standard input (unless it is a terminal), is lent to
a volunteer: a browser tab that opened one of the printed URLs, or a
`pando-volunteer URL` process. Results are printed on standard output, one
line per item, in input order; nothing else is (what the module prints goes
to stderr).

Only invited volunteers join: the printed URLs carry this user's join key
after #key= (kept in $HOME/.pando/join-key, made on first use). Anyone with
that URL can join and sees the module and the items; keep it among people and
machines you trust.

Options:
  --stdin           Read the items from standard input, one per line, even
                    from a terminal. Without it, standard input is read
                    when there is no ITEM nor --arg-file and it is not a
                    terminal.
  -a FILE --arg-file=FILE
                    Read the items from FILE, one per line (- for standard
                    input).
  -0 --null         Items in standard input or FILE end with a NUL byte
                    instead of a newline, as from find -print0: for items
                    that hold newlines.
  --raw             Give every item to the function as the str it is (see
                    Items).
  --local           Compute here, one item after another, with no server and
                    no volunteers: to try a module on a few items.
  --start-idle      Leave all the computing to volunteers. Without it, this
                    machine computes while no volunteer is connected.
  --workers=N       Worker processes this machine computes with while no
                    volunteer is connected (default: one per core).
  --port=PORT       Port of the volunteer page and WebSocket endpoint
                    (default: 5000; 0 picks a free one).
  --bind=ADDR       Address to listen on, such as 127.0.0.1 for this
                    machine only (default: every interface).
  --join-key=KEY    Join key for this run instead of the saved one: 16 to
                    128 characters among A-Z a-z 0-9 _ -.
  --batch-size=B    Items a volunteer may hold per worker at a time, or
                    auto: as many as cover its round trip, measured from
                    its item times and link (default: auto). A number pins
                    it; more hides network latency.
  --heartbeat=MS    Heartbeat interval in milliseconds (default: 30000). A
                    volunteer silent for longer than twice that is dropped
                    and its items are lent to others.
  --seed=SEED       Integer that makes volunteer ids repeatable.
  --timeout=SECONDS
                    Longest an item may take on one volunteer; then it is
                    taken back and lent elsewhere, and after 3 such losses
                    the item fails (default: none). With --local the item
                    is interrupted and tried again, 3 times in all.
  --retries=N       Times an item whose function raised is tried again, on
                    other volunteers when there are, before the run fails
                    (default: 1).
  --verify=K        Have K different volunteers (K >= 2) compute every item
                    and accept a result only when K of them agree, with a
                    strict majority; otherwise the item fails. The root then
                    leaves the computing to volunteers, as with --start-idle.
  --journal=FILE    Record every accepted result in FILE (a text file, one
                    result a line) before it is written to stdout. A FILE
                    that already holds results is only taken with --resume.
  --resume          With --journal and the same input: write the results
                    the journal holds without computing them again, and
                    compute the rest (after a crash, say). Input that is not
                    the journal's stops the run before anything is written.
  --host=HOST       Also take volunteers through the pando-server at HOST
                    (HOST:PORT, or an http(s):// URL): it serves the page to
                    anyone who can reach it, and volunteers join this root
                    over WebRTC data channels. Needs the server's secret.
  --secret=SECRET   The secret of the pando-server at --host (default:
                    $PANDO_SECRET, which other users cannot see in ps).
  --ice-servers=URLS
                    STUN and TURN servers for WebRTC joins, comma separated,
                    such as stun:stun.example.org:3478 or
                    turn:USER:PASSWORD@turn.example.org:3478 (default: none,
                    which is enough on one LAN).
  --bootstrap-timeout=SECONDS
                    Longest a WebRTC join may take before it is abandoned
                    and tried again (default: 60).
  --reporting-interval=S
                    Seconds between volunteers' status reports, and between
                    updates of the monitoring page and log (default: 3).
  --degree=D        Children each node of the WebRTC tree takes at most:
                    this root, and every volunteer that can relay
                    (default: 10). Later joiners go further down the tree,
                    whose inner volunteers pass items down and results up.
  --global-monitoring
                    Show every volunteer of the tree on the monitoring page
                    and in the status log, not only this root's children
                    (each with its subtree's totals).
  -q --quiet        No progress line nor QR code on stderr.
  -h --help         Show this text.
  --version         Show the version.

Negating options: each switches off an option that config.json switches on.
  --no-stdin        Read no items from standard input (but with -a -).
  --no-local
  --no-start-idle
  --no-global-monitoring
  --no-quiet
  --no-raw

Items: an integer literal such as 42 or -7 reaches the function as an int,
a decimal literal such as 2.5 or 1e3 as a float, anything else (007 too) as
a str; with --raw every item is a str, as written. A -- ends the options:
put it before items that start with a dash. Items come from one place: ITEM
arguments, --arg-file, or standard input. On a terminal, standard input is
read only with --stdin, so `pando MODULE` alone has no items and ends at
once, --start-idle or not. A result is printed as is if it is a str, with
str() if it is a number, and as JSON otherwise.

Monitoring: the printed http://HOST:PORT/monitor#key=KEY; page shows
volunteers and throughput live. On a terminal, stderr also shows a QR code of
the join URL (for phones) and a progress line, which results and messages
never share. PANDO_DEBUG=monitoring writes a JSON status per interval on
stderr; other topics: lender, session, websockets, threads, webrtc, all (see
docs/monitoring.md).

Config file: defaults for any option can be set in $HOME/.pando/config.json,
for example {"port": 6000, "batch-size": 4, "start-idle": true}; the command
line wins (--no-start-idle switches that one off again).

Exit status: 0 all results written; 1 the run failed: the function failed
on an item (it, its value and the traceback are on stderr; every earlier
result is written), results or the journal could not be written, nothing
could compute (the root's helper keeps dying and no volunteer is connected),
or an internal error; 2 bad command line, config, module, join key, port or
journal (one that holds results without --resume, is in use, or was written
for other input), or an --arg-file that cannot be opened; 3 an input item that
is not UTF-8 or is longer than 8 MiB, or input that cannot be read; 130
interrupted; 141 stdout was closed.
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

from pando import config, debug, status, usage
from pando.console import Console
from pando.helper import Helper

# Built-in defaults, under the config file, under the command line. The
# default of stdin, None, reads standard input when it is not a terminal.
DEFAULTS: dict[str, Any] = {"port": 5000, "bind": "", "join-key": None, "batch-size": "auto", "heartbeat": 30_000,
                            "seed": None, "timeout": None, "retries": 1, "verify": None, "journal": None,
                            "resume": False, "reporting-interval": 3.0,
                            "host": None, "secret": None, "ice-servers": None, "bootstrap-timeout": 60.0, "degree": 10, "workers": None,
                            "start-idle": False, "stdin": None, "raw": False,
                            "local": False, "quiet": False, "global-monitoring": False}
#: The on/off options config.json can switch on: each has a --no- form that switches it off.
SWITCHES = tuple(key for key, kind in config.KEYS.items() if kind is bool)
# Options with a value: how to read it, and its bounds (both inclusive).
_VALUES: dict[str, tuple[type, float, float]] = {
    "port": (int, 0, 65535),
    "batch-size": (int, 1, 1_000_000),
    "heartbeat": (int, 100, 86_400_000),
    "seed": (int, -(2**63), 2**63),
    "timeout": (float, 0.001, 86_400 * 365),
    "retries": (int, 0, 100),
    "verify": (int, 2, 100),
    "reporting-interval": (float, 0.05, 86_400),
    "bootstrap-timeout": (float, 1, 3600),
    "degree": (int, 1, 1000),
    "workers": (int, 1, 1024),
}


def _option(args: dict[str, Any], configured: dict[str, Any], key: str) -> Any:
    given = args[f"--{key}"]
    if key in SWITCHES and args[f"--no-{key}"]:
        if given:
            raise usage.UsageError(f"--{key} and --no-{key} contradict each other")
        return False
    if given is None or given is False:
        given = configured.get(key, DEFAULTS[key])
        if key not in _VALUES or given is None:
            return given
    elif given is True or key not in _VALUES:  # a flag, or a text option
        return given
    if key in config.AUTO and given == config.AUTO_VALUE:
        return None
    kind, low, high = _VALUES[key]
    try:
        value = kind(given)
    except ValueError:
        what = ("an integer" if kind is int else "a number") + (" or auto" if key in config.AUTO else "")
        raise usage.UsageError(f"--{key} must be {what}, not {given!r}") from None
    if not low <= value <= high:
        raise usage.UsageError(f"--{key} must be between {low:g} and {high:g}, not {value}")
    return value


def _run(args: dict[str, Any]) -> int:
    configured, warnings = config.load()
    options = {key: _option(args, configured, key) for key in DEFAULTS}
    console = Console(sys.stderr, live=not options["quiet"] and sys.stderr.isatty())
    debug.configure(os.environ.get("PANDO_DEBUG", ""), console)
    for warning in warnings:
        console.log(f"pando: {warning}")
    module_path = args["MODULE"]
    if options["verify"] and options["local"]:
        raise usage.UsageError("--verify needs volunteers to compare; it cannot be used with --local")
    if options["resume"] and options["journal"] is None:
        raise usage.UsageError("--resume needs --journal FILE: the journal to resume from")
    workers = options["workers"] or os.cpu_count() or 1
    # Under --verify the helper would be one voice, only ever voting alone.
    computes_itself = not options["local"] and not options["start-idle"] and not options["verify"]
    with contextlib.ExitStack() as stack:
        # The root's own helper starts first: its start-up overlaps the root's (pando.helper). On a live
        # terminal the module's prints come through the console, not onto the progress line.
        helper = stack.enter_context(Helper(console.log, workers, console.log if console.live else None)) \
            if computes_itself else None
        from pando import launch  # after the helper started: most of the root's start is this import

        return launch.run(args, options, module_path, console, helper)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``pando``; returns the exit status."""
    try:
        args = usage.parse(__doc__, argv)
        if isinstance(args, int):
            return args
        code = _run(args)
    except status.PandoError as exc:  # InputError too
        code = usage.fail(__doc__, exc)
    except KeyboardInterrupt:
        print("pando: interrupted", file=sys.stderr)
        code = status.INTERRUPTED
    return code


if __name__ == "__main__":
    sys.exit(main())
