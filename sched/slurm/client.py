"""The one small interface adsched uses to talk to Slurm: its commands and their --json output.

pyslurm has no release matching an installable Slurm, so this wraps `sbatch`, `squeue --json`,
`sinfo --json` and `scancel`, always as argument lists (never a shell string), each with a
timeout. A runner decides where the commands run: this host (`local_runner`) or, in tests,
inside the mini-cluster's controller container. The JSON readers accept both 22.05's
data_parser v0.0.38 shapes and newer ones (numbers wrapped as {"set", "number"}, states as lists).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from typing import Any, Callable

from adsched.errors import AdschedError, InvalidRequest
from adsched.core.hostlist import HostlistError, expand

# (argv, stdin text or None, timeout) -> (exit code, stdout, stderr)
Runner = Callable[[list[str], "str | None", float], tuple[int, str, str]]


class SlurmError(AdschedError):
    pass


def local_runner(argv: list[str], stdin: str | None, timeout: float) -> tuple[int, str, str]:
    try:
        r = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise SlurmError(f"{argv[0]} not found: is the Slurm client installed here?") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{argv[0]} did not answer in {timeout:.0f} s") from None
    return r.returncode, r.stdout, r.stderr


def _num(value: Any) -> int | None:
    """22.05 gives plain numbers; newer parsers give {"set": bool, "infinite": bool, "number": n}."""
    if isinstance(value, dict):
        if value.get("infinite") or not value.get("set", True):
            return None
        value = value.get("number")
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _state(value: Any) -> str:
    if isinstance(value, list):
        return value[0] if value else ""
    return str(value or "")


def _gpus(tres: str | None) -> int:
    """'gres:gpu:8', 'gres/gpu:h100:8', 'gpu:8' -> 8 (0 when no GPU is asked for)."""
    total = 0
    for item in (tres or "").split(","):
        spec = re.sub(r"^gres[:/]", "", item.strip())
        if spec == "gpu" or spec.startswith("gpu:") or spec.startswith("gpu="):
            m = re.search(r"[:=](\d+)$", spec)
            total += int(m.group(1)) if m else 1
    return total


_ARRAY_PARTS_OK = re.compile(r"^\d+_[\d\-,\[\]]+: (No error|Job has already finished)$")


def _job_ref(job_id: int | str) -> str:
    """A job id, or "A_I" (task I of array A), checked: it goes into a command line."""
    ref = str(job_id)
    if not re.fullmatch(r"\d+(?:_\d+)?", ref):
        raise InvalidRequest(f"not a Slurm job id: {ref!r}")
    return ref


def _hosts(value: Any) -> list[str]:
    try:
        return expand(value or "") if isinstance(value, str) else []
    except HostlistError:
        return []


@dataclass
class SlurmJob:
    id: int
    name: str
    user: str
    partition: str
    state: str
    reason: str
    nodes: list[str]
    num_nodes: int
    gpus_per_node: int
    time_limit: int | None  # seconds
    submit_time: float | None
    start_time: float | None
    end_time: float | None
    comment: str
    restart_count: int
    exit_code: int | None
    priority: int | None = None  # 0: held
    dependency: str = ""  # "afterok:12(unfulfilled),afterany:13"; fulfilled ones are dropped by Slurm
    requeue: bool = True  # may be requeued (sbatch --no-requeue: False)
    batch: bool = True  # sbatch (False: srun/salloc allocation, which can only be cancelled)
    required_nodes: list[str] = field(default_factory=list)
    raw: dict = field(repr=False, default_factory=dict)

    @property
    def task(self) -> tuple[int, int] | None:
        """(array id, index) when this record is one task of an array with a record of its own, else None."""
        array_id, index = self.raw.get("array_job_id"), self.raw.get("array_task_id")
        return (array_id, index) if isinstance(array_id, int) and array_id > 0 and isinstance(index, int) else None

    @classmethod
    def from_json(cls, j: dict) -> "SlurmJob":
        try:
            nodes = expand(j.get("nodes") or "")
        except HostlistError:
            nodes = []
        minutes = _num(j.get("time_limit"))
        start = _num(j.get("start_time"))
        state = _state(j.get("job_state"))
        exit_code = j.get("exit_code")
        if isinstance(exit_code, dict):  # newer: {"status": [...], "return_code": {...}}
            exit_code = _num(exit_code.get("return_code"))
        return cls(
            id=int(j["job_id"]),
            name=j.get("name") or "",
            user=j.get("user_name") or str(j.get("user_id", "")),
            partition=j.get("partition") or "",
            state=state,
            reason=j.get("state_reason") or "",
            nodes=nodes,
            num_nodes=_num(j.get("node_count")) or len(nodes) or 1,
            gpus_per_node=_gpus(j.get("tres_per_node")),
            time_limit=None if minutes is None else minutes * 60,
            submit_time=_num(j.get("submit_time")),
            start_time=start if start and state != "PENDING" else None,
            end_time=_num(j.get("end_time")) if state not in ("PENDING", "RUNNING") else None,
            comment=j.get("comment") or "",
            restart_count=_num(j.get("restart_cnt")) or 0,
            exit_code=_num(exit_code),
            priority=_num(j.get("priority")),
            dependency=j.get("dependency") or "",
            requeue=bool(j.get("requeue", True)),
            batch=bool(j.get("batch_flag", True)),
            required_nodes=_hosts(j.get("required_nodes")),
            raw=j,
        )


@dataclass
class SlurmNode:
    name: str
    state: str  # idle, mixed, allocated, down, drained, ...
    reason: str
    gpus: int
    gpus_used: int

    @classmethod
    def from_json(cls, n: dict) -> "SlurmNode":
        state = _state(n.get("state")).lower()
        flags = [str(f).upper() for f in (n.get("state_flags") or [])]
        if "DRAIN" in flags:
            state = "drained" if state in ("idle", "down") else "draining"
        return cls(name=n.get("name") or n.get("hostname") or "", state=state, reason=n.get("reason") or "",
                   gpus=_gpus(n.get("gres")), gpus_used=_gpus(re.sub(r"\(IDX:[^)]*\)", "", n.get("gres_used") or "")))


@dataclass(frozen=True)
class SubmitSpec:
    """What `adsub submit` asks of Slurm; becomes sbatch's argument list and batch script."""

    command: list[str]
    nodes: int
    gpus_per_node: int
    partition: str
    time_minutes: int | None = None
    name: str | None = None
    max_leaves: int | None = None
    max_leaves_wait: int | None = None  # seconds
    workdir: str | None = None
    array: str | None = None  # "0-999%50", as sbatch --array takes it
    dependency: str | None = None  # "afterok:1:2,afterany:3"
    no_requeue: bool = False
    # The queue's grace period when it is preemptible: a preempted job's shell stays that long after its
    # ranks stopped, so that it is requeued whole (by Slurm or the controller), not ended FAILED/COMPLETED.
    preempt_grace: int | None = None

    def sbatch_args(self) -> list[str]:
        args = ["sbatch", "--parsable", "-p", self.partition, "-N", str(self.nodes),
                f"--gres=gpu:{self.gpus_per_node}", "--ntasks-per-node=1"]
        if self.time_minutes is not None:
            args += ["-t", str(self.time_minutes)]
        if self.name:
            args += ["-J", self.name]
        if self.workdir:
            args += ["-D", self.workdir]
        if self.array:
            args += [f"--array={self.array}"]
        if self.dependency:
            args += [f"--dependency={self.dependency}"]
        if self.no_requeue:
            args += ["--no-requeue"]
        if self.max_leaves is not None:  # job_submit.lua turns this into --switches=N@wait
            wait = f";wait={self.max_leaves_wait}" if self.max_leaves_wait is not None else ""
            args += [f"--comment=adsched:max_leaves={self.max_leaves}{wait}"]
        return args

    def script(self) -> str:
        """One rank per node through srun; a failed rank ends the gang (--kill-on-bad-exit).

        The shell is not srun itself: a preemption's SIGTERM to the batch shell only marks the job
        preempted (the ranks get the signal as steps), and the shell then waits out the grace period so
        that the job is requeued whole instead of ending with the ranks' exit code (issue 16)."""
        rank_env = ('export NODE_RANK="$SLURM_NODEID" NNODES="$SLURM_JOB_NUM_NODES" '
                    'ADSCHED_NODE_RANK="$SLURM_NODEID" ADSCHED_NODENAME="$SLURMD_NODENAME"; exec "$@"')
        linger = []
        if self.preempt_grace is not None:
            linger = [f'if [ "$preempted" = 1 ]; then sleep {int(self.preempt_grace) + 10} & wait $!; fi']
        return "\n".join([
            "#!/bin/sh",
            "# Generated by adsub: one rank per node, launcher variables, gang semantics.",
            'export ADSCHED_JOB_ID="$SLURM_JOB_ID" ADSCHED_NNODES="$SLURM_JOB_NUM_NODES"',
            f'export WORLD_SIZE="$((SLURM_JOB_NUM_NODES * {self.gpus_per_node}))" LOCAL_WORLD_SIZE={self.gpus_per_node}',
            'export MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"',
            'export MASTER_PORT="$((20000 + SLURM_JOB_ID % 20000))"',
            "preempted=0",
            "trap 'preempted=1' TERM",
            f"srun --kill-on-bad-exit=1 --ntasks-per-node=1 -- sh -c {shlex.quote(rank_env)} adsched-rank "
            + shlex.join(self.command) + " &",
            "step=$!",
            "rc=0",
            'while kill -0 "$step" 2>/dev/null; do wait "$step"; rc=$?; done  # a trapped TERM interrupts wait',
            *linger,
            'exit "$rc"',
            "",
        ])


class SlurmClient:
    def __init__(self, runner: Runner = local_runner, timeout: float = 30.0):
        self.runner = runner
        self.timeout = timeout

    def _run(self, argv: list[str], stdin: str | None = None) -> str:
        rc, out, err = self.runner(argv, stdin, self.timeout)
        if rc != 0:
            message = (err or out).strip().splitlines()
            ours = [m for m in message if "adsched: " in m]  # job_submit.lua's reason, before Slurm's summary
            raise SlurmError(f"{argv[0]}: {(ours or message)[-1] if message else f'exit {rc}'}")
        return out

    def _json(self, argv: list[str]) -> dict:
        out = self._run(argv)
        try:
            data = json.loads(out)
        except json.JSONDecodeError as e:
            raise SlurmError(f"{argv[0]} --json gave no JSON: {e}") from None
        errors = [e for e in data.get("errors", []) if e]
        if errors:
            raise SlurmError(f"{argv[0]}: {errors[0]}")
        return data

    def submit(self, spec: SubmitSpec) -> int:
        if not spec.command:
            raise InvalidRequest("no command given (put it after `--`)")
        out = self._run(spec.sbatch_args(), stdin=spec.script()).strip()
        job_id = out.split(";")[0]
        if not job_id.isdigit():
            raise SlurmError(f"sbatch answered {out[:80]!r}, not a job id")
        return int(job_id)

    def jobs(self) -> list[SlurmJob]:
        return [SlurmJob.from_json(j) for j in self._json(["squeue", "--all", "--json"]).get("jobs", [])]

    def job(self, job_id: int) -> SlurmJob | None:
        for j in self.jobs():
            if j.id == job_id:
                return j
        return None

    def nodes(self) -> list[SlurmNode]:
        return [SlurmNode.from_json(n) for n in self._json(["sinfo", "--json"]).get("nodes", [])]

    def cancel(self, job_id: int | str) -> None:
        self._run(["scancel", _job_ref(job_id)])

    # --- what the controller sends (as root; each one safe to repeat) ---------------------------

    def pin(self, job_id: int | str, nodes: list[str], all_nodes: list[str], start_now: bool = False,
            node_count: bool = True) -> None:
        """Pin a pending job on exactly `nodes`: as many names as NumNodes, every other node excluded.
        `job_id` "A_I" names task I of a pending array A: Slurm splits it off with its own job id (still held).
        Array tasks take no NumNodes (Slurm 22.05: "Job resizing not supported for job arrays"; an array's
        node count is fixed at submit, so the required names alone make it exact)."""
        others = [n for n in all_nodes if n not in set(nodes)]
        argv = ["scontrol", "update", f"JobId={_job_ref(job_id)}", f"NumNodes={len(nodes)}-{len(nodes)}",
                f"ReqNodeList={','.join(nodes)}", f"ExcNodeList={','.join(others)}"]
        if not node_count:
            del argv[3]
        if not others:
            argv[-1] = "ExcNodeList="
        if start_now:  # a requeued job's BeginTime is now + 121 s: override it
            argv.append("StartTime=now")
        self._run(argv)

    def drain(self, node: str, reason: str) -> None:
        self._run(["scontrol", "update", f"NodeName={node}", "State=DRAIN", f"Reason={reason}"])

    def release(self, job_id: int | str) -> None:
        self._run(["scontrol", "release", _job_ref(job_id)])

    def hold(self, job_id: int | str) -> None:
        """An admin hold (only root may release it)."""
        self._run(["scontrol", "hold", _job_ref(job_id)])

    def signal(self, job_id: int | str, signal_name: str) -> None:
        """The signal to the batch shell, its children and every step."""
        self._run(["scancel", f"--signal={signal_name}", "--full", _job_ref(job_id)])

    def set_admin_comments(self, texts: dict[int, str]) -> list[str]:
        """Set many jobs' AdminComment with one scontrol, which reads `update JobId=N AdminComment="..."` lines
        from stdin and carries on past a failed one. The error lines ([] when every update took)."""
        if not texts:
            return []
        lines = []
        for job_id, text in texts.items():
            if '"' in text or "\n" in text:
                raise InvalidRequest(f"an AdminComment may not hold a double quote or newline: {text!r}")
            lines.append(f'update JobId={_job_ref(job_id)} AdminComment="{text}"\n')
        rc, _, err = self.runner(["scontrol"], "".join(lines), self.timeout)
        if rc == 0:
            return []
        # An array's id updates each of its records; its ended tasks refuse ("12_0: Job has already finished")
        # while its pending record takes the update ("12_1-3: No error"): not failures.
        said = [line.strip() for line in err.splitlines() if line.strip()]
        if not said:
            return [f"scontrol: exit {rc}"]
        return [line for line in said if not _ARRAY_PARTS_OK.match(line)]

    def requeue_hold(self, job_id: int | str) -> None:
        self._run(["scontrol", "requeuehold", _job_ref(job_id)])
