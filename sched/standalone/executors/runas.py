"""Which Unix account a job's ranks run as, and the environment they get there.

A root daemon runs each job as its owner (uid, gid, supplementary groups, HOME), as slurmd
does: the rank wrapper (rankwrap, which stays root to record the exit code where the user
cannot forge it) starts the command with the owner's credentials, in the owner's workdir,
with an environment built for the owner, never the daemon's own (which may hold secrets).

A daemon that is not root can only start processes as itself: it runs its own user's jobs and
fails any other with one clear reason (the socket refuses such submissions up front).

`owner_mode=False` keeps the library's old behaviour (every rank as the daemon's user, with
the daemon's environment): the in-process tests and `adsched demo` use it; `adsched run` never.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass

from adsched.errors import AdschedError

# What a rank run as its owner inherits from the daemon's environment (nothing else does).
PASSED_THROUGH = ("PATH", "LANG", "LC_ALL", "TZ")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


class JobRefused(AdschedError):
    """This daemon must not run the job (its owner has no account here, or the daemon is not root)."""


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str
    shell: str


def lookup(user: str) -> Account | None:
    """The passwd entry of a job's user (a bare number: that uid, when it has no name)."""
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        if not user.isdigit():
            return None
        try:
            pw = pwd.getpwuid(int(user))
        except KeyError:
            return None
    return Account(pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir, pw.pw_shell)


def run_as(job, owner_mode: bool, daemon_uid: int | None = None) -> Account | None:
    """The account to switch to for this job's ranks; None: run as the daemon's user.

    Raises JobRefused when the job must not run here.
    """
    if not owner_mode:
        return None
    daemon_uid = os.geteuid() if daemon_uid is None else daemon_uid
    account = lookup(job.user)
    if account is None:
        raise JobRefused(f"job {job.id} belongs to {job.user!r}, who has no account on this host")
    if account.uid == daemon_uid:
        return None
    if daemon_uid != 0:
        me = pwd.getpwuid(daemon_uid).pw_name if _has_name(daemon_uid) else str(daemon_uid)
        raise JobRefused(f"job {job.id} belongs to {job.user}; this daemon runs as {me}, not root, "
                         f"and runs only {me}'s jobs")
    return account


def owner_env(account: Account, rank_env: dict[str, str]) -> dict[str, str]:
    """A clean environment for the owner: their identity and home, PATH, locale, then the rank's."""
    env = {k: os.environ[k] for k in PASSED_THROUGH if k in os.environ}
    env.setdefault("PATH", DEFAULT_PATH)
    env.update({"HOME": account.home, "USER": account.name, "LOGNAME": account.name,
                "SHELL": account.shell or "/bin/sh"})
    env.update(rank_env)
    return env


def _has_name(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
        return True
    except KeyError:
        return False
