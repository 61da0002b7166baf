"""Run one rank and record its exit code in a file, so any later daemon can read it.

    python -m adsched.standalone.executors.rankwrap RC_FILE -- CMD...

It writes RC_FILE.started once the command runs (the gang start timeout looks for it).
The wrapper outlives a daemon restart (it is in its own session) and keeps the exit code
even if the daemon was not there to wait() for it. Signals sent to the rank's process
group reach the command; the wrapper itself only waits and records.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys


def main(argv: list[str]) -> int:
    rc_file, sep, cmd = argv[0], argv[1], argv[2:]
    assert sep == "--" and cmd
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP):
        signal.signal(sig, lambda *_: None)  # a handler (not SIG_IGN) so the child gets the default back
    try:
        child = subprocess.Popen(cmd)
    except OSError as e:
        print(f"adsched: cannot run {cmd[0]!r}: {e.strerror}", file=sys.stderr)
        rc = 127
    else:
        open(rc_file + ".started", "w").close()
        rc = child.wait()
    tmp = rc_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(rc))
    os.replace(tmp, rc_file)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
