"""What runs on a node, for recovery after a daemon crash: the same answers on this host and over SSH.

    python -m adsched.standalone.executors.probe reconcile RC...      one line per RC: "pid P", "ended" or "never"
    python -m adsched.standalone.executors.probe sweep STATE_DIR      stdin: JSON [[job, attempt], ...] to keep;
                                                                      prints each killed wrapper's RC file

A rank wrapper claims its rank before it runs anything (rankwrap.py: RC.claim, created
exclusively, holds its pid), so one attempt's rank runs at most once however often it is
launched, e.g. by a recovering daemon while the launch a crashed one sent is still on its
way. The claim says which wrapper is the rank:

- its holder is running: adopt that pid;
- an exit code exists: the rank ended (`ended` reads the code);
- claimed, the holder gone, no code: the wrapper was killed before it could write one
  (recorded as killed by SIGKILL, as `ended` would report it);
- not claimed and no wrapper of it running: never launched (the caller launches it; should
  a launch still in flight start a wrapper too, only one of them gets the claim).

A wrapper that runs but has not claimed yet is waited for (a few seconds), so it is not
taken for a missing rank. The SSH executor runs this module on the nodes (one call per
node), the local executor calls the functions directly.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time

RANKWRAP = "adsched.standalone.executors.rankwrap"
_RC_PATH = re.compile(r"^(?P<job>\d+)/rank-\d+\.(?P<attempt>\d+)\.rc$")
CLAIM_WAIT = 5.0  # seconds a started wrapper gets to claim its rank


def claim_holder(rc_file: str) -> int | None:
    try:
        with open(rc_file + ".claim") as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def claimed_by(rc_file: str, started: int, wait: float = 10.0) -> int:
    """The pid holding the rank once the wrapper just `started` has claimed it or lost (it exits at once)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        holder = claim_holder(rc_file)
        if holder is not None:
            return holder
        if not os.path.exists(f"/proc/{started}") or zombie(started):
            break
        time.sleep(0.02)
    return started


def live_wrappers() -> dict[str, list[int]]:
    """Rank wrappers running on this host: their exit-code file (job, rank, attempt) -> pids."""
    out: dict[str, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if RANKWRAP in args and args.index(RANKWRAP) + 1 < len(args) and not zombie(int(entry)):
            out.setdefault(args[args.index(RANKWRAP) + 1], []).append(int(entry))
    return out


def zombie(pid: int) -> bool:
    """An orphaned wrapper that ended but was never reaped (no init reaps in some containers)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def rank_state(rc_file: str, wait: float = CLAIM_WAIT) -> tuple[str, int | None]:
    """("pid", P), ("ended", None) or ("never", None) for one attempt's rank; see the module's doc."""
    deadline = time.monotonic() + wait
    while True:
        holder = claim_holder(rc_file)
        pids = live_wrappers().get(rc_file, [])  # the processes before the files: a wrapper may end meanwhile
        if holder is not None and holder in pids:
            return "pid", holder
        if os.path.exists(rc_file):
            return "ended", None
        if holder is not None or (not pids and os.path.exists(rc_file + ".started")):
            _write_killed(rc_file)  # it ran (or was about to) and vanished without a code
            return "ended", None
        if not pids:
            return "never", None
        if time.monotonic() >= deadline:  # running unclaimed (e.g. its claim met a full disk): it is the rank
            return "pid", pids[0]
        time.sleep(0.05)


def _write_killed(rc_file: str) -> None:
    tmp = f"{rc_file}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(str(-signal.SIGKILL))
    try:
        os.link(tmp, rc_file)  # never over a code the wrapper wrote meanwhile
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)


def sweep(state_dir: str, keep: set[tuple[int, int]]) -> list[str]:
    """Kill every rank wrapper of this state dir whose (job, attempt) is not in `keep`."""
    prefix = os.path.join(os.path.abspath(state_dir), "jobs") + os.sep
    killed = []
    for rc, pids in live_wrappers().items():
        m = _RC_PATH.match(rc[len(prefix):]) if rc.startswith(prefix) else None
        if m and (int(m["job"]), int(m["attempt"])) not in keep:
            for pid in pids:
                try:
                    os.killpg(pid, signal.SIGKILL)  # the wrapper leads its session: the command goes too
                    killed.append(rc)
                except (ProcessLookupError, PermissionError):
                    pass
    return killed


def main(argv: list[str]) -> int:
    if argv[:1] == ["reconcile"]:
        for rc in argv[1:]:
            what, pid = rank_state(rc)
            print(rc, what, pid if pid is not None else "")
        return 0
    if argv[:1] == ["sweep"] and len(argv) == 2:
        keep = {(int(j), int(a)) for j, a in json.load(sys.stdin)}
        for rc in sweep(argv[1], keep):
            print(rc)
        return 0
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
