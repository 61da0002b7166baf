"""Slurm time formats: "MM", "MM:SS", "HH:MM:SS", "D-HH", "D-HH:MM", "D-HH:MM:SS" <-> seconds."""

from __future__ import annotations

import re

_FORMAT = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def parse_duration(text: str | int) -> int:
    """Seconds in a Slurm-style time limit. Raises ValueError on bad input."""
    if isinstance(text, bool):
        raise ValueError(f"not a duration: {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"negative duration: {text}")
        return text * 60  # a bare number is minutes, as in Slurm
    s = str(text).strip()
    m = _FORMAT.match(s)
    if not m:
        raise ValueError(f"not a duration: {text!r} (use MM, HH:MM:SS or D-HH:MM:SS)")
    days, a, b, c = m.groups()
    if days is not None:  # D-HH[:MM[:SS]]
        h, mi, se = int(a), int(b or 0), int(c or 0)
        return ((int(days) * 24 + h) * 60 + mi) * 60 + se
    if b is None:  # MM
        return int(a) * 60
    if c is None:  # MM:SS
        return int(a) * 60 + int(b)
    return (int(a) * 60 + int(b)) * 60 + int(c)  # HH:MM:SS


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "UNLIMITED"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return f"{days}-{h:02d}:{m:02d}:{s:02d}" if days else f"{h:02d}:{m:02d}:{s:02d}"
