"""The daemon's Unix socket: requests from users who may not write the store (see remote.py).

Identity is the kernel's: SO_PEERCRED gives the connecting process's uid, which no
environment variable or request field can change. The daemon then does the store write
itself, with the same library calls and the same authorization (auth.py) as a direct caller.

One JSON request per connection, one JSON answer. Each connection is served by its own
thread with its own SQLite connection (from a small pool), so a slow client does not hold up
others or the scheduling cycle; a connection idle for `IDLE_TIMEOUT` seconds is dropped.

More operations (hold, release, update...) register with `@operation("name")`: each gets the
store, the caller's Identity, the request's args and the server's clock.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import struct
import sys
import threading
import time
import traceback
from dataclasses import asdict, fields
from typing import Any, Callable

from adsched.core.config import ConfigError
from adsched.errors import AdschedError, InvalidRequest, PermissionDenied
from adsched.jobspec import JobRequest

from .auth import Identity, authorize, identity_of, may_act_on, store_owner_uid
from .remote import MAX_MESSAGE, SocketAddress, socket_path
from .store import Store

IDLE_TIMEOUT = 10.0
MAX_CLIENTS = 64  # connections served at once; more wait in the listen backlog
MAX_PER_USER = 8  # of which one uid may hold: idle connections of one user cannot starve the others

Operation = Callable[[Store, Identity, dict, float], Any]
OPERATIONS: dict[str, Operation] = {}


def operation(name: str):
    def register(fn: Operation) -> Operation:
        OPERATIONS[name] = fn
        return fn

    return register


class SocketServer:
    """Listens on STATE/adsched.sock while the daemon runs (started once it holds the daemon lock)."""

    def __init__(self, state_dir: str | os.PathLike, run_uid: int | None = None, clock=time.time):
        self.state_dir = os.fspath(state_dir)
        self.path = socket_path(state_dir)
        self.run_uid = os.getuid() if run_uid is None else run_uid  # whose jobs this daemon can run
        self.clock = clock
        self._sock: socket.socket | None = None
        self._pool: list[Store] = []
        self._pool_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)
        self._per_uid: dict[int, int] = {}

    def start(self) -> None:
        if os.path.lexists(self.path):
            os.unlink(self.path)  # a dead daemon's socket; we hold the daemon lock
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with SocketAddress(self.path) as address:
            sock.bind(address)
        os.chmod(self.path, 0o666)  # anyone may connect; who they are comes from SO_PEERCRED
        sock.listen(128)
        self._sock = sock
        threading.Thread(target=self._accept_loop, name="adsched-socket", daemon=True).start()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    def _accept_loop(self) -> None:
        sock = self._sock
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:  # closed
                return
            self._slots.acquire()
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn:
                conn.settimeout(IDLE_TIMEOUT)
                _, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                                struct.calcsize("3i")))
                with self._pool_lock:
                    busy = self._per_uid.get(uid, 0)
                    self._per_uid[uid] = busy + 1
                try:
                    if busy >= MAX_PER_USER:
                        conn.settimeout(0.5)  # read the request (so the answer is not lost), but not for long
                    raw = _read_all(conn)
                    if busy >= MAX_PER_USER:
                        answer = _error("AdschedError", f"too many requests at once from uid {uid} "
                                                        f"(at most {MAX_PER_USER}); try again", 1)
                    else:
                        answer = self.answer(identity_of(uid), raw)
                    conn.sendall(json.dumps(answer, default=str).encode())
                finally:
                    with self._pool_lock:
                        self._per_uid[uid] -= 1
        except OSError:
            pass  # the client went away or idled out: nothing to answer
        finally:
            self._slots.release()

    def answer(self, who: Identity, raw: bytes | None) -> dict:
        """The answer to one request from `who` (an error answer for anything malformed)."""
        try:
            if raw is None:
                raise InvalidRequest(f"request larger than {MAX_MESSAGE} bytes")
            try:
                request = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                raise InvalidRequest("malformed request (not JSON)") from None
            if not isinstance(request, dict) or not isinstance(request.get("args", {}), dict):
                raise InvalidRequest("malformed request (not {op, args})")
            op = OPERATIONS.get(request.get("op"))
            if op is None:
                raise InvalidRequest(f"unknown operation {request.get('op')!r}")
            store = self._store()
            try:
                return {"ok": op(store, who, request.get("args", {}), self.clock())}
            finally:
                self._give_back(store)
        except ConfigError as e:
            return _error("InvalidRequest", f"{e.source}: " + "; ".join(e.errors), 2)
        except AdschedError as e:
            return _error(type(e).__name__, str(e), e.exit_code)
        except Exception as e:  # a bug: the daemon keeps serving, the user gets one line
            traceback.print_exc(file=sys.stderr)
            return _error("AdschedError", f"internal error in the adsched daemon: {type(e).__name__}: {e}", 1)

    def _store(self) -> Store:
        with self._pool_lock:
            if self._pool:
                return self._pool.pop()
        conn = sqlite3.connect(os.path.join(self.state_dir, Store.DB_NAME), timeout=30, check_same_thread=False)
        store = Store(self.state_dir, conn)
        store.run_uid = self.run_uid
        return store

    def _give_back(self, store: Store) -> None:
        if store.conn.in_transaction:
            store.conn.rollback()
        with self._pool_lock:
            self._pool.append(store)


def _read_all(conn: socket.socket) -> bytes | None:
    chunks, size = [], 0
    while True:
        chunk = conn.recv(1 << 16)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_MESSAGE:
            return None
        chunks.append(chunk)


def _error(kind: str, message: str, exit_code: int) -> dict:
    return {"error": {"type": kind, "message": message, "exit_code": exit_code}}


# --- argument checks: every value from the socket is hostile until checked -----------------

def _job_id(args: dict, optional: bool = False) -> int | None:
    value = args.get("job_id")
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**63:
        raise InvalidRequest(f"job_id: must be a job number, got {value!r}")
    return value


def _text(args: dict, key: str) -> str | None:
    value = args.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidRequest(f"{key}: must be text, got {type(value).__name__}")
    return value


_REQUEST_FIELDS = {f.name for f in fields(JobRequest)} - {"user"}


def request_from_wire(raw, who: Identity) -> JobRequest:
    """A JobRequest from a socket message, owned by the caller whatever the message says."""
    if not isinstance(raw, dict):
        raise InvalidRequest("request: must be a table of job settings")
    unknown = sorted(set(raw) - _REQUEST_FIELDS - {"user"})
    if unknown:
        raise InvalidRequest(f"request: unknown field(s) {', '.join(map(str, unknown))}")
    raw = {k: v for k, v in raw.items() if k in _REQUEST_FIELDS}
    if not isinstance(raw.get("workdir", "/"), str) or not raw.get("workdir", "/").startswith("/"):
        raise InvalidRequest("workdir: must be an absolute path")
    return JobRequest(**raw, user=who.name)  # types and texts: build_job -> check_request


def check_may_run(store: Store, who: Identity, now: float) -> None:
    """A daemon that is not root can start processes only as itself: it takes only its user's jobs."""
    run_uid = getattr(store, "run_uid", os.getuid())
    if run_uid in (0, who.uid):
        return
    runner = identity_of(run_uid).name
    store.add_event(None, "denied", {"action": "submit", "by": who.name, "uid": who.uid}, now)
    raise PermissionDenied(f"submit: permission denied: this adsched daemon runs as {runner}, not root, so it "
                           f"runs only {runner}'s jobs (ask an admin to run `adsched run` as root)")


# --- the operations ------------------------------------------------------------------------

@operation("submit")
def _submit(store: Store, who: Identity, args: dict, now: float) -> int:
    req = request_from_wire(args.get("request"), who)
    store.build_job(req, now)  # validate before the run-as check: a bad request is exit 2 either way
    check_may_run(store, who, now)
    return store.submit(req, now)


@operation("submit_many")
def _submit_many(store: Store, who: Identity, args: dict, now: float) -> list[int]:
    raw = args.get("requests")
    if not isinstance(raw, list):
        raise InvalidRequest("requests: must be a list of job settings")
    reqs = []
    for n, item in enumerate(raw, 1):
        try:
            reqs.append(request_from_wire(item, who))
        except InvalidRequest as e:
            raise InvalidRequest(f"job {n}: {e}") from None
    check_may_run(store, who, now)
    return store.submit_many(reqs, now)


@operation("test_only")
def _test_only(store: Store, who: Identity, args: dict, now: float) -> dict:
    return _explanation(store.test_only(request_from_wire(args.get("request"), who), now))


@operation("jobs")
def _jobs(store: Store, who: Identity, args: dict, now: float) -> list[dict]:
    states = args.get("states")
    if states is not None and (not isinstance(states, list) or not all(isinstance(s, str) for s in states)):
        raise InvalidRequest("states: must be a list of state names")
    jobs = store.jobs(states=tuple(states) if states else None, user=_text(args, "user"),
                      queue=_text(args, "queue"))
    return [_shown(store, who, j) for j in jobs]


@operation("listing")
def _listing(store: Store, who: Identity, args: dict, now: float) -> list[dict]:
    states = args.get("states")
    if states is not None and (not isinstance(states, list) or not all(isinstance(s, str) for s in states)):
        raise InvalidRequest("states: must be a list of state names")
    rows = store.listing(states=tuple(states) if states else None, user=_text(args, "user"), queue=_text(args, "queue"))
    return [r._asdict() for r in rows]


@operation("job")
def _job(store: Store, who: Identity, args: dict, now: float) -> dict:
    return _shown(store, who, store.job(_job_id(args)))


@operation("events")
def _events(store: Store, who: Identity, args: dict, now: float) -> list[dict]:
    return store.events(_job_id(args, optional=True))


@operation("cancel")
def _cancel(store: Store, who: Identity, args: dict, now: float) -> str:
    return store.cancel(_job_id(args), now, by=who)


@operation("explain")
def _explain(store: Store, who: Identity, args: dict, now: float) -> dict:
    return _explanation(store.explain(_job_id(args), now))


@operation("estimated_starts")
def _estimated_starts(store: Store, who: Identity, args: dict, now: float) -> dict[str, float]:
    return {str(k): v for k, v in store.estimated_starts(now).items()}


@operation("checkpointed")
def _checkpointed(store: Store, who: Identity, args: dict, now: float) -> None:
    job_id = _job_id(args)
    authorize(store, who, job_id, "checkpoint", now)
    store.checkpointed(job_id, now)


@operation("hold")
def _hold(store: Store, who: Identity, args: dict, now: float) -> str:
    from .jobctl import hold

    return hold(store, _job_id(args), who, now)


@operation("release")
def _release(store: Store, who: Identity, args: dict, now: float) -> str:
    from .jobctl import release

    return release(store, _job_id(args), who, now)


@operation("update")
def _update(store: Store, who: Identity, args: dict, now: float) -> dict:
    from .jobctl import update

    priority = args.get("priority")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        raise InvalidRequest(f"priority: must be an integer, got {priority!r}")
    return update(store, _job_id(args), who, now, time_limit=_text(args, "time_limit"), priority=priority,
                  queue=_text(args, "queue"))


@operation("config")
def _config(store: Store, who: Identity, args: dict, now: float) -> str:
    row = store.conn.execute("SELECT value FROM meta WHERE key = 'cluster_toml'").fetchone()
    if row is None:
        raise InvalidRequest("state has no cluster config (run `adsched init`)")
    return row[0]


@operation("nodes")
def _nodes(store: Store, who: Identity, args: dict, now: float) -> list[dict]:
    return store.nodes()


def _shown(store: Store, who: Identity, job) -> dict:
    """A job as `who` may see it: everything, but another user's env values (they may hold secrets)."""
    d = job.to_dict()
    if d["env"] and not may_act_on(who, job.user, store.config.admins, store_owner_uid(store)):
        d["env"] = {k: "(hidden)" for k in d["env"]}
    return d


def _explanation(e) -> dict:
    return {**asdict(e), "estimated_nodes": list(e.estimated_nodes)}
