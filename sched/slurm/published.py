"""The core's pending reasons, published in Slurm where every Slurm user can read them.

The adsched store is root's (0600), so an ordinary user's `adsub` cannot read the reasons the controller
keeps there. The controller also writes each held job's reason into the job's AdminComment: only root or
the SlurmUser may set it (a user cannot forge it, and a user's own --comment is another field), and on
Slurm 22.05 every user reads it back in `squeue --json` ("admin_comment") and `scontrol show job`
("AdminComment="). The text is

    adsched[ est=<epoch seconds>][ on=<hostlist>]: <the core's reason>

One `scontrol` reads every update of a cycle from stdin (`update JobId=N AdminComment="..."`, one a
line); scontrol's interactive parser keeps the double quotes in the value, and `decode` takes them off.
A job is sent an update only when its reason or estimated nodes change, or its estimated start moves by
EST_SLACK seconds or more; what was sent is kept in the store (table slurm_published). Only held pending
jobs show it: once the controller releases a job, Slurm's own reason is the true one.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from adsched.core.hostlist import HostlistError, compress, expand

PREFIX = "adsched"
EST_SLACK = 60.0  # seconds: a smaller move of the estimated start is not worth a Slurm update
MAX_TEXT = 400  # characters of reason text kept
MAX_UPDATES = 500  # updates sent in one cycle; the rest follow in the next ones

# A held job's reason while no controller runs: stopped (it says so on the way out), or no cycle for STALE
# seconds or 4 of its intervals (killed, or hung): nothing starts then.
NO_CONTROLLER, STALE = "NoController", 60.0

SCHEMA = "CREATE TABLE IF NOT EXISTS slurm_published (job_id INTEGER PRIMARY KEY, text TEXT NOT NULL," \
         " time REAL NOT NULL)"

_TEXT = re.compile(r'^"?adsched(?: est=(\d+))?(?: on=(\S+))?: (.*?)"?$', re.S)


@dataclass(frozen=True)
class Published:
    reason: str
    est_start: float | None = None
    est_nodes: tuple[str, ...] = ()


def encode(p: Published) -> str:
    # Double quotes would end scontrol's quoted value early; newlines would end its line.
    reason = re.sub(r"[\x00-\x1f\x7f]", " ", p.reason.replace('"', "'"))[:MAX_TEXT]
    est = f" est={int(p.est_start)}" if p.est_start is not None else ""
    on = f" on={compress(list(p.est_nodes))}" if p.est_nodes else ""
    return f"{PREFIX}{est}{on}: {reason}"


def decode(text: str | None) -> Published | None:
    """What an AdminComment says, or None when it is empty or not the controller's."""
    m = _TEXT.match(text or "")
    if not m:
        return None
    try:
        nodes = tuple(expand(m.group(2))) if m.group(2) else ()
    except HostlistError:
        return None
    return Published(m.group(3), float(m.group(1)) if m.group(1) else None, nodes)


def foreign(text: str | None) -> bool:
    """An AdminComment someone else wrote (an admin's note): never overwritten."""
    return bool((text or "").strip()) and decode(text) is None


def same(old: Published | None, new: Published) -> bool:
    """Whether `old` still says what `new` says (an estimated start within EST_SLACK counts as the same)."""
    if old is None or (old.reason, old.est_nodes) != (new.reason, new.est_nodes):
        return False
    if old.est_start is None or new.est_start is None:
        return old.est_start == new.est_start
    return abs(old.est_start - new.est_start) < EST_SLACK


def updates(wanted: dict[int, Published], shown: dict[int, str | None], sent: dict[int, str],
            limit: int = MAX_UPDATES) -> dict[int, str]:
    """{job id: AdminComment text} to send this cycle.

    wanted: the core's reason for each held pending job. shown: the job's AdminComment as squeue shows it
    (None when squeue gives no such field: then `sent`, the store's record, stands for it)."""
    out: dict[int, str] = {}
    for job_id, want in wanted.items():
        now_text = shown.get(job_id)
        if now_text is None:
            now_text = sent.get(job_id)
        if foreign(now_text):
            continue
        if not same(decode(now_text), want):
            out[job_id] = encode(want)
            if len(out) >= limit:
                break
    return out


def reasons(jobs) -> dict[int, tuple[str, float | None]]:
    """{job id: (reason, estimated start)} the controller published on the held pending jobs among `jobs`
    (SlurmJobs): what a user who cannot read the store sees in `adsub queue` / `show`."""
    out = {}
    for j in jobs:
        if j.state != "PENDING" or (j.priority or 0) != 0:
            continue
        p = decode(j.raw.get("admin_comment"))
        if p is not None:
            out[j.id] = (p.reason, p.est_start)
    return out


def stopped(at: str) -> str:
    """The reason a stopping controller publishes on the held jobs it kept waiting."""
    return f"{NO_CONTROLLER}: the adsched controller stopped at {at}; nothing starts until it runs again"


def when(t: float) -> str:
    """A time as reasons show it (local, to the second)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t))


def without_controller(found: dict[int, tuple[str, float | None]], last: float | None, interval: float,
                       now: float) -> dict[int, tuple[str, float | None]]:
    """`found` ({job id: (reason, estimated start)}), or, when the controller's last cycle (`last`) is too
    old, NoController for each with no estimate: what it said before it stopped no longer holds."""
    if last is None or now - last <= max(STALE, 4 * interval):
        return found
    text = f"{NO_CONTROLLER}: the adsched controller's last cycle was at {when(last)}; nothing starts until it runs"
    return {i: (r if r.startswith(NO_CONTROLLER) else text, None) for i, (r, _) in found.items()}
