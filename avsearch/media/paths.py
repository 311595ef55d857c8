"""File names that are not valid UTF-8: how they are shown, and their lossless JSON form.

On POSIX a file name is bytes. Python turns the bytes that are not UTF-8 into lone surrogates
(``b"\\xff"`` → ``"\\udcff"``, PEP 383), a ``str`` that cannot be encoded to UTF-8: printing it,
writing it to SQLite or putting it into JSON fails or produces invalid output. Everything that
shows a path goes through :func:`display_path`, which writes each such byte as ``\\xff``
(readable, valid UTF-8, but not reversible when a name already holds ``\\x``); JSON carries the
exact bytes besides, base64-encoded, under ``<key>_b64`` (see :func:`path_fields`).
"""

from __future__ import annotations

import base64
import os
from typing import Any

PathLike = str | os.PathLike[str]


def display_text(text: str) -> str:
    """``text`` with every undecodable byte (a surrogate escape) written as ``\\xNN``.

    Valid UTF-8 text comes back unchanged. Any other lone surrogate is written as ``\\udNNN``.
    """
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that did not come from a file name's byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def display_path(path: PathLike) -> str:
    """A path as it can be printed: itself when it is valid UTF-8, else with ``\\xNN`` escapes."""
    return display_text(os.fspath(path))


def is_utf8(path: PathLike) -> bool:
    """True when the path's bytes are valid UTF-8 (it can be stored and printed as it is)."""
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def path_fields(path: PathLike, key: str = "path") -> dict[str, str]:
    """JSON fields for a path: ``{key: display form}``, plus ``{key}_b64`` (base64 of the exact
    bytes) when the name is not valid UTF-8."""
    out = {key: display_path(path)}
    if not is_utf8(path):
        out[f"{key}_b64"] = base64.b64encode(os.fsencode(path)).decode("ascii")
    return out


def path_from_b64(value: str) -> str:
    """The path a ``*_b64`` field names (the inverse of :func:`path_fields`)."""
    return os.fsdecode(base64.b64decode(value))


def json_safe(data: Any) -> Any:
    """``data`` with every string (keys too) passed through :func:`display_text`, so that
    ``json.dumps`` of it always encodes to UTF-8."""
    if isinstance(data, str):
        return display_text(data)
    if isinstance(data, dict):
        return {json_safe(k): json_safe(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [json_safe(v) for v in data]
    return data
