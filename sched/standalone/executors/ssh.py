"""Run ranks on the nodes over SSH (paramiko), one session per rank, no agent on the nodes.

Each node needs Python with adsched installed (as Slurm needs slurmd there). A rank runs
as `setsid python -m adsched.standalone.executors.rankwrap` so it is a process group of its own and
keeps its exit code in STATE/jobs/ID/rank-R.rc on that node; the daemon reads it back over
SSH, so neither a dropped connection nor a daemon restart loses a result. Job output
stays on the node (or on the shared file system the state dir lives on).
"""

from __future__ import annotations

import json
import os
import shlex
import signal as signals
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import paramiko

from adsched.errors import AdschedError, NodeFailure
from adsched.standalone import crashpoints
from adsched.standalone.store import JobRecord
from . import RankEnd, job_dir, probe, rank_base, rank_env
from .runas import Account, JobRefused, lookup, owner_env


@dataclass(frozen=True)
class SSHSettings:
    user: str = "root"
    port: int = 22
    key_file: str | None = None
    python: str = "python3"  # the interpreter on the nodes
    connect_timeout: float = 10.0
    known_hosts: str | None = None  # checked besides /etc/ssh/ssh_known_hosts and ~/.ssh/known_hosts
    accept_new_host_keys: bool = False  # True: trust a node's key on first sight (OpenSSH's accept-new)


SYSTEM_KNOWN_HOSTS = "/etc/ssh/ssh_known_hosts"
with open(probe.__file__) as _f:
    _PROBE_SOURCE = _f.read()


class UnknownHostKey(paramiko.SSHException):
    """A node offered a host key no known_hosts file holds (StrictHostKeyChecking=yes refuses it)."""


class _AcceptNew(paramiko.MissingHostKeyPolicy):
    """Trust an unknown key for this daemon's life (a changed known key is still refused by paramiko)."""

    def missing_host_key(self, client, hostname, key):
        client.get_host_keys().add(hostname, key.get_name(), key)


class _RejectUnknown(paramiko.MissingHostKeyPolicy):
    def __init__(self, files: list[str]):
        self.files = files

    def missing_host_key(self, client, hostname, key):
        raise UnknownHostKey(
            f"host key of {hostname} ({key.get_name()} {getattr(key, 'fingerprint', '')}) is not in "
            f"{' or '.join(self.files)}: refused (add it, e.g. ssh-keyscan, or pass --ssh-accept-new-host-keys)")


class SSHExecutor:
    def __init__(self, state_dir: os.PathLike, addresses: dict[str, str], settings: SSHSettings = SSHSettings(),
                 owner_mode: bool = False):
        self.state_dir = os.path.abspath(state_dir)  # the same path on the nodes (a shared file system)
        self.addresses = addresses  # node name -> host
        self.settings = settings
        self.owner_mode = owner_mode  # ranks run as the job's owner (runas.py); `adsched run` sets it
        self._clients: dict[str, paramiko.SSHClient] = {}
        self._lock = threading.Lock()

    # --- connections -------------------------------------------------------------------

    def _client(self, node: str) -> paramiko.SSHClient:
        host = self.addresses[node]
        with self._lock:
            client = self._clients.get(host)
            if client is not None and client.get_transport() and client.get_transport().is_active():
                return client
            client = paramiko.SSHClient()
            files = self._load_known_hosts(client)
            client.set_missing_host_key_policy(
                _AcceptNew() if self.settings.accept_new_host_keys else _RejectUnknown(files))
            try:
                client.connect(host, port=self.settings.port, username=self.settings.user,
                               key_filename=self.settings.key_file, timeout=self.settings.connect_timeout,
                               allow_agent=False, look_for_keys=self.settings.key_file is None)
            except (OSError, paramiko.SSHException) as e:
                raise NodeFailure(node, f"ssh to node {node} ({host}:{self.settings.port}) failed: {e}") from None
            self._clients[host] = client
            return client

    def _load_known_hosts(self, client: paramiko.SSHClient) -> list[str]:
        """Host keys are verified as OpenSSH does: the system's and the user's known_hosts, plus ours."""
        files = [SYSTEM_KNOWN_HOSTS, os.path.expanduser("~/.ssh/known_hosts")]
        if self.settings.known_hosts:
            files.append(self.settings.known_hosts)
        for path in files:
            try:
                client.load_system_host_keys(path)  # read only: never written back
            except FileNotFoundError:
                pass
            except (OSError, paramiko.SSHException) as e:
                raise AdschedError(f"cannot read known_hosts {path}: {e}") from None
        return files

    def _run(self, node: str, command: str, timeout: float = 30.0, stdin: bytes | None = None,
             sent_point: str | None = None) -> tuple[int, str, str]:
        """`sent_point`: a crash point (crashpoints.py) once the command is on its way, before its answer."""
        for attempt in (1, 2):  # a connection the node dropped is reopened once; then the node is lost
            try:
                return self._exec(self._client(node), command, timeout, stdin, sent_point)
            except (OSError, EOFError, paramiko.SSHException) as e:
                with self._lock:
                    dropped = self._clients.pop(self.addresses[node], None)
                if dropped is not None:
                    dropped.close()
                if attempt == 2:
                    raise NodeFailure(node, f"node {node} ({self.addresses[node]}) stopped answering: {e}") from None
        raise AssertionError("unreachable")

    @staticmethod
    def _exec(client: paramiko.SSHClient, command: str, timeout: float, stdin: bytes | None,
              sent_point: str | None) -> tuple[int, str, str]:
        """SSHClient.exec_command on a bare channel: its stdin file (ChannelStdinFile) is never made. That
        file's finalizer takes the channel's lock; run by the garbage collector on paramiko's transport
        thread while that thread holds the lock, it hangs the connection for good (paramiko issue 2685,
        seen here as a test stuck in client.close())."""
        transport = client.get_transport()
        if transport is None or not transport.is_active():
            raise paramiko.SSHException("SSH session not active")
        channel = transport.open_session(timeout=timeout)
        try:
            channel.settimeout(timeout)
            channel.exec_command(command)
            if stdin is not None:  # data for the command (never part of the command line)
                channel.sendall(stdin)
                channel.shutdown_write()
            if sent_point:
                crashpoints.hit(sent_point)
            out, err = channel.makefile("rb").read().decode(), channel.makefile_stderr("rb").read().decode()
            return channel.recv_exit_status(), out, err
        finally:
            channel.close()

    def close(self) -> None:
        for c in self._clients.values():
            c.close()
        self._clients.clear()

    # --- the executor interface -------------------------------------------------------

    def _run_as(self, job: JobRecord) -> Account | None:
        """As runas.run_as, for the login on the nodes: only a root login can switch to the job's owner."""
        login = self.settings.user
        if not self.owner_mode or job.user == login:
            return None
        account = lookup(job.user)
        if account is None:
            raise JobRefused(f"job {job.id} belongs to {job.user!r}, who has no account on this host")
        if login != "root":
            raise JobRefused(f"job {job.id} belongs to {job.user}; ranks log in to the nodes as {login}, not root, "
                             f"and run only {login}'s jobs")
        return account

    def launch(self, job: JobRecord, ranks: list[int] | None = None, claimed: bool = False) -> dict[int, int]:
        """`claimed`: recovery's launch, whose rank a launch cut by the crash may also start: the pid returned
        is the one of the wrapper that claimed the rank (rankwrap.py), not necessarily the one started here."""
        account = self._run_as(job)  # raises JobRefused before anything runs
        pids: dict[int, int] = {}
        try:
            for rank, alloc in enumerate(job.allocations):
                if ranks is None or rank in ranks:
                    pids[rank] = self._launch_rank(job, rank, alloc, account, claimed)
                    crashpoints.hit("launch")
        except NodeFailure:  # the job is requeued: the ranks already launched must not run on
            self.signal(replace(job, allocations=[{**a, "pid": pids.get(a["rank"])} for a in job.allocations]),
                        signals.SIGKILL)
            raise
        return pids

    def _launch_rank(self, job: JobRecord, rank: int, alloc: dict, account: Account | None, claimed: bool) -> int:
        d = job_dir(self.state_dir, job.id)
        out_base, base = f"{d}/rank-{rank}", rank_base(self.state_dir, job, rank)
        env = rank_env(job, rank, master_addr=self.addresses[job.allocations[0]["node"]],
                       state_dir=self.state_dir)
        cmd = " ".join(shlex.quote(c) for c in job.command)
        if account is not None:
            return self._launch_as(job, rank, alloc["node"], account, owner_env(account, env), cmd, claimed)
        script = (
            f"mkdir -p {shlex.quote(d)} || exit 1; "
            f"env {' '.join(shlex.quote(f'{k}={v}') for k, v in env.items())} "
            f"setsid {shlex.quote(self.settings.python)} -m adsched.standalone.executors.rankwrap "
            f"{shlex.quote(base + '.rc')} --workdir {shlex.quote(job.workdir)} -- {cmd} "
            f">>{shlex.quote(out_base + '.out')} 2>>{shlex.quote(out_base + '.err')} </dev/null & "
            + _echo_rank_pid(base + ".rc", claimed)
        )
        rc, out, err = self._run(alloc["node"], script, sent_point="launch-sent")
        if rc != 0 or not out.strip().isdigit():
            raise NodeFailure(alloc["node"], f"job {job.id} rank {rank}: launch on {alloc['node']} failed: "
                                             f"{err.strip() or out.strip()}")
        return int(out.strip())

    def reconcile(self, job: JobRecord) -> dict[int, int]:
        """probe.py on each node (one round trip per node) says, per rank: its live wrapper, ended, or never."""
        by_node: dict[str, list[int]] = {}
        for a in job.allocations:
            if not a.get("pid"):
                by_node.setdefault(a["node"], []).append(a["rank"])
        pids, never_launched, unreachable = {}, [], None
        rc_files = {rank_base(self.state_dir, job, r) + ".rc": r for ranks in by_node.values() for r in ranks}

        def ask(node: str) -> tuple[int, str, str]:
            mine = [rc for rc, r in rc_files.items() if r in by_node[node]]
            return self._run(node, f"{self._probe()} reconcile {' '.join(map(shlex.quote, mine))}", timeout=60.0)

        for node, answer in _on_nodes(ask, by_node):
            if isinstance(answer, NodeFailure):
                unreachable = answer
                continue
            code, out, err = answer
            answers = dict((rc, (what, pid)) for rc, what, pid in (line.rsplit(" ", 2) for line in out.splitlines()
                                                                   if line.count(" ") >= 2))
            if code != 0 or set(answers) != {rc for rc, r in rc_files.items() if r in by_node[node]}:
                raise NodeFailure(node, f"job {job.id}: recovery on {node} failed: {err.strip() or out.strip()}")
            for rc, (what, pid) in answers.items():
                if what == "pid":
                    pids[rc_files[rc]] = int(pid)  # adopt it
                elif what == "never":
                    never_launched.append(rc_files[rc])
        if unreachable is not None or never_launched:  # the gang cannot be whole: what runs of it must stop
            try:
                if unreachable is not None:
                    raise unreachable
                pids.update(self.launch(job, never_launched, claimed=True))
            except NodeFailure:
                self.signal(replace(job, allocations=[{**a, "pid": a.get("pid") or pids.get(a["rank"])}
                                                      for a in job.allocations]), signals.SIGKILL)
                raise
        return pids

    def sweep(self, keep: set[tuple[int, int]]) -> list[str]:
        """Kill every rank wrapper of this state dir on every node whose (job, attempt) is not in `keep`.
        A node that does not answer is skipped (it is drained when a job of it is next looked at)."""
        return self.sweep_nodes(sorted(self.addresses), keep)

    def sweep_nodes(self, nodes: list[str], keep: set[tuple[int, int]]) -> list[str]:
        """`sweep` on these nodes only (a node back in service: what ran there while it was cut off)."""
        hosts = {self.addresses[n]: n for n in sorted(nodes, reverse=True)}.values()  # one call a host
        command, keep_json = f"{self._probe()} sweep {shlex.quote(self.state_dir)}", json.dumps(sorted(keep)).encode()
        killed = []
        for node, answer in _on_nodes(lambda node: self._run(node, command, stdin=keep_json, timeout=60.0), hosts):
            if not isinstance(answer, NodeFailure):
                killed += [f"{node}:{rc}" for rc in answer[1].splitlines() if rc]
        return killed

    def _probe(self) -> str:
        """probe.py's source on the command line: stdlib only, so no import of adsched (a slow start) on the node."""
        return f"{shlex.quote(self.settings.python)} -c {shlex.quote(_PROBE_SOURCE)}"

    def _launch_as(self, job: JobRecord, rank: int, node: str, account: Account, env: dict, cmd: str,
                   claimed: bool) -> int:
        """A rank as the job's owner: root's rankwrap switches user on the node; the owner's environment
        goes through stdin into a 0600 file (never onto a command line); output belongs to the owner."""
        d = job_dir(self.state_dir, job.id)
        out_base, base = f"{d}/rank-{rank}", rank_base(self.state_dir, job, rank)
        q = {k: shlex.quote((out_base if k in (".out", ".err") else base) + k)
             for k in (".rc", ".rc.started", ".out", ".err", ".env")}
        script = (
            f"umask 077; mkdir -p {shlex.quote(d)} && chmod 711 {shlex.quote(d)} {shlex.quote(os.path.dirname(d))} && "
            f"cat > {q['.env']} && touch {q['.out']} {q['.err']} && "
            f"chown -- {shlex.quote(account.name + ':')} {q['.out']} {q['.err']} && "
            f"cd / && {{ setsid {shlex.quote(self.settings.python)} -m adsched.standalone.executors.rankwrap {q['.rc']} "
            f"--as {shlex.quote(account.name)} --env-file {q['.env']} --workdir {shlex.quote(job.workdir)} -- {cmd} "
            f">>{q['.out']} 2>>{q['.err']} </dev/null & {_echo_rank_pid(base + '.rc', claimed)}; }}"
        )  # only the wrapper goes to the background: `cat` must read the env from this session's stdin
        rc, out, err = self._run(node, script, stdin=json.dumps(env).encode(), sent_point="launch-sent")
        if rc != 0 or not out.strip().isdigit():
            raise NodeFailure(node, f"job {job.id} rank {rank}: launch on {node} failed: {err.strip() or out.strip()}")
        return int(out.strip())

    def ended(self, job: JobRecord) -> list[RankEnd]:
        by_node: dict[str, list[dict]] = {}
        for a in job.allocations:
            by_node.setdefault(a["node"], []).append(a)
        ends = []
        for node, allocs in by_node.items():
            # One round trip per node: "rank rc" or "rank running" or "rank gone" per line.
            # Look at the process before the file, as the local executor does.
            checks = []
            for a in allocs:
                rc_file = shlex.quote(rank_base(self.state_dir, job, a["rank"]) + ".rc")
                pid = int(a.get("pid") or 0)
                checks.append(
                    f"if kill -0 {pid} 2>/dev/null; then s=running; else s=gone; fi; "
                    f"if [ -f {rc_file} ]; then echo {a['rank']} rc $(cat {rc_file}); else echo {a['rank']} $s; fi"
                )
            try:
                rc, out, err = self._run(node, "; ".join(checks))
            except NodeFailure:  # the daemon drains the node and requeues the gang
                ends += [RankEnd(job.id, a["rank"], -signals.SIGKILL, node_lost=True) for a in allocs]
                continue
            for line in out.splitlines():
                parts = line.split()
                if len(parts) >= 3 and parts[1] == "rc":
                    ends.append(RankEnd(job.id, int(parts[0]), int(parts[2])))
                elif len(parts) == 2 and parts[1] == "gone":
                    ends.append(RankEnd(job.id, int(parts[0]), -signals.SIGKILL))
        return ends

    def started(self, job: JobRecord) -> set[int]:
        up: set[int] = set()
        by_node: dict[str, list[int]] = {}
        for a in job.allocations:
            by_node.setdefault(a["node"], []).append(a["rank"])
        for node, ranks in by_node.items():
            test = "; ".join(f"[ -f {shlex.quote(rank_base(self.state_dir, job, r) + '.rc.started')} ] && echo {r}"
                             for r in ranks)
            try:
                _, out, _ = self._run(node, test + "; true")
            except NodeFailure:
                continue
            up |= {int(x) for x in out.split() if x.isdigit()}
        return up

    def checkpoint_time(self, job: JobRecord) -> float | None:
        return None  # the file lives on the nodes; jobs there report with `adsub checkpointed`

    def signal(self, job: JobRecord, signum: int) -> None:
        by_node: dict[str, list[int]] = {}
        for a in job.allocations:
            if a.get("pid"):
                by_node.setdefault(a["node"], []).append(int(a["pid"]))
        for node, pids in by_node.items():
            try:
                self._run(node, "; ".join(f"kill -{int(signum)} -- -{pid} 2>/dev/null" for pid in pids) + "; true")
            except NodeFailure:
                continue  # a lost node: its ranks are reported lost by `ended`


def _echo_rank_pid(rc_file: str, claimed: bool) -> str:
    """Shell that prints the started wrapper's pid; `claimed`: the pid of the wrapper holding the rank
    (rankwrap's claim): the one just started or, if a launch cut by a crash got there first, that one's
    (the new wrapper then exits at once). It waits for the claim, so only recovery asks for it."""
    if not claimed:
        return "echo $!"
    claim = shlex.quote(rc_file + ".claim")
    return (f"w=$! i=0; while [ $i -lt 500 ] && [ ! -s {claim} ] && kill -0 $w 2>/dev/null; do sleep 0.02; "
            f"i=$((i+1)); done; if [ -s {claim} ]; then cat {claim}; else echo $w; fi")  # at most ~10 s (a full disk)


def _on_nodes(ask, nodes):
    """(node, ask(node) or the NodeFailure it raised) for each node, asked in parallel: recovery waits
    for the slowest node, not for their sum."""
    nodes = list(nodes)
    if not nodes:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(nodes))) as pool:
        futures = [(node, pool.submit(ask, node)) for node in nodes]
        out = []
        for node, future in futures:
            try:
                out.append((node, future.result()))
            except NodeFailure as e:
                out.append((node, e))
        return out
