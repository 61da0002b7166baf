"""`adsub`'s way to a store it may not write: ask the daemon over its Unix socket.

When the SQLite store belongs to another user (a daemon run by root or a service account,
whose files are 0600), `adsub` cannot read or write it. It sends one JSON request per
connection to STATE/adsched.sock; the daemon learns the caller's uid from the kernel
(SO_PEERCRED, see server.py), checks what that user may do, and answers with one JSON object:

    request:  {"op": "submit", "args": {...}}          (then the client shuts its write side)
    answer:   {"ok": VALUE}  or  {"error": {"type": "PermissionDenied", "message": "...", "exit_code": 1}}

Stdlib only (plus adsched.errors): this is `adsub`'s fast path.
"""

from __future__ import annotations

import json
import os

from adsched import errors

SOCKET_NAME = "adsched.sock"
DB_NAME = "adsched.sqlite"  # Store.DB_NAME, without importing the store
MAX_MESSAGE = 8 << 20  # bytes; a request or answer larger than this is refused


def socket_path(state_dir: str | os.PathLike) -> str:
    return os.path.join(os.fspath(state_dir), SOCKET_NAME)


class SocketAddress:
    """A path a socket can bind/connect to: AF_UNIX paths stop at 107 bytes, so a longer one goes
    through /proc/self/fd/N/ of its directory (opened O_PATH: no read permission needed)."""

    def __init__(self, path: str):
        self._fd = None
        self.address = path
        if len(os.fsencode(path)) > 100:
            self._fd = os.open(os.path.dirname(path) or ".", os.O_PATH | os.O_DIRECTORY)
            self.address = f"/proc/self/fd/{self._fd}/{os.path.basename(path)}"

    def __enter__(self) -> str:
        return self.address

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)


def needs_daemon(state_dir: str | os.PathLike) -> bool:
    """True when the store exists but this user may not read and write it: go through the daemon."""
    db = os.path.join(os.fspath(state_dir), DB_NAME)
    if not os.path.exists(db) or os.access(db, os.R_OK | os.W_OK):
        return False
    # A read-only file system is not another user's store: opening it says what is wrong.
    return not (os.access(db, os.R_OK) and os.statvfs(db).f_flag & os.ST_RDONLY)


def call(state_dir: str | os.PathLike, op: str, timeout: float = 60.0, **args):
    """One request to the daemon; its answer, or the library error it raised."""
    import socket  # here: `adsub` on its own store never talks to a daemon (~4 ms of imports)

    path = socket_path(state_dir)
    payload = json.dumps({"op": op, "args": args}).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            with SocketAddress(path) as address:
                s.connect(address)
        except FileNotFoundError:
            raise errors.AdschedError(f"the store in {state_dir} belongs to another user and no adsched daemon "
                                      f"is listening on {path} (ask an admin to start `adsched run`; on a Slurm "
                                      "cluster, to re-run `adsched init`, which publishes the config adsub needs)") \
                from None
        except OSError as e:
            raise errors.AdschedError(f"cannot reach the adsched daemon on {path}: {e.strerror or e}") from None
        chunks, size = [], 0
        try:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            while True:
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                size += len(chunk)
                if size > MAX_MESSAGE:
                    raise errors.AdschedError("the daemon's answer is too large")
                chunks.append(chunk)
        except OSError as e:  # reset, timeout: one line, not a traceback
            raise errors.AdschedError(f"the adsched daemon on {path} did not answer: {e.strerror or e}") from None
    try:
        answer = json.loads(b"".join(chunks))
    except ValueError:
        raise errors.AdschedError(f"no answer from the adsched daemon on {path} (did it stop?)") from None
    if "error" in answer:
        err = answer["error"]
        cls = getattr(errors, str(err.get("type")), None)
        if not (isinstance(cls, type) and issubclass(cls, errors.AdschedError)) or cls is errors.NodeFailure:
            cls = errors.AdschedError
        e = cls(str(err.get("message")))
        e.exit_code = int(err.get("exit_code", 1))
        raise e
    return answer.get("ok")


class Record(dict):
    """A job (or an explanation) as the daemon sent it: attribute access like JobRecord."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def to_dict(self) -> dict:
        return dict(self)


class RemoteStore:
    """The store's user-facing methods, answered by the daemon (same names and return shapes)."""

    def __init__(self, state_dir: str | os.PathLike):
        self.state_dir = os.fspath(state_dir)
        self._config = None

    def call(self, op: str, **args):
        return call(self.state_dir, op, **args)

    @property
    def config(self):
        if self._config is None:
            from adsched.core.config import parse_config_text

            self._config = parse_config_text(self.call("config"), os.path.join(self.state_dir, "cluster.toml"))
        return self._config

    def submit(self, req, now: float | None = None) -> int:
        return self.call("submit", request=_request_dict(req))

    def submit_many(self, reqs: list, now: float | None = None) -> list[int]:
        return self.call("submit_many", requests=[_request_dict(r) for r in reqs])

    def test_only(self, req, now: float | None = None) -> Record:
        return Record(self.call("test_only", request=_request_dict(req)))

    def jobs(self, states=None, user=None, queue=None) -> list[Record]:
        return [Record(j) for j in self.call("jobs", states=list(states) if states else None, user=user, queue=queue)]

    def listing(self, states=None, user=None, queue=None) -> list[Record]:
        return [Record(j) for j in self.call("listing", states=list(states) if states else None, user=user,
                                             queue=queue)]

    def job(self, job_id: int) -> Record:
        return Record(self.call("job", job_id=job_id))

    def events(self, job_id: int | None = None) -> list[dict]:
        return self.call("events", job_id=job_id)

    def cancel(self, job_id: int, now: float | None = None, by=None) -> str:
        return self.call("cancel", job_id=job_id)  # the daemon knows who asks; `by` is not sent

    def explain(self, job_id: int, now: float | None = None) -> Record:
        return Record(self.call("explain", job_id=job_id))

    def estimated_starts(self, now: float | None = None) -> dict[int, float]:
        return {int(k): v for k, v in self.call("estimated_starts").items()}  # JSON keys are strings

    def checkpointed(self, job_id: int, now: float | None = None) -> None:
        self.call("checkpointed", job_id=job_id)

    def nodes(self) -> list[dict]:
        return self.call("nodes")


def _request_dict(req) -> dict:
    """A JobRequest's fields; the user is not sent (the daemon takes it from the kernel)."""
    fields = dict(req if isinstance(req, dict) else vars(req))
    fields.pop("user", None)
    return fields
