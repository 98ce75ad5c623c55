"""Reading a command line with docopt, the same way for every Pando command.

docopt reads the command line straight from the usage text; the Unix habits
it lacks are added around it:

- ``--`` ends the options wherever it stands: docopt keeps a ``--`` that
  follows an operand as one more operand (``pando m.py 1 -- -5``).
- A short option that looks like a number (``-0``) is that option: docopt
  reads any such argument as a (negative) number.
- A bad command line is told in one plain line that names the problem, then
  the usage lines, where docopt shows its own objects
  (``[Option(None, '--bogus', 0, True)]``).
"""
from __future__ import annotations

import sys
from typing import Any

from docopt import DocoptExit, Option, Tokens, docopt, parse_argv, parse_docstring_sections, parse_options

from pando import __version__, status, stdout

# Ends the options; every argument after it is an operand, even one that starts with a dash.
_END_OF_OPTIONS = "--"
# An operand after `--` reaches docopt as this prefix and its index: no real
# argument can hold a NUL byte, and docopt reads it as an operand wherever it is.
_STAND_IN = "\0"


class UsageError(status.PandoError):
    """A bad command line (an unknown option, a bad value, options that exclude each other): told with the usage."""


def parse(doc: str, argv: list[str] | None) -> dict[str, Any] | int:
    """The arguments, or the status to exit with at once (bad usage: 2; --help into a closed pipe: 0).

    ``--help`` and ``--version`` print and exit 0 from within docopt.
    """
    argv = sys.argv[1:] if argv is None else argv
    if _END_OF_OPTIONS in argv:
        cut = argv.index(_END_OF_OPTIONS)
        head, operands = argv[:cut], argv[cut + 1 :]
    else:
        head, operands = argv, []
    numeric = {option.longer: option.short for option in options(doc)
               if option.short and option.short[1:].isdigit() and option.longer}
    as_long = {short: longer for longer, short in numeric.items()}
    tokens = [as_long.get(token, token) for token in head]
    tokens += [f"{_STAND_IN}{index}" for index in range(len(operands))]
    try:
        args = docopt(doc, argv=tokens, version=__version__)
    except DocoptExit as exc:
        return fail(doc, UsageError(_problem(doc, tokens, operands, exc)))
    except BrokenPipeError:  # `pando --help | head -1`
        stdout.silence(sys.stdout.fileno())
        return status.OK
    for key, value in args.items():
        if isinstance(value, list):
            args[key] = [_operand(text, operands) for text in value]
        elif isinstance(value, str) and key.startswith("-"):
            if value.startswith(_STAND_IN):  # docopt never takes `--` as an option's value: nor what follows it
                return fail(doc, UsageError(f"{key} requires argument"))
            args[key] = numeric.get(value, value)  # `--seed -0`: the value it was
        elif isinstance(value, str):
            args[key] = _operand(value, operands)
    return args


def fail(doc: str, error: status.PandoError) -> int:
    """Show ``error`` as one line on stderr, and the usage lines after a :class:`UsageError`; its exit status."""
    sections = parse_docstring_sections(doc)
    print(f"{sections.usage_body.split()[0]}: {error}", file=sys.stderr)
    if isinstance(error, UsageError):
        print((sections.usage_header + sections.usage_body).strip("\n"), file=sys.stderr)
    return error.status


def options(doc: str) -> list[Option]:
    """The options the text describes, as docopt reads them."""
    sections = parse_docstring_sections(doc)
    return [*parse_options(sections.before_usage), *parse_options(sections.after_usage)]


def _operand(text: str, operands: list[str]) -> str:
    return operands[int(text[len(_STAND_IN) :])] if text.startswith(_STAND_IN) else text


def _problem(doc: str, tokens: list[str], operands: list[str], exc: DocoptExit) -> str:
    """What is wrong with a command line docopt refused, in words (its own message shows its objects)."""
    known = options(doc)
    met = list(known)  # docopt appends the unknown options it meets
    try:
        given = parse_argv(Tokens(tokens), met)
    except DocoptExit as refused:  # "--port requires argument", "--quiet must not have an argument"
        return str(refused).splitlines()[0]
    if len(met) > len(known):
        name = str(met[len(known)].name)
        # docopt takes a unique prefix for the option; a prefix of several is unknown to it.
        candidates = [option.longer for option in known if option.longer and option.longer.startswith(name)]
        return f"{name} is ambiguous: {', '.join(candidates)}" if len(candidates) > 1 else f"unknown option {name}"
    names = [pattern.name for pattern in given if pattern.name is not None]
    for name in names:
        if names.count(name) > 1:
            return f"{name} is given more than once"
    if str(exc).startswith("Warning: found unmatched"):  # left over once the usage matched
        extra = [str(pattern.value) for pattern in given if pattern.name is None]
        return f"unexpected argument {_operand(extra[-1], operands)!r}" if extra else "unexpected arguments"
    return "missing arguments"
