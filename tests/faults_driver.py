"""Runs the daemon again and again, each life killed (SIGKILL) at a seeded random crash point.

    python tests/faults_driver.py STATE SEED CRASHES PROGRESS STOPFILE [SSH_JSON]

Each life is a fresh daemon process: mostly a fork of this already-imported process (a
new Store, Daemon and executor; recovery runs as on any start), every 25th the real
`adsched run` command. A life is armed to SIGKILL itself at its Nth crash point
(crashpoints.py: after each committed transaction, each rank launched, each signal),
N drawn from a seeded RNG; some lives aim at the first launch or signal instead
(rarer than commits, so a uniform N would seldom cut them). After CRASHES crashes lives
are unarmed; once STOPFILE exists (the test stopped submitting), a last unarmed life runs
until no job is pending or running.

With SSH_JSON ({"addresses": {node: host}, "settings": SSHSettings fields}) the ranks run over
SSH (executors/ssh.py), and a third of the armed lives are instead killed by this process
after a random 0.05-1.5 s: wherever the daemon is, e.g. inside an SSH call, with a launch
sent and its pid not yet read. The crash log names those "timer".

This process is a child subreaper, so ranks orphaned by a dead daemon are reaped here
(as init would) instead of piling up as zombies. PROGRESS gets a JSON line per life.
"""

from __future__ import annotations

import ctypes
import json
import os
import random
import signal
import sys
import time

from adsched.standalone import crashpoints
from adsched.standalone.daemon import Daemon
from adsched.standalone.executors.local import LocalExecutor
from adsched.standalone.store import Store

MAX_POINTS = 6  # a life dies at one of its first 6 crash points
CLI_EVERY = 25
KINDS = (None, None, None, None, "launch", "signal")
SSH_KINDS = KINDS + ("launch-sent", "launch-sent")  # over SSH: a launch on its way, its pid never read
PR_SET_CHILD_SUBREAPER = 36


def _executor(state: str, ssh: dict | None):
    if ssh is None:
        return LocalExecutor(state)
    from adsched.standalone.executors.ssh import SSHExecutor, SSHSettings

    return SSHExecutor(state, ssh["addresses"], SSHSettings(**ssh["settings"]))


def _cli_args(ssh: dict | None) -> list[str]:
    if ssh is None:
        return []
    s = ssh["settings"]
    return ["--ssh-user", s["user"], "--ssh-port", str(s["port"]), "--ssh-key", s["key_file"],
            "--ssh-known-hosts", s["known_hosts"], "--remote-python", s["python"]]


def _life(state: str, arm: int, kind: str | None, final: bool, ssh: dict | None) -> None:
    """The child: one daemon life. Never returns."""
    try:
        crashpoints.arm(arm, kind)
        store = Store(state)
        daemon = Daemon(store, _executor(state, ssh), kill_wait=1.0, start_timeout=20.0)
        daemon.run(until_idle=final, max_seconds=120 if final else 1.5)
        os._exit(0)
    except BaseException:  # noqa: BLE001 - a bug in a life must fail the test, visibly
        import traceback

        traceback.print_exc()
        os._exit(3)


def main(state: str, seed: int, crashes: int, progress: str, stopfile: str, ssh: dict | None = None) -> int:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    rng = random.Random(seed)
    os.environ["ADSCHED_CRASH_LOG"] = os.path.join(state, "crash-points.log")
    crashed = lives = 0
    while True:
        final = os.path.exists(stopfile)  # the test has stopped submitting: drain, no more crashes
        arm = 0 if final or crashed >= crashes else rng.randint(1, MAX_POINTS)
        kind = rng.choice(KINDS if ssh is None else SSH_KINDS)  # any point mostly; some aim at the rarer steps
        if kind is not None:
            arm = 1 if arm else 0
        timer = None  # over SSH, some lives are killed from outside at a random moment instead
        if ssh is not None and arm and rng.random() < 1 / 3:
            arm, kind, timer = 0, None, rng.uniform(0.05, 1.5)
        lives += 1
        via_cli = lives % CLI_EVERY == 0 and not final
        pid = os.fork()
        if pid == 0:
            if via_cli:
                env = dict(os.environ, ADSCHED_CRASH_AFTER=str(arm), ADSCHED_CRASH_KIND=kind or "")
                os.execvpe(sys.executable, [sys.executable, "-m", "adsched.cli.adsched", "run", "--state", state,
                                            "--max-seconds", "3", *_cli_args(ssh)], env)
            _life(state, arm, kind, final, ssh)
        deadline = None if timer is None else time.monotonic() + timer
        while True:  # reap orphaned ranks too (we are their subreaper) until the daemon ends
            done, status = os.waitpid(-1, 0 if deadline is None else os.WNOHANG)
            if done == pid:
                break
            if done == 0 and time.monotonic() >= deadline:
                with open(os.environ["ADSCHED_CRASH_LOG"], "a") as f:
                    f.write("timer\n")
                os.kill(pid, signal.SIGKILL)
                deadline = None
            elif done == 0:
                time.sleep(0.01)
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        crashed += killed
        with open(progress, "a") as f:
            f.write(json.dumps({"life": lives, "arm": arm, "kind": kind, "timer": timer, "cli": via_cli,
                                "killed": killed, "code": code,
                                "crashed": crashed, "t": time.time()}) + "\n")
        if not killed and code != 0:
            return 1
        if final:
            return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5],
                  json.loads(sys.argv[6]) if len(sys.argv) > 6 else None))
