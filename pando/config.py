"""Defaults from ``$HOME/.pando/config.json``; the command line wins over them."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pando.status import PandoError

#: Keys this version understands, with the JSON type each must have.
KEYS: dict[str, type] = {
    "port": int,
    "bind": str,
    "join-key": str,
    "batch-size": int,
    "heartbeat": int,
    "seed": int,
    "timeout": float,
    "retries": int,
    "verify": int,
    "reporting-interval": float,
    "host": str,
    "secret": str,
    "ice-servers": str,
    "bootstrap-timeout": float,
    "degree": int,
    "workers": int,
    "start-idle": bool,
    "stdin": bool,
    "local": bool,
    "quiet": bool,
    "global-monitoring": bool,
    "raw": bool,
}
_JSON_NAMES = {int: "integer", float: "number", bool: "boolean", str: "string"}
#: Keys that also take this string, for "let pando decide".
AUTO = ("batch-size",)
AUTO_VALUE = "auto"

#: Keys of the original tool for options this version does not have yet:
#: accepted, with a warning, so an existing config file keeps working.
NOT_YET = ("iceServers", "headless", "sync-stdio", "public", "limit")


def path() -> Path:
    return Path(os.environ.get("HOME", "~")).expanduser() / ".pando" / "config.json"


def load(file: Path | None = None) -> tuple[dict[str, Any], list[str]]:
    """The config's options (empty if there is no file) and warnings about it."""
    file = file or path()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}, []
    except (OSError, UnicodeDecodeError) as exc:
        raise PandoError(f"cannot read {file}: {exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise PandoError(f"{file} is not valid JSON: {exc}") from None
    except RecursionError:
        raise PandoError(f"{file} is not a config: its JSON is nested too deeply") from None
    if not isinstance(data, dict):
        raise PandoError(f"{file} must hold a JSON object of option names and values")
    options: dict[str, Any] = {}
    warnings: list[str] = []
    for key, value in data.items():
        if key in NOT_YET:
            warnings.append(f"{file}: '{key}' is not supported by this version of pando; ignored")
            continue
        kind = KEYS.get(key)
        if kind is None:
            known = ", ".join(sorted(KEYS))
            raise PandoError(f"{file}: unknown option '{key}' (known: {known})")
        if not (type(value) is kind or (kind is float and type(value) is int) or (key in AUTO and value == AUTO_VALUE)):
            also = f' or "{AUTO_VALUE}"' if key in AUTO else ""
            raise PandoError(f"{file}: '{key}' must be a JSON {_JSON_NAMES[kind]}{also}, not {value!r}")
        options[key] = value
    return options, warnings
