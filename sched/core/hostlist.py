"""Slurm-style host lists: "node[01-04,07],gpu1" <-> ["node01", ..., "gpu1"]."""

from __future__ import annotations

import re

_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


class HostlistError(ValueError):
    pass


def _split_top_level(expr: str) -> list[str]:
    """Split on commas that are not inside brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(expr):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise HostlistError(f"unbalanced ']' in {expr!r}")
        elif ch == "," and depth == 0:
            parts.append(expr[start:i])
            start = i + 1
    if depth:
        raise HostlistError(f"unbalanced '[' in {expr!r}")
    parts.append(expr[start:])
    return [p.strip() for p in parts if p.strip()]


MAX_NAMES = 100_000  # a typo like n[1-100000000] is an error, not minutes of expanding


def _expand_one(pattern: str) -> list[str]:
    m = re.search(r"\[([^\]]*)\]", pattern)
    if not m:
        if "[" in pattern or "]" in pattern:
            raise HostlistError(f"bad host pattern {pattern!r}")
        return [pattern]
    head, body, tail = pattern[: m.start()], m.group(1), pattern[m.end() :]
    out, tails = [], None
    for item in body.split(","):
        r = _RANGE.match(item.strip())
        if not r:
            raise HostlistError(f"bad range {item!r} in {pattern!r}")
        lo_s, hi_s = r.group(1), r.group(2) or r.group(1)
        lo, hi = int(lo_s), int(hi_s)
        if hi < lo:
            raise HostlistError(f"range {item!r} goes backwards in {pattern!r}")
        width = len(lo_s) if lo_s.startswith("0") else 0
        if hi - lo + 1 > MAX_NAMES:
            raise HostlistError(f"range {item!r} in {pattern!r} names {hi - lo + 1} hosts (at most {MAX_NAMES})")
        for n in range(lo, hi + 1):
            if tails is None:  # the same for every number: expanded once (each adsub call expands the config's)
                tails = _expand_one(tail)
            for rest in tails:
                out.append(f"{head}{n:0{width}d}{rest}")
            if len(out) > MAX_NAMES:
                raise HostlistError(f"{pattern!r} names more than {MAX_NAMES} hosts")
    return out


def expand(expr: str) -> list[str]:
    """Expand a host list expression, keeping order and zero padding."""
    names: list[str] = []
    for part in _split_top_level(expr):
        names.extend(_expand_one(part))
    return names


_TAIL_NUM = re.compile(r"^(.*?)(\d+)$")


def compress(names: list[str]) -> str:
    """Inverse of expand for names with a numeric suffix: ["n1","n2","n3","x"] -> "n[1-3],x"."""
    groups: list[tuple[str, int, list[int]]] = []  # (prefix, width, numbers) in first-seen order
    out: list[str] = []
    for name in names:
        m = _TAIL_NUM.match(name)
        if not m:
            out.append(name)
            continue
        prefix, digits = m.group(1), m.group(2)
        width = len(digits)  # keeps names exact: node09 and node10 share width 2, n9 and n10 do not
        for g in groups:
            if g[0] == prefix and g[1] == width:
                g[2].append(int(digits))
                break
        else:
            groups.append((prefix, width, [int(digits)]))
    for prefix, width, nums in groups:
        nums = sorted(set(nums))
        ranges, lo = [], nums[0]
        for a, b in zip(nums, nums[1:] + [None]):
            if b != a + 1:
                ranges.append(f"{lo:0{width}d}" if lo == a else f"{lo:0{width}d}-{a:0{width}d}")
                lo = b
        if len(ranges) == 1 and "-" not in ranges[0]:
            out.append(f"{prefix}{ranges[0]}")
        else:
            out.append(f"{prefix}[{','.join(ranges)}]")
    return ",".join(out)
