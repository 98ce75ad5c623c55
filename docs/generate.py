"""Make pando's man page and bash completion from its --help text (the docstring of pando/cli.py).

    .venv/bin/python docs/generate.py      # or: make docs

writes docs/pando.1 and docs/pando.bash-completion. test/test_docs.py checks
that the files here are what this makes, so they can never drift from --help.
The help text's blocks (separated by blank lines) map to the man page: the
first line to NAME, the usage lines to SYNOPSIS, the paragraphs before the
options to DESCRIPTION, each options block to OPTIONS (a later one to a
subsection), and each paragraph that starts with a title of one or two words
and a colon ("Exit status: ...") to a section of that name.
"""
from __future__ import annotations

import re
from pathlib import Path

from docopt import Option

from pando import __version__, cli, usage

DOCS = Path(__file__).resolve().parent
MAN_PAGE = DOCS / "pando.1"
COMPLETION = DOCS / "pando.bash-completion"

_TITLE = re.compile(r"([A-Z][a-z]+(?: [a-z]+)?): (.*)", re.DOTALL)
_OPTIONS_TITLE = re.compile(r"([A-Z][a-z]+(?: [a-z]+)?)?\s*[Oo]ptions:\s*(.*)", re.DOTALL)
_CODE = re.compile(r"`([^`]+)`")
_PLACEHOLDER = re.compile(r"\b([A-Z]{2,})\b")


def roff(text: str) -> str:
    """Text as roff source: backslashes and dashes escaped, `code` in bold, no line read as a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    text = _CODE.sub(r"\\fB\1\\fR", text)
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line for line in text.split("\n"))


def _capitalized(text: str) -> str:
    """A section's text, which in --help follows its title's colon: with a capital, as a man page starts it."""
    return text[:1].upper() + text[1:]


def _option_head(head: str) -> str:
    """``-a FILE --arg-file=FILE`` → its forms in bold, their values in italics, commas between forms."""
    forms: list[str] = []
    for word in head.split():
        if word.startswith("-"):
            name, equals, value = word.partition("=")
            forms.append(f"\\fB{roff(name)}\\fR" + (f"=\\fI{value}\\fR" if equals else ""))
        else:
            forms[-1] += f" \\fI{word}\\fR"
    return ", ".join(forms)


def _option_entries(lines: list[str]) -> list[str]:
    """The roff of an options block's lines: one tagged paragraph per option."""
    out: list[str] = []
    for line in lines:
        if line.lstrip().startswith("-"):
            head, *description = re.split(r"\s{2,}", line.strip(), maxsplit=1)
            out += [".TP", _option_head(head), *map(roff, description)]
        else:
            out.append(roff(line.strip()))
    return out


def manpage(doc: str, version: str) -> str:
    """The man page (roff, man macros) of a command whose --help text is ``doc``."""
    blocks = re.split(r"\n\s*\n", doc.strip())
    name, _, summary = blocks[0].partition(": ")
    out = [f'.TH {name.upper()} 1 "" "{name} {version}" "User Commands"', ".SH NAME", f"{roff(name)} \\- {roff(summary)}"]
    section = ""
    for block in blocks[1:]:
        lines = block.split("\n")
        if lines[0].strip().lower() == "usage:":
            out += [".SH SYNOPSIS", ".nf"]
            out += [_PLACEHOLDER.sub(r"\\fI\1\\fR", roff(line.strip())).replace(roff(name), f"\\fB{roff(name)}\\fR", 1)
                    for line in lines[1:]]
            out.append(".fi")
            continue
        options_title = _OPTIONS_TITLE.fullmatch(lines[0].strip())
        if options_title is not None:
            if section != "OPTIONS":
                section = "OPTIONS"
                out.append(".SH OPTIONS")
            else:
                out.append(f".SS {roff(lines[0].partition(':')[0])}")
            if options_title.group(2):
                out += [".PP", roff(_capitalized(options_title.group(2)))]
            out += _option_entries(lines[1:])
            continue
        title = _TITLE.fullmatch(block)
        if title is not None:
            section = title.group(1).upper()
            out += [f".SH {section}", roff(_capitalized(title.group(2)))]
            continue
        if not section:
            section = "DESCRIPTION"
            out.append(".SH DESCRIPTION")
        out += [".PP", roff(block)]
    return "\n".join(out) + "\n"


def _value_name(doc: str, option: Option) -> str | None:
    """What an option's value is called in its description (FILE, PORT…); None for a flag."""
    if not option.argcount:
        return None
    for line in doc.split("\n"):
        if not line.lstrip().startswith("-"):
            continue  # not an option's own line
        words = re.split(r"\s{2,}", line.strip())[0].replace("=", " ").replace(",", " ").split()
        if option.longer in words:
            return next(word for word in words if not word.startswith("-"))
    raise ValueError(f"{option.longer} has no description line")


def completion(doc: str) -> str:
    """A bash completion script for ``pando``: its options, and files where a file is due."""
    options = usage.options(doc)
    forms = [form for option in options for form in (option.short, option.longer) if form]
    valued = [option for option in options if option.argcount]
    files = [form for option in valued if _value_name(doc, option) == "FILE"
             for form in (option.short, option.longer) if form]
    typed = [form for option in valued if _value_name(doc, option) != "FILE"
             for form in (option.short, option.longer) if form]
    return f"""\
# bash completion for pando; made by docs/generate.py from `pando --help`: do not edit.
# Load it with `source docs/pando.bash-completion`, or install it where bash-completion
# looks (/usr/share/bash-completion/completions/pando).
_pando() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} prev=${{COMP_WORDS[COMP_CWORD-1]}}
    if [[ $prev == "=" ]]; then  # --journal=FILE: bash breaks the word at the =
        prev=${{COMP_WORDS[COMP_CWORD-2]}}
    fi
    COMPREPLY=()
    case $prev in
        {"|".join(files)})
            mapfile -t COMPREPLY < <(compgen -f -- "$cur")
            return ;;
        {"|".join(typed)})
            return ;;  # a value to type
    esac
    local word
    for word in "${{COMP_WORDS[@]:1:COMP_CWORD-1}}"; do
        if [[ $word == "--" ]]; then  # the options are over: items, often files
            mapfile -t COMPREPLY < <(compgen -f -- "$cur")
            return
        fi
    done
    if [[ $cur == -* ]]; then
        mapfile -t COMPREPLY < <(compgen -W "{" ".join(forms)}" -- "$cur")
    else  # the module, or items
        mapfile -t COMPREPLY < <(compgen -f -- "$cur")
    fi
}}
complete -o filenames -F _pando pando
"""


def main() -> None:
    doc = cli.__doc__ or ""
    MAN_PAGE.write_text(manpage(doc, __version__))
    COMPLETION.write_text(completion(doc))


if __name__ == "__main__":
    main()
