"""The real data in ../shared/ (beside the repository; CI lays a copy there): read, never copied.

A test that needs a file fails loudly when it is missing: a silent skip would hide a CI
machine without shared/.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("ADSCHED_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
TRACES = Path(os.environ.get("ADSCHED_TRACES", SHARED / "traces"))
GPU_FIXTURES = SHARED / "fixtures" / "gpu-h200"
KTH = TRACES / "KTH-SP2-1996-2.1-cln.swf.gz"
OPENB_PODS = TRACES / "openb_pod_list_default.csv"
OPENB_NODES = TRACES / "openb_node_list_gpu_node.csv"


def requires(*paths: Path):
    """Decorator: fail (not skip) with the missing path named."""

    def wrap(test):
        @functools.wraps(test)
        def run(*args, **kwargs):
            missing = [str(p) for p in paths if not p.exists()]
            if missing:
                pytest.fail(f"real data missing: {', '.join(missing)} (shared/ must sit beside the repository)")
            return test(*args, **kwargs)

        return run

    return wrap
