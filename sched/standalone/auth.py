"""Who is asking, and whether they may: identity from the OS, authorization like Slurm's.

Identity is never read from the environment ($USER, $LOGNAME): it is the caller's real uid
(os.getuid()), or, for a request that reaches the daemon over its Unix socket, the peer's uid
as the kernel reports it (SO_PEERCRED). The name is the uid's passwd entry.

Authorization: everyone may list every job (as squeue shows all); only a job's owner, an
admin named in the cluster TOML (`[cluster] admins = [...]`), root, or the store's owner (who can
write the SQLite file anyway) may cancel, hold or modify it. A refusal is recorded as a
`denied` event on the job and raised as PermissionDenied (one line, exit 1).

Stdlib only: `adsub` imports this on its fast path.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass

from adsched.errors import InvalidRequest, PermissionDenied


@dataclass(frozen=True)
class Identity:
    uid: int
    name: str


def identity_of(uid: int) -> Identity:
    """The uid's passwd name; a uid without one (a bare container) is named by its number."""
    try:
        return Identity(uid, pwd.getpwuid(uid).pw_name)
    except KeyError:
        return Identity(uid, str(uid))


def current_identity() -> Identity:
    """The calling process's real uid, whatever $USER or $LOGNAME say."""
    return identity_of(os.getuid())


def store_owner_uid(store) -> int:
    """The uid owning the store's SQLite file (this process's for an in-memory store)."""
    try:
        return os.stat(os.path.join(store.state_dir, store.DB_NAME)).st_uid
    except OSError:
        return os.getuid()


def is_admin(who: Identity, admins, owner_uid: int) -> bool:
    return who.uid == 0 or who.uid == owner_uid or who.name in admins


def may_act_on(who: Identity, job_user: str, admins, owner_uid: int) -> bool:
    return who.name == job_user or is_admin(who, admins, owner_uid)


def authorize(store, who: Identity | None, job_id: int, action: str, now: float) -> None:
    """Raise PermissionDenied (after recording a `denied` event) unless `who` may `action` the job.

    `who` None is a trusted in-process caller (the daemon itself, tests of the library).
    A job that does not exist raises NotFound from `store.job`.
    """
    if who is None:
        return
    job = store.job(job_id)
    if may_act_on(who, job.user, store.config.admins, store_owner_uid(store)):
        return
    store.add_event(job_id, "denied", {"action": action, "by": who.name, "uid": who.uid}, now)
    raise PermissionDenied(f"{action} job {job_id}: permission denied: it belongs to {job.user}, "
                           f"you are {who.name} (only its owner or an admin may {action} it)")


def require_admin(store, who: Identity | None, action: str, now: float) -> None:
    """For cluster-wide actions (drain a node, change shares): admins only; refusals are events."""
    if who is None or is_admin(who, store.config.admins, store_owner_uid(store)):
        return
    store.add_event(None, "denied", {"action": action, "by": who.name, "uid": who.uid}, now)
    raise PermissionDenied(f"{action}: permission denied: you are {who.name}, not an admin "
                           f"(admins: root, the store's owner, and [cluster] admins in the cluster TOML)")


def lock_down_state(state_dir, db_name: str = "adsched.sqlite") -> None:
    """The store is its owner's alone: the SQLite files 0600, the state dir and jobs/ 0711.

    Others can then only reach what they know the name of: the daemon's socket, and their own
    jobs' output files (which belong to them, 0600).
    """
    check_state_dir(state_dir)
    if os.stat(state_dir).st_uid == os.geteuid():
        os.chmod(state_dir, 0o711)
    for name in (db_name, db_name + "-wal", db_name + "-shm"):
        path = os.path.join(state_dir, name)
        if os.path.exists(path):
            os.chmod(path, 0o600)  # SQLite gives -wal and -shm files the database file's mode
    jobs = os.path.join(state_dir, "jobs")
    if os.path.isdir(jobs):
        os.chmod(jobs, 0o711)


def check_state_dir(state_dir) -> None:
    """A state dir others may write to (like /tmp itself) would let them plant the socket or the
    store's files: refuse it, before anything is created there."""
    try:
        st = os.stat(state_dir)
    except FileNotFoundError:
        return
    # A sticky dir is a shared one (/tmp); one we do not own stays writable by whoever may write it.
    if st.st_mode & 0o1000 or (st.st_uid != os.geteuid() and st.st_mode & 0o022):
        raise InvalidRequest(f"state dir {state_dir} is writable by other users: keep the adsched state in a "
                             f"directory of its own (e.g. {os.path.join(os.fspath(state_dir), 'adsched')})")
