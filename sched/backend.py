"""Where `adsub` sends work: the standalone store/daemon, or Slurm. Chosen by `[cluster] backend`.

Both take the same JobRequest, validated the same way (jobspec.build_job), and answer with the
same JobRecord, so `adsub` prints the same tables whichever runs the jobs. The Slurm backend
keeps no job state of its own: Slurm is the source of truth (read through SlurmClient), and the
store only holds the cluster config and the events the Slurm hooks record.
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

from .errors import InvalidRequest, NotFound, PermissionDenied
from .jobspec import JobRequest, build_job
from .publicconfig import read_public_config
from adsched.standalone.auth import current_identity
from adsched.standalone.remote import RemoteStore, needs_daemon
from adsched.standalone.store import JobRecord, Store

if TYPE_CHECKING:  # the Slurm client (subprocess and all) is imported only for a Slurm cluster
    from adsched.slurm.client import Runner, SlurmClient, SlurmJob


class Backend(Protocol):
    def submit(self, req: JobRequest, now: float) -> int: ...

    def jobs(self, states=None, user=None, queue=None) -> list[JobRecord]: ...

    def listing(self, states=None, user=None, queue=None) -> list: ...

    def job(self, job_id: int) -> JobRecord: ...

    def cancel(self, job_id: int, now: float, by=None) -> str: ...

    def events(self, job_id: int | None = None) -> list[dict]: ...

    def estimated_starts(self, now: float) -> dict[int, float]: ...


def open_backend(state_dir: str | Path, runner: "Runner | None" = None) -> Backend:
    if needs_daemon(state_dir):  # the store is another user's
        public = read_public_config(state_dir)
        if public is None:  # standalone: ask its daemon (which knows our uid)
            return RemoteStore(state_dir)
        # Slurm mode: no daemon, and none needed. Slurm runs our commands as us and decides what we may do.
        from adsched.slurm.client import SlurmClient, local_runner

        return SlurmBackend(None, SlurmClient(runner or local_runner), public=public, state_dir=state_dir)
    store = Store(state_dir)
    if store.config.backend == "slurm":
        from adsched.slurm.client import SlurmClient, local_runner

        return SlurmBackend(store, SlurmClient(runner or local_runner))
    return store


# A job whose node prolog failed: requeued held by Slurm (job_mgr.c), its node drained by the prolog with
# "Prolog error (job N): <why>" (plugins/hooks.py).
LAUNCH_FAILED = "launch failed requeued held"
_PROLOG_REASON = re.compile(r"^Prolog error \(job (\d+)\): (.+)$")

# Slurm's finished states map onto ours; the rest keep Slurm's name (REQUEUED, NODE_FAIL, ...).
_ACTIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "SUSPENDED", "PREEMPTED"}


class SlurmBackend:
    def __init__(self, store: Store | None, client: SlurmClient, public: tuple[str, object] | None = None,
                 clock: Callable[[], float] = time.time, state_dir: str | Path | None = None):
        """`store`: the cluster config, and the events the hooks and the controller write. None for a user who
        may not read it: then `public` (publicconfig.read_public_config) gives the config, and what the store
        would add (the hooks' events) is left out; the controller's pending reasons come from Slurm, and
        whether it still runs from its public heartbeat in `state_dir`."""
        self.store = store
        self.state_dir = state_dir
        self.public_toml, self.config = public if store is None else (None, store.config)
        self.client = client
        self.clock = clock  # to tell whether the controller's last cycle is recent

    def submit(self, req: JobRequest, now: float) -> int:
        for flag, value in (("--gpus PROFILE:N (MIG)", req.mig), ("--signal", req.signal)):
            if value:
                raise InvalidRequest(f"{flag} is not supported on the Slurm backend yet")
        from adsched.slurm.client import SubmitSpec

        job = build_job(self.config, req, now)  # the same checks as standalone; job_submit.lua checks again
        spec = SubmitSpec(
            command=list(req.command), nodes=job.num_nodes, gpus_per_node=job.gpus_per_node, partition=job.queue,
            time_minutes=math.ceil(job.time_limit / 60), name=job.name, max_leaves=job.max_leaves,
            workdir=req.workdir, array=req.array, dependency=_slurm_dependency(job.after_ok, job.after_any),
            no_requeue=req.no_requeue,
            preempt_grace=self.config.queues[job.queue].grace_period if self.config.queues[job.queue].preemptible
            else None,
        )
        return self.client.submit(spec)

    def _core_reasons(self, jobs: list[SlurmJob]) -> dict[int, tuple[str, float | None]]:
        """The controller's pending reasons (controller mode; empty otherwise): from the store, or, for a user
        who cannot read it, as the controller published them in Slurm (the jobs' AdminComment)."""
        if self.store is None:
            from adsched.publicconfig import read_beat
            from adsched.slurm.published import reasons, without_controller

            last, interval = (self.state_dir is not None and read_beat(self.state_dir)) or (None, 0.0)
            return without_controller(reasons(jobs), last, interval, self.clock())
        from adsched.slurm.controller import pending_reasons

        return pending_reasons(self.store, self.clock())

    def _prolog_failures(self, jobs: list[SlurmJob]) -> dict[int, str]:
        """{job id: why its prolog failed} from the node reasons the failing prolog wrote (public: sinfo), for
        the jobs Slurm requeued held after a failed launch."""
        if not any(j.raw.get("state_description") == LAUNCH_FAILED for j in jobs):
            return {}
        out: dict[int, str] = {}
        for n in self.client.nodes():
            m = _PROLOG_REASON.match(n.reason)
            if m:
                out.setdefault(int(m.group(1)), m.group(2))
        return out

    def jobs(self, states=None, user=None, queue=None) -> list[JobRecord]:
        out = []
        slurm_jobs = self.client.jobs()
        reasons = self._core_reasons(slurm_jobs)
        failures = self._prolog_failures(slurm_jobs)
        for j in slurm_jobs:
            rec = _record(j, reasons, failures)
            if states and rec.state not in states and not ("RUNNING" in states and rec.state in _ACTIVE - {"PENDING"}):
                continue
            if (user and rec.user != user) or (queue and rec.queue != queue):
                continue
            out.append(rec)
        return sorted(out, key=lambda r: r.id)

    def estimated_starts(self, now: float) -> dict[int, float]:
        """{pending job id: the start the controller's last cycle expects} (controller mode; empty otherwise)."""
        return {job_id: est for job_id, (_, est) in self._core_reasons(self.client.jobs()).items()
                if est is not None}

    listing = jobs  # Store.listing's shape: JobRecords have every attribute a listing row has

    def job(self, job_id: int) -> JobRecord:
        j = self.client.job(job_id)
        if j is None:
            raise NotFound(f"no job {job_id} in Slurm (finished jobs leave squeue after MinJobAge)")
        return _record(j, self._core_reasons([j]), self._prolog_failures([j]))

    def explain(self, job_id: int, now: float):
        """The core's explanation of a pending job, on Slurm's state now (controller mode)."""
        from adsched.slurm.controller import explain_job

        # Without the store: the core on Slurm's state alone, in a throw-away store (no fair-share usage, no
        # controller bookkeeping), so an estimate; an admin's `adsub explain` has both.
        store = self.store or Store.init(self.config.name, self.public_toml, memory=True)
        return explain_job(store, self.client, job_id, now, use_published=self.store is None)

    def cancel(self, job_id: int, now: float, by=None) -> str:
        # Slurm checks who may cancel: scancel runs as the calling user.
        from adsched.slurm.client import SlurmError

        job = self.job(job_id)
        if job.state not in _ACTIVE:
            raise InvalidRequest(f"job {job_id} already ended ({job.state})")
        try:
            self.client.cancel(job_id)
        except SlurmError as e:
            if "permission denied" not in str(e).lower():
                raise
            me = (by or current_identity()).name
            raise PermissionDenied(f"cancel job {job_id}: permission denied: it belongs to {job.user}, you are {me} "
                                   "(Slurm lets only its owner or a Slurm operator cancel it)") from None
        return "CANCELLED" if job.state == "PENDING" else "CANCELLING"

    def events(self, job_id: int | None = None) -> list[dict]:
        return [] if self.store is None else self.store.events(job_id)


def _slurm_dependency(after_ok: tuple[int, ...], after_any: tuple[int, ...]) -> str | None:
    parts = []
    if after_ok:
        parts.append("afterok:" + ":".join(map(str, after_ok)))
    if after_any:
        parts.append("afterany:" + ":".join(map(str, after_any)))
    return ",".join(parts) or None


def _max_leaves(comment: str) -> int | None:
    for field in comment.replace("adsched:", "").split(";"):
        key, _, value = field.partition("=")
        if key == "max_leaves" and value.isdigit():
            return int(value)
    return None


def _record(j: SlurmJob, core_reasons: dict | None = None, prolog_failures: dict | None = None) -> JobRecord:
    raw = j.raw
    if j.state == "PENDING" and core_reasons and j.id in core_reasons:  # the core's reason, not "JobHeldUser"
        j.reason = core_reasons[j.id][0]
    elif j.state == "PENDING" and raw.get("state_description"):  # what squeue's %R shows ("launch failed ...")
        j.reason = raw["state_description"]
        if prolog_failures and j.id in prolog_failures:
            j.reason += f": {prolog_failures[j.id]}"
    return JobRecord(
        id=j.id, name=j.name, user=j.user, queue=j.partition, num_nodes=j.num_nodes, gpus_per_node=j.gpus_per_node,
        time_limit=j.time_limit or 0, priority=0, max_leaves=_max_leaves(j.comment),
        command=[raw.get("command") or ""], workdir=raw.get("current_working_directory") or "", env={},
        state=j.state, reason="" if j.reason in ("None", "") else j.reason, submit_time=j.submit_time or 0.0,
        start_time=j.start_time, end_time=j.end_time, exit_code=j.exit_code, nodelist=",".join(j.nodes),
        restart_count=j.restart_count, cancel_requested=False,
        array_id=raw.get("array_job_id") or None, array_index=raw.get("array_task_id") if raw.get("array_job_id") else None,
        # squeue says which nodes, not which GPU indexes on them: those stay unknown (empty).
        allocations=[{"rank": i, "node": n, "gpus": [], "slices": []} for i, n in enumerate(j.nodes)],
    )
