"""Hostile input stays data: the types and texts a job request may hold, checked before anything.

Commands, env values and workdirs are passed as argv / environ entries (never through a shell
unquoted), so shell metacharacters, quotes and newlines in them are fine. What cannot be
carried is refused with one clear line (InvalidRequest, exit 2) and nothing is written:
NUL bytes (no argv or environ entry can hold one), text that is not valid UTF-8 (the store
keeps UTF-8), env names that are not NAME=VALUE-safe, strings past the kernel's limits, ints
SQLite cannot hold, and control characters in the short fields shown in tables (name, queue...).
"""

from __future__ import annotations

import re

from .errors import InvalidRequest

MAX_ARG_BYTES = 128 * 1024  # Linux MAX_ARG_STRLEN: one argv or environ string
MAX_TOTAL_BYTES = 1024 * 1024  # all of a job's command and env (ARG_MAX is 2 MiB, less our own env)
MAX_PATH_BYTES = 4096  # PATH_MAX
MAX_SHORT = 200  # name, queue and the Slurm-style strings
MAX_INT = 2**31 - 1
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_SHORT_FIELDS = ("name", "queue", "time", "array", "dependency", "signal", "mig")
_INT_FIELDS = ("nodes", "gpus_per_node", "gpus", "priority", "max_leaves")


def check_text(field: str, value, limit: int, control_ok: bool = True) -> int:
    """Raise InvalidRequest unless `value` is storable text; returns its UTF-8 size."""
    if not isinstance(value, str):
        raise InvalidRequest(f"{field}: must be text, got {type(value).__name__}")
    if "\x00" in value:
        raise InvalidRequest(f"{field}: contains a NUL byte")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidRequest(f"{field}: is not valid UTF-8") from None
    if size > limit:
        raise InvalidRequest(f"{field}: longer than {limit} bytes")
    if not control_ok and any(c < " " or c == "\x7f" for c in value):
        raise InvalidRequest(f"{field}: contains a control character (newline, tab, escape...)")
    return size


def check_request(req) -> None:
    """Every field of a JobRequest (from flags, a job TOML file or the daemon's socket)."""
    command = req.command
    if not isinstance(command, (list, tuple)):
        raise InvalidRequest(f"command: must be a list of arguments, got {type(command).__name__}")
    total = 0
    for i, arg in enumerate(command):
        total += check_text(f"command argument {i + 1}", arg, MAX_ARG_BYTES)
    if not isinstance(req.env, dict):
        raise InvalidRequest(f"env: must be a table of NAME = \"value\", got {type(req.env).__name__}")
    for key, value in req.env.items():
        if not isinstance(key, str) or not _ENV_NAME.match(key):
            raise InvalidRequest(f"env: {key!r} is not a variable name (letters, digits, _; not first a digit)")
        total += check_text(f"env.{key}", value, MAX_ARG_BYTES)
    if total > MAX_TOTAL_BYTES:
        raise InvalidRequest(f"command and env: {total} bytes, more than {MAX_TOTAL_BYTES}")
    check_text("workdir", req.workdir, MAX_PATH_BYTES)
    for field in _SHORT_FIELDS:
        value = getattr(req, field)
        if field == "time" and isinstance(value, int) and not isinstance(value, bool):  # minutes, as in Slurm
            if not 0 <= value <= MAX_INT // 60:
                raise InvalidRequest(f"time: {value} is out of range")
        elif value is not None:
            check_text(field, value, MAX_SHORT, control_ok=False)
    for field in _INT_FIELDS:
        value = getattr(req, field)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidRequest(f"{field}: must be an integer, got {value!r}")
        if not -MAX_INT <= value <= MAX_INT:
            raise InvalidRequest(f"{field}: {value} is out of range")
    if not isinstance(req.no_requeue, bool):
        raise InvalidRequest(f"no_requeue: must be true or false, got {req.no_requeue!r}")


def printable(value) -> str:
    """A table cell or a `show` line: control characters escaped, so one value stays one line."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
                   for c in text)
