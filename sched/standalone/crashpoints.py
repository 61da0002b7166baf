"""Crash points for the fault-injection tests: the daemon kills itself (SIGKILL) at the Nth one.

    ADSCHED_CRASH_AFTER=N          die at the Nth crash point this process passes
    ADSCHED_CRASH_KIND=launch      count only that kind of point (commit, launch, launch-sent, signal, kill)
    ADSCHED_CRASH_LOG=PATH         first append the point's name there (which step the crash cut)

A crash point sits after every committed store transaction, after each rank's launch and
after each signal to a job's ranks: a kill -9 between any two of these steps is one of
these points. Over SSH, `launch-sent` cuts a launch whose command is on its way to the node
and whose answer (the rank's pid) was never read. Unset (production), `hit` is one dict lookup.
"""

from __future__ import annotations

import os
import signal

_left = int(os.environ.get("ADSCHED_CRASH_AFTER", "0") or 0)
_kind = os.environ.get("ADSCHED_CRASH_KIND") or None


def hit(point: str) -> None:
    global _left
    if _left <= 0 or (_kind is not None and point != _kind):
        return
    _left -= 1
    if _left == 0:
        log = os.environ.get("ADSCHED_CRASH_LOG")
        if log:
            with open(log, "a") as f:
                f.write(point + "\n")
        os.kill(os.getpid(), signal.SIGKILL)


def arm(after: int, kind: str | None = None) -> None:
    """Die at the `after`th point (of `kind`) from now (a forked daemon in the tests; 0 disarms)."""
    global _left, _kind
    _left, _kind = after, kind
