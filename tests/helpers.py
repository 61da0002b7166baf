"""Helpers the end-to-end tests share."""

from __future__ import annotations

import sys
import time


def py(code: str) -> list[str]:
    """A command that runs Python code with this interpreter."""
    return [sys.executable, "-c", code]


def wait_for(pred, timeout: float = 30.0, step: float = 0.1, what: str = "condition"):
    """Poll `pred` until it returns something truthy (returned), or fail after `timeout` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"{what} not reached in {timeout:.0f} s")
