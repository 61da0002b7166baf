"""Parsing the Slurm-style request strings users type: arrays, dependencies, MIG, signals."""

from __future__ import annotations

import re
import signal as signals

from .errors import InvalidRequest

MAX_ARRAY_TASKS = 10_000  # like Slurm's MaxArraySize, a guard against a typo of 0-9999999

_ARRAY = re.compile(r"^([\d,\-:]+)(?:%(\d+))?$")


def parse_array(text: str) -> tuple[list[int], int | None]:
    """"0-999%50" -> ([0..999], 50); "1,3,5-9:2" -> ([1, 3, 5, 7, 9], None)."""
    m = _ARRAY.match(text.strip())
    if not m:
        raise InvalidRequest(f"--array: {text!r} is not like 0-999%50 or 1,3,5-7")
    indexes: list[int] = []
    for part in m.group(1).split(","):
        r = re.match(r"^(\d+)(?:-(\d+)(?::(\d+))?)?$", part)
        if not r:
            raise InvalidRequest(f"--array: bad range {part!r}")
        lo, hi, step = int(r.group(1)), int(r.group(2) or r.group(1)), int(r.group(3) or 1)
        if hi < lo or step < 1:
            raise InvalidRequest(f"--array: range {part!r} is empty")
        if (hi - lo) // step + 1 + len(indexes) > MAX_ARRAY_TASKS:
            raise InvalidRequest(f"--array: more than {MAX_ARRAY_TASKS} tasks")
        indexes.extend(range(lo, hi + 1, step))
    if len(set(indexes)) != len(indexes):
        raise InvalidRequest("--array: an index appears twice")
    throttle = int(m.group(2)) if m.group(2) else None
    if throttle is not None and throttle < 1:
        raise InvalidRequest("--array: the %N throttle must be >= 1")
    return sorted(indexes), throttle


def parse_dependency(text: str) -> tuple[list[int], list[int]]:
    """"afterok:12:13,afterany:14" (or "afterok:12,13") -> ([12, 13], [14])."""
    after_ok: list[int] = []
    after_any: list[int] = []
    current = None
    for token in text.replace(" ", "").split(","):
        if not token:
            continue
        kind, _, ids = token.partition(":") if not token.isdigit() else (None, "", token)
        if kind is not None:
            if kind not in ("afterok", "afterany"):
                raise InvalidRequest(f"--dependency: {kind!r} is not supported (afterok, afterany)")
            current = after_ok if kind == "afterok" else after_any
        if current is None:
            raise InvalidRequest(f"--dependency: {text!r} is not like afterok:ID[:ID]")
        for i in ids.split(":"):
            if not i.isdigit():
                raise InvalidRequest(f"--dependency: {i!r} is not a job id")
            current.append(int(i))
    if not after_ok and not after_any:
        raise InvalidRequest(f"--dependency: {text!r} names no job")
    return after_ok, after_any


def parse_mig(text: str) -> tuple[str, int]:
    """"1g.10gb:2" -> ("1g.10gb", 2); "1g.10gb" -> ("1g.10gb", 1)."""
    m = re.match(r"^(\d+g\.\d+gb(?:\+me)?)(?::(\d+))?$", text.strip())
    if not m:
        raise InvalidRequest(f"--gpus: {text!r} is neither a GPU count nor a MIG profile like 1g.10gb:2")
    count = int(m.group(2) or 1)
    if count < 1:
        raise InvalidRequest("--gpus: needs at least 1 MIG slice")
    return m.group(1), count


SIGNALS = {"TERM": signals.SIGTERM, "USR1": signals.SIGUSR1, "USR2": signals.SIGUSR2, "INT": signals.SIGINT,
           "HUP": signals.SIGHUP}


def parse_signal(text: str) -> tuple[int, int | None]:
    """"USR1@120" -> (SIGUSR1, 120); "TERM" -> (SIGTERM, None): signal, seconds of warning."""
    name, _, secs = text.strip().upper().removeprefix("SIG").partition("@")
    name = name.removeprefix("SIG")
    if name not in SIGNALS:
        raise InvalidRequest(f"--signal: {name!r} is not one of {', '.join(SIGNALS)}")
    if secs and not secs.isdigit():
        raise InvalidRequest(f"--signal: {secs!r} is not a number of seconds")
    return SIGNALS[name], int(secs) if secs else None
