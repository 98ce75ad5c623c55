"""Reading a command line with docopt, the same way for every Pando command."""
from __future__ import annotations

import sys
from typing import Any

from docopt import DocoptExit, docopt

from pando import __version__, status, stdout


def parse(doc: str, argv: list[str] | None) -> dict[str, Any] | int:
    """The arguments, or the status to exit with at once (bad usage: 2; --help into a closed pipe: 0).

    ``--help`` and ``--version`` print and exit 0 from within docopt.
    """
    try:
        return docopt(doc, argv=argv, version=__version__)
    except DocoptExit as exc:
        print(exc, file=sys.stderr)
        return status.USAGE
    except BrokenPipeError:  # `pando --help | head -1`
        stdout.silence(sys.stdout.fileno())
        return status.OK
