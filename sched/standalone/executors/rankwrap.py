"""Run one rank and record its exit code in a file, so any later daemon can read it.

    python -m adsched.standalone.executors.rankwrap RC_FILE [--as USER --env-file F --workdir D] -- CMD...

First it claims the rank: RC_FILE.claim, created exclusively, holding its pid. A wrapper
that finds the rank claimed exits at once (status 0, no exit-code file): one attempt's rank
runs at most once, however often it was launched (probe.py: a recovering daemon may launch
a rank whose earlier launch is still on its way). It writes RC_FILE.started once the
command runs (the gang start timeout looks for it).
The wrapper outlives a daemon restart (it is in its own session) and keeps the exit code
even if the daemon was not there to wait() for it. Signals sent to the rank's process
group reach the command; the wrapper itself only waits and records.

With `--as USER` (a root daemon running a user's job) the wrapper stays root, so the exit
code it records lives where the user cannot forge it, and starts the command as USER: uid,
gid and supplementary groups switched, then the workdir entered as USER (without --workdir:
HOME, else /), with exactly the environment in the env file (written by the daemon, 0600,
removed once read). The job's environment never reaches the root wrapper itself.

A --workdir that cannot be entered fails the rank (exit 1) with one line in its stderr: the
command never runs somewhere else.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import sys
import time

OPTIONS = ("--as", "--env-file", "--workdir")


def main(argv: list[str]) -> int:
    rc_file, rest = argv[0], argv[1:]
    options = {}
    while rest and rest[0] in OPTIONS:
        options[rest[0]] = rest[1]
        rest = rest[2:]
    sep, cmd = rest[0], rest[1:]
    assert sep == "--" and cmd
    if not _claim(rc_file):  # another wrapper is (or was) this rank
        if "--env-file" in options:  # the owner's environment is not left behind
            try:
                os.unlink(options["--env-file"])
            except OSError:
                pass
        return 0
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP):
        signal.signal(sig, lambda *_: None)  # a handler (not SIG_IGN) so the child gets the default back
    _record(rc_file, _run(rc_file, options, cmd))
    return 0


def _claim(rc_file: str) -> bool:
    """Make this process the rank: link a file with its pid to RC_FILE.claim (atomic, never half-written).
    False if another wrapper holds it. A claim that cannot be written (a full disk) does not stop the
    rank: its result matters more, and recovery then takes the one running wrapper for it."""
    tmp = f"{rc_file}.claim.{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            f.write(f"{os.getpid()}\n")
        os.link(tmp, rc_file + ".claim")
    except FileExistsError:
        return False
    except OSError:
        pass
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    return True


def _record(rc_file: str, rc: int) -> None:
    """Write the exit code atomically. On a full (or failing) disk keep trying: while this wrapper
    lives the daemon sees the rank running, so the result waits for space instead of being lost."""
    tmp, pause = rc_file + ".tmp", 0.2
    while True:
        try:
            with open(tmp, "w") as f:
                f.write(str(rc))
            os.replace(tmp, rc_file)
            return
        except FileNotFoundError:  # the job's directory is gone (state removed): nobody will read it
            if not os.path.isdir(os.path.dirname(rc_file) or "."):
                return
            time.sleep(pause)
        except OSError:  # (not reported: stderr is most likely on the same full disk)
            time.sleep(pause)
            pause = min(pause * 2, 5.0)


def _run(rc_file: str, options: dict[str, str], cmd: list[str]) -> int:
    workdir = options.get("--workdir")
    if workdir and "--as" not in options:  # the wrapper's own user: enter it here, never run elsewhere
        try:
            os.chdir(workdir)
        except OSError as e:
            print(f"adsched: cannot enter working directory {workdir!r}: {e.strerror}", file=sys.stderr)
            return 1
    try:
        child = subprocess.Popen(cmd, **(_as_user(options) if "--as" in options else {}))
    except (OSError, subprocess.SubprocessError, LookupError) as e:
        print(f"adsched: cannot run {cmd[0]!r}: {getattr(e, 'strerror', None) or e}", file=sys.stderr)
        return 127
    try:
        open(rc_file + ".started", "w").close()
    except OSError:  # a full disk: the gang start timeout may count this rank late, never lose it
        pass
    return child.wait()


def _as_user(options: dict[str, str]) -> dict:
    """Popen arguments that start the command as the job's owner."""
    user = options["--as"]
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise LookupError(f"no user {user!r} on this node") from None
    env = {}
    if "--env-file" in options:
        with open(options["--env-file"]) as f:
            env = json.load(f)
        os.unlink(options["--env-file"])
    workdir = options.get("--workdir")

    def enter_workdir():  # runs in the child after the uid switch: only where the user may go
        if not workdir:
            for place in (pw.pw_dir, "/"):
                try:
                    os.chdir(place)
                    return
                except OSError:
                    pass
            return
        try:
            os.chdir(workdir)
        except OSError as e:  # the job asked for this directory: it never runs elsewhere
            os.write(2, f"adsched: cannot enter working directory {workdir!r} as {user}: {e.strerror}\n"
                     .encode(errors="replace"))
            os._exit(1)

    return dict(user=pw.pw_uid, group=pw.pw_gid, extra_groups=os.getgrouplist(pw.pw_name, pw.pw_gid),
                env=env, cwd="/", preexec_fn=enter_workdir)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
