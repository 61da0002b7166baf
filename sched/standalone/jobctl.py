"""Job control after submit: `adsub hold|release|update` (scontrol hold/release/update jobid=...).

- hold: a pending job stops being eligible (JobRecord.hold; the core sees an endless begin time,
  so a held job blocks nobody and commits no quota) until released. A hold put by an admin on
  someone else's job ('admin') is released by an admin only, as Slurm's JobHeldAdmin.
- update: the time limit (anyone may lower it, only an admin may raise it; a running job's new
  limit is enforced by the daemon from its next cycle), the job's own priority (admins only) and
  the queue (while pending). The changed job is checked by the core's validate_job.

Who may: the job's owner or an admin (auth.authorize / require_admin). Every change is an event
naming who made it. A RemoteStore (a user who cannot write the store) sends the same call to the
daemon, which runs it here with the caller's uid from the kernel.
"""

from __future__ import annotations

from dataclasses import replace

from adsched.core.timefmt import parse_duration
from adsched.core.reasons import INVALID_QUEUE, INVALID_REQUEST
from adsched.core.validate import validate_job
from adsched.errors import InvalidRequest

from .auth import Identity, authorize, is_admin, require_admin, store_owner_uid
from .store import PENDING, RUNNING, Store


def _is_admin(store: Store, who: Identity | None) -> bool:
    return who is None or is_admin(who, store.config.admins, store_owner_uid(store))


def hold(store, job_id: int, who: Identity | None, now: float) -> str:
    if not isinstance(store, Store):
        return store.call("hold", job_id=job_id)
    authorize(store, who, job_id, "hold", now)
    job = store.job(job_id)
    kind = "admin" if who is not None and who.name != job.user and _is_admin(store, who) else "user"
    with store.transaction():
        cur = store.conn.execute("UPDATE jobs SET hold = ?, reason = ? WHERE id = ? AND state = ?",
                                 (kind, f"JobHeld{kind.title()}", job_id, PENDING))
        if cur.rowcount != 1:
            raise InvalidRequest(f"job {job_id} is {job.state}: only a pending job can be held")
        store._event(job_id, "hold", {"kind": kind, "by": who.name if who else "adsched"}, now)
    return "HELD"


def release(store, job_id: int, who: Identity | None, now: float) -> str:
    if not isinstance(store, Store):
        return store.call("release", job_id=job_id)
    authorize(store, who, job_id, "release", now)
    job = store.job(job_id)
    if not job.hold:
        raise InvalidRequest(f"job {job_id} is not held")
    if job.hold == "admin":
        require_admin(store, who, f"release job {job_id} (held by an admin)", now)
    with store.transaction():
        store.conn.execute("UPDATE jobs SET hold = '', reason = '' WHERE id = ?", (job_id,))
        store._event(job_id, "release", {"by": who.name if who else "adsched"}, now)
    return "RELEASED"


def update(store, job_id: int, who: Identity | None, now: float, time_limit: str | None = None,
           priority: int | None = None, queue: str | None = None) -> dict:
    """Apply the given changes in one transaction; returns them (field -> [old, new])."""
    if not isinstance(store, Store):
        return store.call("update", job_id=job_id, time_limit=time_limit, priority=priority, queue=queue)
    if time_limit is None and priority is None and queue is None:
        raise InvalidRequest("nothing to update: give --time, --priority or --queue")
    authorize(store, who, job_id, "update", now)
    record = store.job(job_id)
    if record.state not in (PENDING, RUNNING):
        raise InvalidRequest(f"job {job_id} already ended ({record.state})")
    job, changes = record.as_job(), {}
    if time_limit is not None:
        try:
            seconds = parse_duration(time_limit)
        except ValueError as e:
            raise InvalidRequest(f"--time: {e}") from None
        if seconds <= 0:
            raise InvalidRequest("--time must be positive")
        if seconds > record.time_limit:  # users may only lower it, as in Slurm
            require_admin(store, who, f"raise the time limit of job {job_id}", now)
        changes["time_limit"] = [record.time_limit, seconds]
    if priority is not None:
        require_admin(store, who, f"set the priority of job {job_id}", now)
        changes["priority"] = [record.priority, priority]
    if queue is not None:
        if record.state != PENDING:
            raise InvalidRequest(f"job {job_id} is {record.state}: its queue changes only while pending")
        changes["queue"] = [record.queue, queue]
    job = replace(job, **{k: new for k, (_, new) in changes.items()})
    problem = validate_job(job, store.config)
    if problem:
        raise InvalidRequest(problem.message if problem.code in (INVALID_REQUEST, INVALID_QUEUE) else str(problem))
    with store.transaction():
        sets = ", ".join(f"{k} = ?" for k in changes)
        cur = store.conn.execute(f"UPDATE jobs SET {sets} WHERE id = ? AND state = ?",
                                 (*[new for _, new in changes.values()], job_id, record.state))
        if cur.rowcount != 1:
            raise InvalidRequest(f"job {job_id} changed state meanwhile; try again")
        store._event(job_id, "update", {"changes": changes, "by": who.name if who else "adsched"}, now)
    return changes
