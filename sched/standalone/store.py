"""Standalone state in SQLite (the stdlib sqlite3): jobs, nodes, allocations, events.

WAL mode so the daemon and many `adsub` processes share one file; every state
transition runs in one `BEGIN IMMEDIATE` transaction (writers queue on the lock instead
of failing, and job ids come from AUTOINCREMENT inside it, so they are unique under
concurrent submitters). `events` is append-only: the history of every job.

`adsub` opens a Store on every command, so opening is cheap: plain sqlite3 (sqlite-utils costs
~0.27 s to import and scans plugin entry points on every Database(); `Store.db` still gives one,
made on first use), and the core's explain/schedule modules are imported only when needed.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
from collections import namedtuple
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from adsched.core import fairshare
from adsched.core.config import ClusterConfig, parse_config, parse_config_text, toml_module
from adsched.errors import InvalidRequest, NotFound, StorageError
from adsched.jobspec import JobRequest, build_job, parse_array
from adsched.core.model import Job
from .auth import authorize, check_state_dir, lock_down_state
from adsched.publicconfig import publish_config
from adsched.standalone import crashpoints

if TYPE_CHECKING:
    from adsched.core.explain import Explanation
    from adsched.core.snapshot import NodeAlloc, Snapshot  # made on first use (core/model.py)

PENDING, RUNNING = "PENDING", "RUNNING"
COMPLETED, FAILED, CANCELLED, TIMEOUT = "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"
FINAL_STATES = (COMPLETED, FAILED, CANCELLED, TIMEOUT)
ACTIVE_STATES = (PENDING, RUNNING)

# Each entry migrates the schema from version i to i+1 (PRAGMA user_version).
MIGRATIONS: list[str] = [
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL, user TEXT NOT NULL, queue TEXT NOT NULL,
        num_nodes INTEGER NOT NULL, gpus_per_node INTEGER NOT NULL,
        time_limit INTEGER NOT NULL, priority INTEGER NOT NULL DEFAULT 0, max_leaves INTEGER,
        command TEXT NOT NULL, workdir TEXT NOT NULL, env TEXT NOT NULL DEFAULT '{}',
        state TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
        submit_time REAL NOT NULL, start_time REAL, end_time REAL, exit_code INTEGER,
        nodelist TEXT NOT NULL DEFAULT '', restart_count INTEGER NOT NULL DEFAULT 0,
        cancel_requested INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX jobs_state ON jobs(state);
    CREATE TABLE allocations (
        job_id INTEGER NOT NULL REFERENCES jobs(id), rank INTEGER NOT NULL,
        node TEXT NOT NULL, gpus TEXT NOT NULL, pid INTEGER,
        PRIMARY KEY (job_id, rank)
    );
    CREATE TABLE nodes (name TEXT PRIMARY KEY, state TEXT NOT NULL DEFAULT 'up', reason TEXT NOT NULL DEFAULT '');
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, job_id INTEGER,
        kind TEXT NOT NULL, data TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX events_job ON events(job_id);
    """,
    # 2: arrays, dependencies, MIG, quota borrowing, fair-share usage, preemption and requeue
    """
    ALTER TABLE jobs ADD COLUMN array_id INTEGER;
    ALTER TABLE jobs ADD COLUMN array_index INTEGER;
    ALTER TABLE jobs ADD COLUMN array_throttle INTEGER;
    ALTER TABLE jobs ADD COLUMN after_ok TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE jobs ADD COLUMN after_any TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE jobs ADD COLUMN mig_profile TEXT;
    ALTER TABLE jobs ADD COLUMN mig_count INTEGER;
    ALTER TABLE jobs ADD COLUMN borrowing INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN signal TEXT;
    ALTER TABLE jobs ADD COLUMN no_requeue INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN checkpoint_time REAL;
    ALTER TABLE jobs ADD COLUMN preempted_by INTEGER;
    ALTER TABLE jobs ADD COLUMN begin_time REAL;
    ALTER TABLE jobs ADD COLUMN start_tries INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE allocations ADD COLUMN slices TEXT NOT NULL DEFAULT '';
    CREATE INDEX jobs_array ON jobs(array_id);
    CREATE TABLE usage (kind TEXT NOT NULL, name TEXT NOT NULL, gpu_hours REAL NOT NULL,
                        PRIMARY KEY (kind, name));
    """,
    # 3: why a requeued job is held until begin_time (the core's BeginTime reason names it)
    """
    ALTER TABLE jobs ADD COLUMN begin_cause TEXT NOT NULL DEFAULT '';
    """,
    # 4: `adsub hold`: '' (not held), 'user' or 'admin' (only an admin releases an admin's hold)
    """
    ALTER TABLE jobs ADD COLUMN hold TEXT NOT NULL DEFAULT '';
    """,
]


@dataclass
class JobRecord:
    id: int
    name: str
    user: str
    queue: str
    num_nodes: int
    gpus_per_node: int
    time_limit: int
    priority: int
    max_leaves: int | None
    command: list[str]
    workdir: str
    env: dict
    state: str
    reason: str
    submit_time: float
    start_time: float | None
    end_time: float | None
    exit_code: int | None
    nodelist: str
    restart_count: int
    cancel_requested: bool
    array_id: int | None = None
    array_index: int | None = None
    array_throttle: int | None = None
    after_ok: list[int] = field(default_factory=list)
    after_any: list[int] = field(default_factory=list)
    mig_profile: str | None = None
    mig_count: int | None = None
    borrowing: bool = False
    signal: str | None = None
    no_requeue: bool = False
    checkpoint_time: float | None = None
    preempted_by: int | None = None
    begin_time: float | None = None
    start_tries: int = 0
    begin_cause: str = ""
    hold: str = ""  # jobctl.py: a held job is not eligible (the core sees an endless begin time)
    allocations: list[dict] = field(default_factory=list)

    def as_job(self) -> Job:
        job = Job(
            id=self.id, queue=self.queue, num_nodes=self.num_nodes, gpus_per_node=self.gpus_per_node,
            time_limit=self.time_limit, submit_time=self.submit_time, user=self.user, name=self.name,
            priority=self.priority, max_leaves=self.max_leaves, array_id=self.array_id,
            array_index=self.array_index, array_throttle=self.array_throttle, after_ok=tuple(self.after_ok),
            after_any=tuple(self.after_any),
            mig=(self.mig_profile, self.mig_count) if self.mig_profile else None,
            begin_time=self.begin_time, begin_cause=self.begin_cause,
        )
        if self.hold:  # `adsub hold` (jobctl.py): never eligible until released, like Slurm's JobHeldUser
            cause = f"JobHeld{'Admin' if self.hold == 'admin' else 'User'} (adsub release {self.id})"
            return replace(job, begin_time=math.inf, begin_cause=cause)
        return job

    def placement(self) -> tuple[NodeAlloc, ...]:
        from adsched.core.snapshot import NodeAlloc  # the daemon's, not `adsub submit`'s (core/model.py)

        return tuple(NodeAlloc(a["node"], tuple(a["gpus"]), tuple(map(tuple, a["slices"])))
                     for a in sorted(self.allocations, key=lambda a: a["rank"]))

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["cancel_requested"] = bool(d["cancel_requested"])
        return d


# One encoder each, made once (json.dumps with any argument builds a new encoder per call).
_encode = json.JSONEncoder().encode
_encode_sorted = json.JSONEncoder(sort_keys=True).encode

_RECORD_FIELDS = frozenset(JobRecord.__dataclass_fields__)

# What a job listing shows (Store.listing): JobRecord's attribute names, so a table reads either.
LISTING_COLUMNS = ("id", "name", "user", "queue", "state", "reason", "num_nodes", "gpus_per_node", "mig_profile",
                   "mig_count", "time_limit", "priority", "submit_time", "start_time", "end_time", "exit_code",
                   "nodelist", "array_id", "array_index", "array_throttle", "restart_count")
_ListingRow = namedtuple("JobRow", LISTING_COLUMNS)


def _jobs_where(states: tuple[str, ...] | None, user: str | None, queue: str | None) -> tuple[str, list]:
    """The WHERE and ORDER BY of a job listing, and its parameters."""
    where, params = [], []
    if states:
        where.append(f"state IN ({','.join('?' * len(states))})")
        params += list(states)
    if user:
        where.append("user = ?")
        params.append(user)
    if queue:
        where.append("queue = ?")
        params.append(queue)
    return (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id", params


def _record(row: dict, allocs: list[dict] | None = None) -> JobRecord:
    row = dict(row)
    for key in ("command", "env", "after_ok", "after_any"):
        value = row[key]
        row[key] = [] if value == "[]" else {} if value == "{}" else json.loads(value)  # most are empty
    for key in ("cancel_requested", "borrowing", "no_requeue"):
        row[key] = bool(row[key])
    row["allocations"] = allocs or []
    if row.keys() != _RECORD_FIELDS:  # a column without a field (or the reverse): let __init__ say which
        return JobRecord(**row)
    # Every field is here: fill the instance directly (half the cost of the generated __init__
    # with its 37 arguments; `adsub queue` and each daemon cycle build one per pending job).
    record = object.__new__(JobRecord)
    record.__dict__.update(row)
    return record


def _parsed_toml(text: str) -> str:
    """The cluster TOML's text and its parse as JSON, kept beside it (meta 'cluster_parsed'): every `adsub`
    call reads its config, and JSON needs neither tomllib's import nor its parser (~5 ms a call)."""
    try:
        return _encode([text, toml_module().loads(text)])
    except (TypeError, ValueError):  # a TOML date or time has no JSON form: Store.config then parses the TOML
        return ""


def node_status(state: str, gpus_used: int, gpus: int, has_jobs: bool) -> str:
    """sinfo's word for a node: idle, mix, alloc; drain (drained), draining (jobs still on it), down."""
    if state == "down":
        return "down"
    if state == "drain":
        return "draining" if has_jobs else "drain"
    if not has_jobs:
        return "idle"
    return "alloc" if gpus_used >= gpus else "mix"  # MIG slices count as mix: the node has room


class StoreError(StorageError, sqlite3.OperationalError):
    """SQLite could not use the store (permissions, a locked or broken file): one clear line for the
    CLI, and still an OperationalError for code that handles those."""


class StoreConnection(sqlite3.Connection):
    """A connection whose OperationalErrors name the store file (sqlite3.connect(..., factory=))."""

    def __init__(self, database, *args, **kwargs):
        super().__init__(database, *args, **kwargs)
        self.path = str(database)

    def _error(self, e: sqlite3.OperationalError) -> StoreError:
        hint = ""
        if "readonly" in str(e) or "unable to open" in str(e):
            hint = " (this user may not write the state directory or its adsched.sqlite* files)"
            with contextlib.suppress(OSError):
                if os.statvfs(self.path).f_flag & os.ST_RDONLY:
                    hint = " (the state directory is on a read-only file system)"
        return StoreError(f"cannot use the adsched store {self.path}: {e}{hint}")

    def execute(self, *args):
        try:
            return super().execute(*args)
        except sqlite3.OperationalError as e:
            raise self._error(e) from None

    def executemany(self, *args):
        try:
            return super().executemany(*args)
        except sqlite3.OperationalError as e:
            raise self._error(e) from None


class Store:
    DB_NAME = "adsched.sqlite"
    CONFIG_NAME = "cluster.toml"

    def __init__(self, state_dir: str | Path, conn: sqlite3.Connection | None = None):
        self.state_dir = Path(state_dir)
        if conn is None:
            db_path = self.state_dir / self.DB_NAME
            if not db_path.exists():
                raise NotFound(f"no adsched state in {self.state_dir} (run `adsched init` first)")
            conn = sqlite3.connect(db_path, timeout=30, factory=StoreConnection)
        self.conn = conn
        self._db = None
        self.conn.execute("PRAGMA busy_timeout = 30000")
        self._migrate()
        self._config: ClusterConfig | None = None

    @property
    def db(self):
        """A sqlite_utils.Database on the same connection, for ad-hoc use (imported on first use)."""
        if self._db is None:
            import sqlite_utils

            self._db = sqlite_utils.Database(self.conn)
        return self._db

    def _query(self, sql: str, params=()) -> list[dict]:
        """Rows as dicts (zip with the column names: several times faster than dict(sqlite3.Row))."""
        cur = self.conn.execute(sql, params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur]

    # --- lifecycle -----------------------------------------------------------------------

    @classmethod
    def init(cls, state_dir: str | Path, cluster_toml: str, memory: bool = False) -> "Store":
        """Create (or re-point) a state dir at a validated cluster config."""
        config = parse_config_text(cluster_toml, "cluster config")  # raises ConfigError
        state_dir = Path(state_dir)
        if memory:
            store = cls(state_dir, sqlite3.connect(":memory:"))
        else:
            check_state_dir(state_dir)  # before anything is created there
            state_dir.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(state_dir / cls.DB_NAME, timeout=30, factory=StoreConnection)
            conn.execute("PRAGMA journal_mode = WAL")
            store = cls(state_dir, conn)
        with store.transaction():
            store.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('cluster_toml', ?)", (cluster_toml,))
            store.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('cluster_parsed', ?)",
                               (_parsed_toml(cluster_toml),))
            for node in config.nodes:
                store.conn.execute("INSERT OR IGNORE INTO nodes(name) VALUES (?)", (node.name,))
            store._event(None, "init", {"cluster": config.name, "nodes": len(config.nodes)}, 0.0)
        store._config = config
        if not memory:
            lock_down_state(state_dir, cls.DB_NAME)  # only the daemon's user writes (or reads) the store
            # Slurm mode has no daemon: its users read the cluster config beside the store (publicconfig.py).
            publish_config(state_dir, cluster_toml, config.backend)
        return store

    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        for i in range(version, len(MIGRATIONS)):
            with self.transaction():
                for stmt in MIGRATIONS[i].split(";"):
                    if stmt.strip():
                        self.conn.execute(stmt)
                self.conn.execute(f"PRAGMA user_version = {i + 1}")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as e:  # disk full, read-only, I/O error: all rolled back
            where = "" if isinstance(e, StoreError) else f"state store {self.state_dir}: "
            raise StorageError(f"{where}{e} (nothing was written)") from None
        crashpoints.hit("commit")

    @property
    def config(self) -> ClusterConfig:
        if self._config is None:
            meta = dict(self.conn.execute("SELECT key, value FROM meta"
                                          " WHERE key IN ('cluster_toml', 'cluster_parsed')"))
            if "cluster_toml" not in meta:
                raise NotFound("state has no cluster config (run `adsched init`)")
            source, text = str(self.state_dir / self.CONFIG_NAME), meta["cluster_toml"]
            parsed = json.loads(meta["cluster_parsed"]) if meta.get("cluster_parsed") else None
            if parsed and parsed[0] == text:  # init's parse of this very text: validated as the TOML is
                self._config = parse_config(parsed[1], source)
            else:  # a store made before 'cluster_parsed' (or a TOML JSON cannot hold)
                self._config = parse_config_text(text, source)
        return self._config

    def _event(self, job_id: int | None, kind: str, data: dict, now: float) -> None:
        self.conn.execute(
            "INSERT INTO events(time, job_id, kind, data) VALUES (?, ?, ?, ?)",
            (now, job_id, kind, _encode_sorted(data)),
        )

    # --- users ---------------------------------------------------------------------------

    def build_job(self, req: JobRequest, now: float, job_id: int = 0) -> Job:
        return build_job(self.config, req, now, job_id)

    def submit(self, req: JobRequest, now: float) -> int:
        """Insert a job (or every task of an array) in one transaction; returns its id (the array's id)."""
        job = self.build_job(req, now)
        with self.transaction():
            return self._insert(req, job, now)

    def submit_many(self, reqs: list[JobRequest], now: float) -> list[int]:
        """Submit many requests in one transaction (all or none; the first bad one is named).

        One BEGIN IMMEDIATE and one COMMIT for the lot: `adsub submit --file` of 10,000 job specs.
        """
        jobs = []
        for n, req in enumerate(reqs, 1):
            try:
                jobs.append(self.build_job(req, now))
            except InvalidRequest as e:
                raise InvalidRequest(f"job {n}: {e}") from None
        with self.transaction():
            return [self._insert(req, job, now) for req, job in zip(reqs, jobs)]

    def _insert(self, req: JobRequest, job: Job, now: float) -> int:
        """Insert a validated job (or every task of its array), inside the caller's transaction."""
        indexes = parse_array(req.array)[0] if req.array else [None]
        after_ok = self._resolve_dependencies(job.after_ok)
        after_any = self._resolve_dependencies(job.after_any)
        first = None
        for index in indexes:
            cur = self.conn.execute(
                "INSERT INTO jobs(name, user, queue, num_nodes, gpus_per_node, time_limit, priority, max_leaves,"
                " command, workdir, env, state, submit_time, array_id, array_index, array_throttle, after_ok,"
                " after_any, mig_profile, mig_count, signal, no_requeue)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (job.name, job.user, job.queue, job.num_nodes, job.gpus_per_node, job.time_limit, job.priority,
                 job.max_leaves, _encode(req.command), req.workdir,
                 _encode({**req.env, **({"ADSCHED_ARRAY_TASK_ID": str(index)} if index is not None else {})}),
                 PENDING, now, first, index, job.array_throttle, _encode(after_ok), _encode(after_any),
                 job.mig[0] if job.mig else None, job.mig[1] if job.mig else None, req.signal,
                 int(req.no_requeue)),
            )
            job_id = cur.lastrowid
            if index is not None and first is None:
                first = job_id
                self.conn.execute("UPDATE jobs SET array_id = ? WHERE id = ?", (first, job_id))
            self._event(job_id, "submit", {"queue": job.queue, "nodes": job.num_nodes,
                                           "gpus_per_node": job.gpus_per_node, "array_index": index}, now)
        return first if first is not None else job_id

    def jobs_in_array(self, array_id: int) -> list[int]:
        return [r[0] for r in self.conn.execute("SELECT id FROM jobs WHERE array_id = ? ORDER BY id", (array_id,))]

    def _resolve_dependencies(self, ids: tuple[int, ...]) -> list[int]:
        """Check the jobs exist; an array's id stands for every one of its tasks (as in Slurm)."""
        out: list[int] = []
        for dep in ids:
            row = self.conn.execute("SELECT array_id FROM jobs WHERE id = ?", (dep,)).fetchone()
            if row is None:
                raise InvalidRequest(f"--dependency: no job {dep}")
            if row[0] == dep:
                out += self.jobs_in_array(dep)
            else:
                out.append(dep)
        return out

    def cancel(self, job_id: int, now: float, by=None) -> str:
        """Cancel a job: a pending one at once, a running one by asking the daemon to stop its ranks.

        `by` (an auth.Identity) must own the job or be an admin; None: a trusted in-process caller.
        """
        authorize(self, by, job_id, "cancel", now)
        with self.transaction():
            row = self.conn.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise NotFound(f"no job {job_id}")
            state = row[0]
            if state == PENDING:
                self.conn.execute(
                    "UPDATE jobs SET state = ?, reason = 'cancelled by user', end_time = ? WHERE id = ?",
                    (CANCELLED, now, job_id),
                )
                self._event(job_id, "cancel", {"was": PENDING}, now)
                return CANCELLED
            if state == RUNNING:
                self.conn.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
                self._event(job_id, "cancel_requested", {}, now)
                return "CANCELLING"
            raise InvalidRequest(f"job {job_id} already ended ({state})")

    def job(self, job_id: int) -> JobRecord:
        if not 0 <= job_id < 2**63:  # SQLite's INTEGER cannot even hold it
            raise NotFound(f"no job {job_id}")
        rows = list(self._query("SELECT * FROM jobs WHERE id = ?", [job_id]))
        if not rows:
            raise NotFound(f"no job {job_id}")
        return _record(rows[0], self._allocations([job_id]).get(job_id, []))

    def jobs(self, states: tuple[str, ...] | None = None, user: str | None = None,
             queue: str | None = None) -> list[JobRecord]:
        sql, params = _jobs_where(states, user, queue)
        rows = list(self._query("SELECT * FROM jobs" + sql, params))
        allocs = self._allocations([r["id"] for r in rows if r["state"] != PENDING])
        return [_record(r, allocs.get(r["id"], [])) for r in rows]

    def listing(self, states: tuple[str, ...] | None = None, user: str | None = None,
                queue: str | None = None) -> list[tuple]:
        """The jobs `adsub queue` tabulates, as named tuples of LISTING_COLUMNS only.

        Same filters and order as `jobs`, without the JSON columns and allocations a table
        does not show: a third of the time of `jobs` on 10,000 pending jobs (bench/submit.py).
        """
        sql, params = _jobs_where(states, user, queue)
        cur = self.conn.execute(f"SELECT {', '.join(LISTING_COLUMNS)} FROM jobs" + sql, params)
        make = _ListingRow._make
        return [make(r) for r in cur]

    def _allocations(self, job_ids: list[int]) -> dict[int, list[dict]]:
        out: dict[int, list[dict]] = {}
        if not job_ids:
            return out
        for chunk in range(0, len(job_ids), 500):
            ids = job_ids[chunk : chunk + 500]
            for a in self._query(
                f"SELECT * FROM allocations WHERE job_id IN ({','.join('?' * len(ids))}) ORDER BY job_id, rank", ids
            ):
                a = dict(a)
                a["gpus"] = [int(g) for g in a["gpus"].split(",") if g]
                a["slices"] = json.loads(a["slices"]) if a["slices"] else []
                out.setdefault(a["job_id"], []).append(a)
        return out

    def events(self, job_id: int | None = None) -> list[dict]:
        if job_id is None:
            rows = self._query("SELECT * FROM events ORDER BY id")
        else:
            rows = self._query("SELECT * FROM events WHERE job_id = ? ORDER BY id", [job_id])
        return [dict(r, data=json.loads(r["data"])) for r in rows]

    def nodes(self) -> list[dict]:
        """Each node with its state and GPUs in use (for `adsched nodes`)."""
        used: dict[str, int] = {}
        jobs_on: dict[str, list[int]] = {}
        for a in self._query(
            "SELECT a.node, a.gpus, a.job_id FROM allocations a JOIN jobs j ON j.id = a.job_id WHERE j.state = ?",
            [RUNNING],
        ):
            used[a["node"]] = used.get(a["node"], 0) + len([g for g in a["gpus"].split(",") if g])
            jobs_on.setdefault(a["node"], []).append(a["job_id"])
        states = {r["name"]: r for r in self._query("SELECT * FROM nodes")}
        out = []
        for n in self.config.nodes:
            st = states.get(n.name, {"state": "up", "reason": ""})
            out.append({"name": n.name, "leaf": n.leaf, "state": st["state"], "reason": st["reason"],
                        "gpus": n.gpus, "gpus_used": used.get(n.name, 0), "gpu_model": n.gpu_model,
                        "jobs": jobs_on.get(n.name, []),
                        "status": node_status(st["state"], used.get(n.name, 0), n.gpus, bool(jobs_on.get(n.name)))})
        return out

    def set_node_state(self, name: str, state: str, reason: str, now: float) -> None:
        if name not in {n.name for n in self.config.nodes}:
            raise NotFound(f"no node {name}")
        if state not in ("up", "drain", "down"):
            raise InvalidRequest(f"node state must be up, drain or down, got {state!r}")
        with self.transaction():
            self.conn.execute("INSERT OR REPLACE INTO nodes(name, state, reason) VALUES (?,?,?)", (name, state, reason))
            self._event(None, "node_state", {"node": name, "state": state, "reason": reason}, now)

    # --- the daemon ----------------------------------------------------------------------

    def snapshot(self, now: float) -> Snapshot:
        """What the core needs for the cycle at `now` (the contract in model.Snapshot): read only.

        Every pending job is in it, those held by the start backoff too (Job.begin_time: the core
        holds them); fair-share usage is accrued up to `now` here and saved by record_cycle.
        """
        from adsched.core.snapshot import RunningJob, Snapshot

        pending = self.jobs(states=(PENDING,))
        running_records = self.jobs(states=(RUNNING,))
        running = tuple(
            RunningJob(r.as_job(), r.start_time or 0.0, r.placement(), borrowing=r.borrowing,
                       checkpoint_time=r.checkpoint_time)
            for r in running_records
        )
        # Preemptor -> victims, until the preemptor starts (victims keep preempted_by when requeued).
        waiting = {r.id for r in pending}
        preempting: dict[int, list[int]] = {}
        for victim_id, preemptor in self.conn.execute(
            "SELECT id, preempted_by FROM jobs WHERE preempted_by IS NOT NULL AND state IN (?, ?) ORDER BY id",
            (PENDING, RUNNING),
        ):
            if preemptor in waiting:
                preempting.setdefault(preemptor, []).append(victim_id)
        deps = sorted({d for r in pending for d in (*r.after_ok, *r.after_any)})
        finished = {}
        for chunk in range(0, len(deps), 500):
            ids = deps[chunk : chunk + 500]
            for row in self.conn.execute(
                f"SELECT id, state FROM jobs WHERE id IN ({','.join('?' * len(ids))})", ids
            ):
                if row[1] in FINAL_STATES:
                    finished[row[0]] = row[1]
        users, queues = self._usage(running, now)
        unavailable = frozenset(r["name"] for r in self._query("SELECT name FROM nodes WHERE state != 'up'"))
        return Snapshot(pending=tuple(r.as_job() for r in pending), running=running, unavailable=unavailable,
                        finished=finished, user_usage=users, queue_usage=queues,
                        preempting={k: tuple(v) for k, v in preempting.items()})

    def _usage(self, running, now: float) -> tuple[dict[str, float], dict[str, float]]:
        """Decayed GPU-hours per user and queue, accrued up to `now` (read only)."""
        usage: dict[str, dict[str, float]] = {"user": {}, "queue": {}}
        for row in self.conn.execute("SELECT kind, name, gpu_hours FROM usage"):
            usage.setdefault(row[0], {})[row[1]] = row[2]
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'usage_time'").fetchone()
        since = float(row[0]) if row else now
        half_life = self.config.scheduler.fairshare_half_life
        users = fairshare.accrue(usage["user"], running, since, now, half_life, key=lambda r: r.job.user)
        queues = fairshare.accrue(usage["queue"], running, since, now, half_life, key=lambda r: r.job.queue)
        return users, queues

    def _save_usage(self, snapshot: Snapshot, now: float) -> None:
        """Keep the usage the cycle's snapshot accrued up to `now` (inside a transaction)."""
        self.conn.execute("DELETE FROM usage")
        self.conn.executemany("INSERT INTO usage(kind, name, gpu_hours) VALUES (?,?,?)",
                              [("user", k, v) for k, v in snapshot.user_usage.items()]
                              + [("queue", k, v) for k, v in snapshot.queue_usage.items()])
        self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('usage_time', ?)", (str(now),))

    def record_cycle(self, decisions, now: float, snapshot: Snapshot | None = None) -> list[JobRecord]:
        """Persist one cycle's decisions in one transaction; returns the started jobs.

        `snapshot`: the one the decisions were made from; its fair-share usage is saved too."""
        started = []
        with self.transaction():
            if snapshot is not None:
                self._save_usage(snapshot, now)
            for start in decisions.starts:
                nodes = [a.node for a in start.placement]
                cur = self.conn.execute(
                    "UPDATE jobs SET state = ?, start_time = ?, reason = '', nodelist = ?, borrowing = ?,"
                    " preempted_by = NULL, checkpoint_time = NULL WHERE id = ? AND state = ?",
                    (RUNNING, now, ",".join(nodes), int(start.borrowing), start.job_id, PENDING),
                )
                if cur.rowcount != 1:  # cancelled between snapshot and now: skip it
                    continue
                self.conn.execute("DELETE FROM allocations WHERE job_id = ?", (start.job_id,))
                for rank, a in enumerate(start.placement):
                    self.conn.execute(
                        "INSERT INTO allocations(job_id, rank, node, gpus, slices) VALUES (?,?,?,?,?)",
                        (start.job_id, rank, a.node, ",".join(map(str, a.gpus)),
                         json.dumps([list(s) for s in a.slices]) if a.slices else ""),
                    )
                self._event(start.job_id, "start", {"nodes": nodes, "gpus": [list(a.gpus) for a in start.placement],
                                                    "borrowing": start.borrowing}, now)
                started.append(start.job_id)
            for job_id, reason in decisions.cancels.items():
                reason = str(reason)  # the text users see; the code leads it
                cur = self.conn.execute(
                    "UPDATE jobs SET state = ?, reason = ?, end_time = ? WHERE id = ? AND state = ?",
                    (CANCELLED, reason, now, job_id, PENDING),
                )
                if cur.rowcount == 1:
                    self._event(job_id, "cancel", {"reason": reason}, now)
            for job_id, reason in decisions.pending_reasons.items():
                reason = str(reason)
                self.conn.execute(
                    "UPDATE jobs SET reason = ? WHERE id = ? AND state = ? AND reason != ?",
                    (reason, job_id, PENDING, reason),
                )
        return [self.job(j) for j in started]

    def set_pids(self, job_id: int, pids: dict[int, int]) -> None:
        with self.transaction():
            for rank, pid in pids.items():
                self.conn.execute("UPDATE allocations SET pid = ? WHERE job_id = ? AND rank = ?", (pid, job_id, rank))

    def explain(self, job_id: int, now: float) -> "Explanation":
        """Why a pending job waits, and its earliest estimated start and place (core's explain)."""
        job = self.job(job_id)
        if job.state != PENDING:
            raise InvalidRequest(f"job {job_id} is {job.state}, not pending")
        from adsched.core.explain import explain

        return explain(self.snapshot(now), self.config, now, job_id=job_id)

    def estimated_starts(self, now: float) -> dict[int, float]:
        """{pending job id: when the core expects it to start}, for the jobs it would start now or holds a
        reservation for (squeue --start); the others have no estimate. One core run on a snapshot: writes
        nothing."""
        from adsched.core.schedule import schedule

        decisions = schedule(self.snapshot(now), self.config, now)
        return {**{r.job_id: r.start_time for r in decisions.reservations},
                **{s.job_id: now for s in decisions.starts}}

    def test_only(self, req: JobRequest, now: float) -> "Explanation":
        """What would happen if this request were submitted now (sbatch --test-only); writes nothing."""
        row = self.conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM jobs").fetchone()
        job = self.build_job(req, now, job_id=row[0])
        from adsched.core.explain import explain

        return explain(self.snapshot(now), self.config, now, job=job)

    def checkpointed(self, job_id: int, now: float) -> None:
        """A running job reports a checkpoint: preemption counts work lost from here."""
        with self.transaction():
            cur = self.conn.execute("UPDATE jobs SET checkpoint_time = ? WHERE id = ? AND state = ?",
                                    (now, job_id, RUNNING))
            if cur.rowcount != 1:
                raise InvalidRequest(f"job {job_id} is not running")
            self._event(job_id, "checkpoint", {}, now)

    def add_event(self, job_id: int | None, kind: str, data: dict, now: float) -> None:
        """Record something that happened outside the daemon (e.g. a Slurm hook)."""
        with self.transaction():
            self._event(job_id, kind, data, now)

    def requeue(self, job_id: int, reason: str, now: float, begin_time: float | None = None,
                start_try: bool = False) -> None:
        """Put a running job back to PENDING whole: allocations dropped, restart count + 1.

        A preempted job keeps `preempted_by` until it starts again, so its preemptor keeps its
        claim (Snapshot.preempting) in the cycle the space frees up.

        `begin_time`: not eligible before (backoff); `start_try`: the gang failed to start.
        """
        with self.transaction():
            cur = self.conn.execute(
                "UPDATE jobs SET state = ?, reason = ?, start_time = NULL, nodelist = '', cancel_requested = 0,"
                " restart_count = restart_count + 1, borrowing = 0, begin_time = ?, begin_cause = ?,"
                " start_tries = start_tries + ? WHERE id = ? AND state = ? AND cancel_requested = 0",
                (PENDING, reason, begin_time, reason if begin_time is not None else "", int(start_try), job_id,
                 RUNNING),
            )
            if cur.rowcount == 1:
                self.conn.execute("DELETE FROM allocations WHERE job_id = ?", (job_id,))
                self._event(job_id, "requeue", {"reason": reason, "begin_time": begin_time}, now)
            # A cancel that came while the daemon was stopping the job wins: it does not run again.
            elif self.conn.execute(
                "UPDATE jobs SET state = ?, reason = 'cancelled by user', end_time = ? WHERE id = ? AND state = ?"
                " AND cancel_requested = 1", (CANCELLED, now, job_id, RUNNING)
            ).rowcount == 1:
                self._event(job_id, "end", {"state": CANCELLED, "exit_code": None, "reason": "cancelled by user"}, now)

    def mark_preempted(self, victim: int, preemptor: int, reason: str, now: float) -> JobRecord | None:
        """Record the core's preemption decision; the daemon then stops the victim's ranks."""
        with self.transaction():
            cur = self.conn.execute(
                "UPDATE jobs SET preempted_by = ?, reason = ? WHERE id = ? AND state = ? AND preempted_by IS NULL",
                (preemptor, reason, victim, RUNNING),
            )
            if cur.rowcount != 1:
                return None
            self._event(victim, "preempt", {"by": preemptor, "reason": reason}, now)
        return self.job(victim)

    def finish(self, job_id: int, state: str, exit_code: int | None, reason: str, now: float) -> None:
        assert state in FINAL_STATES
        with self.transaction():
            cur = self.conn.execute(
                "UPDATE jobs SET state = ?, exit_code = ?, reason = ?, end_time = ? WHERE id = ? AND state = ?",
                (state, exit_code, reason, now, job_id, RUNNING),
            )
            if cur.rowcount == 1:
                self._event(job_id, "end", {"state": state, "exit_code": exit_code, "reason": reason}, now)
