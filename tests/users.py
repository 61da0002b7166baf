"""Real Unix users for the security tests: created with useradd, removed after; run code as them.

`as_user` forks this (root) test process and switches the child to the user's uid, gid and
groups before it runs `adsub`'s own click command: the daemon sees that uid through
SO_PEERCRED exactly as it would for a separately started `adsub`. (A fork rather than a new
`adsub` process because this machine's Python lives under /root, which other users cannot
enter; everything the child needs is imported before the switch.)
"""

from __future__ import annotations

import difflib  # noqa: F401  click imports these lazily on errors; the child could not after the switch
import io
import os
import pwd
import subprocess
import sys
import tempfile
import traceback
from contextlib import contextmanager
from dataclasses import dataclass

import click._textwrap  # noqa: F401

from adsched.cli import adsub as adsub_cli
import adsched.core.config  # noqa: F401  (RemoteStore.config imports it lazily)
import adsched.standalone.remote  # noqa: F401


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    home: str
    groups: tuple[int, ...]


@contextmanager
def unix_users(count: int, prefix: str = "adst"):
    """`count` fresh users (names unique to this run), deleted with their homes afterwards."""
    if os.getuid() != 0:
        raise RuntimeError("creating Unix users needs root (.ci/run runs the suite as root)")
    names = [f"{prefix}{os.getpid() % 100000}{chr(ord('a') + i)}" for i in range(count)]
    made = []
    try:
        for name in names:
            subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], check=True,
                           capture_output=True)
            made.append(name)
        users = []
        for name in names:
            pw = pwd.getpwnam(name)
            users.append(User(name, pw.pw_uid, pw.pw_gid, pw.pw_dir,
                              tuple(sorted(os.getgrouplist(name, pw.pw_gid)))))
        yield users
    finally:
        for name in made:
            subprocess.run(["userdel", "--remove", "--force", name], capture_output=True)


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str


def as_user(user: User, fn, env: dict | None = None) -> Result:
    """Run `fn()` in a child process with the user's credentials; its return value is the exit code."""
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 70
        try:
            os.setgroups(list(user.groups))
            os.setgid(user.gid)
            os.setuid(user.uid)
            os.environ.update(env or {})
            os.chdir(user.home)
            sys.stdout = io.TextIOWrapper(os.fdopen(os.dup(out.fileno()), "wb"), write_through=True)
            sys.stderr = io.TextIOWrapper(os.fdopen(os.dup(err.fileno()), "wb"), write_through=True)
            code = fn() or 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 71
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:
                    pass
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    texts = []
    for f in (out, err):
        f.seek(0)
        texts.append(f.read().decode(errors="replace"))
        f.close()
    return Result(os.waitstatus_to_exitcode(status), *texts)


def adsub(user: User, *args: str, env: dict | None = None) -> Result:
    """`adsub ARGS...` run by `user` (click's standalone mode: exit codes and messages as the CLI)."""
    return as_user(user, lambda: adsub_cli.main(list(args), prog_name="adsub"), env)
