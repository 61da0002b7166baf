"""Hostile input stays data (issue 12): job specs with shell metacharacters, newlines, NUL bytes,
non-UTF-8 text and very long strings, through `adsub submit` flags, a job TOML file and the
daemon's socket. Each is either stored exactly as given or refused with one line and exit 2,
writing nothing; tables keep one line per job; and what runs is exactly the command given.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adsched.cli import adsub as adsub_cli
from adsched.standalone.daemon import Daemon
from adsched.standalone.executors.local import LocalExecutor
from adsched.standalone.executors.ssh import SSHExecutor
from adsched.standalone.remote import socket_path
from adsched.standalone.server import MAX_PER_USER, SocketServer
from adsched.standalone.store import JobRequest, Store

from test_e2e_local import SMALL
from test_ssh_executor import sshd  # noqa: F401  (a real sshd on loopback)

CANARY = os.path.join(tempfile.gettempdir(), "adsched-hostile-canary")
NASTY = [
    f"$(touch {CANARY})", f"`touch {CANARY}`", f"; touch {CANARY}", f"' ; touch {CANARY} ; '", f'" ; touch {CANARY}"',
    "a\nb", "\r", "\t", "\x1b[2J\x1b[31mred", "\x00", "a\x00b", "\udcff", "\ud800", "x" * 140_000, "é" * 300,
    "--", "-rf", "*", "~root", "$HOME", "${IFS}", "\\", "", " ", "\u202eevil", "0-3", "afterok:1", "USR1@5",
    "99999999999999999999999", "²", "١٢", "%", "[", "]",
]
non_utf8 = st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF, categories=["Cs"])  # argv's undecodable bytes
hostile = st.one_of(st.sampled_from(NASTY), st.text(st.characters(codec=None, exclude_categories=()), max_size=12),
                    st.text(st.characters(codec=None, exclude_categories=()) | non_utf8, max_size=6))
maybe = st.one_of(st.none(), hostile)


def _db_state(state: str) -> tuple[int, int]:
    store = Store(state)
    return len(store.jobs()), len(store.events())


@pytest.fixture(scope="module")
def state():
    d = tempfile.mkdtemp(prefix="adsched-input-")
    Store.init(os.path.join(d, "state"), SMALL.replace("[queues.work]", "[queues.work]\nmax_time = \"1:00:00\""))
    yield os.path.join(d, "state")
    shutil.rmtree(d, ignore_errors=True)


def _check_outcome(state: str, r, before: tuple[int, int]) -> dict | None:
    """One line and exit 2 with nothing written, or exit 0 and the job; never a traceback."""
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output
    if r.exit_code != 0:
        assert r.exit_code in (1, 2), r.output
        assert r.output.startswith("Error: ") and r.output.endswith("\n") and r.output[:-1].isprintable(), r.output
        assert _db_state(state) == before  # nothing written for a refused request
        return None
    return json.loads(r.output)


def _check_listings(state: str, job_id: int) -> None:
    runner = CliRunner()
    r = runner.invoke(adsub_cli.main, ["queue", "--state", state])
    lines = r.output.splitlines()
    assert r.exit_code == 0 and all(line.isprintable() for line in lines)
    r = runner.invoke(adsub_cli.main, ["show", "--state", state, str(job_id)])
    assert r.exit_code == 0 and all(line.isprintable() for line in r.output.splitlines())


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=maybe, command=st.lists(hostile, min_size=1, max_size=3), workdir=maybe, array=maybe, queue=maybe,
       time_limit=maybe, dependency=maybe, signal=maybe)
def test_hostile_flags(state, name, command, workdir, array, queue, time_limit, dependency, signal):
    flags = []
    for opt, value in (("--job-name", name), ("--chdir", workdir), ("--array", array), ("--queue", queue),
                       ("--time", time_limit), ("--dependency", dependency), ("--signal", signal)):
        if value is not None:
            flags.append(f"{opt}={value}")
    before = _db_state(state)
    r = CliRunner().invoke(adsub_cli.main, ["submit", "--state", state, "--json", *flags, "--", *command])
    out = _check_outcome(state, r, before)
    if out is None:
        return
    job = Store(state).job(out["job_id"])
    assert job.command == command  # exactly the arguments given, none split, joined or expanded
    assert job.workdir == os.path.abspath(workdir if workdir is not None else ".")
    if name:  # an empty name means the default (the command's name)
        assert job.name == name
    _check_listings(state, job.id)


def _toml_value(value) -> str:
    if isinstance(value, str):  # a TOML basic string: every character escaped as \uXXXX or \UXXXXXXXX
        return '"' + "".join(f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}" for c in value) + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{_toml_value(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"


toml_text = st.text(st.characters(codec="utf-8"), max_size=12) | st.sampled_from(
    [n for n in NASTY if not any(0xD800 <= ord(c) < 0xE000 for c in n)])
toml_values = st.one_of(toml_text, st.integers(-2**70, 2**70), st.booleans(), st.lists(toml_text, max_size=3),
                        st.dictionaries(toml_text, toml_text, max_size=2))
job_files = st.fixed_dictionaries(
    {"command": st.one_of(toml_text, st.lists(toml_text, min_size=1, max_size=3), toml_values)},
    optional={k: toml_values for k in ("name", "workdir", "queue", "time", "array", "nodes", "priority", "gpus",
                                       "dependency", "signal", "no_requeue", "max_leaves")}
    | {"env": st.dictionaries(toml_text, toml_text, max_size=3) | toml_values},
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=job_files, garbage=st.sampled_from([b"", b"\xff\xfe", b"\x00", b"\nname = 1\nname = 2\n", b"[["]))
def test_hostile_job_files(state, spec, garbage):
    text = "".join(f"{_toml_value(k)} = {_toml_value(v)}\n" for k, v in spec.items())
    d = tempfile.mkdtemp(prefix="adsched-jobfile-")
    try:
        path = os.path.join(d, "job.toml")
        with open(path, "wb") as f:
            f.write(text.encode() + garbage)
        before = _db_state(state)
        r = CliRunner().invoke(adsub_cli.main, ["submit", "--state", state, "--json", "--", path])
        out = _check_outcome(state, r, before)
        if out is None:
            return
        job = Store(state).job(out["job_id"])
        want = spec["command"] if isinstance(spec["command"], list) else __import__("shlex").split(spec["command"])
        assert job.command == want
        assert {k: v for k, v in job.env.items() if k != "ADSCHED_ARRAY_TASK_ID"} == spec.get("env", {})
        _check_listings(state, job.id)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _raw_call(path: str, payload: bytes) -> dict:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(path)
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        return json.loads(b"".join(iter(lambda: s.recv(65536), b"")))


SOCKET_CASES = [
    dict(payload=b"", want="malformed request (not JSON)"),
    dict(payload=b"\xff\xfe{", want="malformed request (not JSON)"),
    dict(payload=b"[1, 2]", want="malformed request (not {op, args})"),
    dict(payload=b'{"op": "rm -rf /"}', want="unknown operation 'rm -rf /'"),
    dict(payload=b'{"op": "job", "args": {"job_id": "1; DROP TABLE jobs"}}', want="job_id: must be a job number"),
    dict(payload=b'{"op": "job", "args": {"job_id": 1e400}}', want="job_id: must be a job number"),
    dict(payload=b'{"op": "submit", "args": {"request": {"command": ["true"], "workdir": "relative"}}}',
         want="workdir: must be an absolute path"),
    dict(payload=b'{"op": "submit", "args": {"request": {"command": "true", "workdir": "/"}}}',
         want="command: must be a list of arguments"),
    dict(payload=b'{"op": "submit", "args": {"request": {"command": ["a\\u0000b"], "workdir": "/"}}}',
         want="command argument 1: contains a NUL byte"),
    dict(payload=b'{"op": "submit", "args": {"request": {"command": ["\\udcff"], "workdir": "/"}}}',
         want="command argument 1: is not valid UTF-8"),
    dict(payload=b'{"op": "submit", "args": {"request": {"command": ["x"], "workdir": "/", "env": {"A=B": "1"}}}}',
         want="env: 'A=B' is not a variable name"),
    dict(payload=b'{"op": "submit", "args": {"request": {"command": ["x"], "workdir": "/", "nodes": 1e9}}}',
         want="nodes: must be an integer"),
    dict(payload=b'{"op": "submit", "args": {"request": {"command": ["x"], "workdir": "/", "evil": 1}}}',
         want="request: unknown field(s) evil"),
]


@pytest.mark.parametrize("case", SOCKET_CASES, ids=lambda c: c["want"][:30])
def test_hostile_socket_requests(state, case):
    server = SocketServer(state)
    server.start()
    try:
        before = _db_state(state)
        answer = _raw_call(socket_path(state), case["payload"])
        assert answer["error"]["message"].startswith(case["want"]), answer
        assert answer["error"]["exit_code"] == 2
        assert _db_state(state) == before
        # The daemon keeps serving, and the user a request names is never believed.
        ok = _raw_call(socket_path(state), json.dumps(
            {"op": "submit", "args": {"request": {"command": ["true"], "workdir": "/", "user": "mallory"}}}).encode())
        assert Store(state).job(ok["ok"]).user != "mallory"
    finally:
        server.close()


HOSTILE_ARG = f"$(touch {CANARY}); `touch {CANARY}`; ' \" \\ \n;touch {CANARY} *"
PROBE = ["sh", "-c", 'printf "%s|" "$HOSTILE" "$1" "$(pwd)"', "sh", HOSTILE_ARG]


def _hostile_workdir(base: str) -> str:
    d = os.path.join(base, f"w'$(touch {CANARY})`x`;\n*")
    os.makedirs(d)
    return d


@pytest.mark.parametrize("where", ["local", "ssh"])
def test_what_runs_is_exactly_the_command_given(tmp_path, where, request):
    if os.path.exists(CANARY):
        os.remove(CANARY)
    store = Store.init(tmp_path / "state", SMALL)
    workdir = _hostile_workdir(str(tmp_path))
    job_id = store.submit(JobRequest(PROBE, env={"HOSTILE": HOSTILE_ARG}, workdir=workdir,
                                     name=f"$(touch {CANARY})"), time.time())
    if where == "ssh":
        settings_ = request.getfixturevalue("sshd")
        executor = SSHExecutor(store.state_dir, {n.name: "127.0.0.1" for n in store.config.nodes}, settings_)
    else:
        executor = LocalExecutor(store.state_dir)
    Daemon(store, executor).run(until_idle=True, max_seconds=60)
    job = store.job(job_id)
    assert job.state == "COMPLETED", job.reason
    out = (tmp_path / "state" / "jobs" / str(job_id) / "rank-0.out").read_text()
    assert out == f"{HOSTILE_ARG}|{HOSTILE_ARG}|{workdir}|"
    assert not os.path.exists(CANARY)


OTHER_COMMANDS = [
    dict(args=["show", "99999999999999999999999"], want_exit=1, want="Error: no job 99999999999999999999999"),
    dict(args=["cancel", "1_[0-99999999999]"], want_exit=2, want="more than 10000 tasks"),
    dict(args=["cancel", "99999999999999999999999"], want_exit=2, want="no such job id (too large)"),
    dict(args=["cancel", "1_²"], want_exit=2, want="is not a job id"),
    dict(args=["submit", "-d", "afterok:99999999999999999999999", "--", "true"], want_exit=2, want="is not a job id"),
    dict(args=["submit", "-a", "0-99999", "--", "true"], want_exit=2, want="more than 10000 tasks"),
    dict(args=["submit", "-a", "99999999999999999999", "--", "true"], want_exit=2, want="is above 4000000"),
    dict(args=["submit", "--signal", "USR1@²", "--", "true"], want_exit=2, want="is not a number of seconds"),
    dict(args=["submit", "--priority", "99999999999999999999", "--", "true"], want_exit=2, want="out of range"),
    dict(args=["submit", "--file", "a\x00b"], want_exit=2, want="not a file name"),
    dict(args=["submit", "-D", "a\x00b", "--", "true"], want_exit=2, want="workdir: contains a NUL byte"),
]


@pytest.mark.parametrize("case", OTHER_COMMANDS, ids=lambda c: " ".join(c["args"])[:40])
def test_hostile_numbers_and_names_elsewhere(state, case):
    before = _db_state(state)
    args = [case["args"][0], "--state", state, *case["args"][1:]]
    r = CliRunner().invoke(adsub_cli.main, args)
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert r.exit_code == case["want_exit"] and r.output.count("\n") == 1 and case["want"] in r.output, r.output
    assert _db_state(state) == before


def test_idle_connections_of_one_user_do_not_block_the_daemon(state):
    server = SocketServer(state)
    server.start()
    idle = []
    try:
        for _ in range(MAX_PER_USER):  # connected, never sending: each holds a slot until IDLE_TIMEOUT
            s = socket.socket(socket.AF_UNIX)
            s.connect(socket_path(state))
            idle.append(s)
        time.sleep(0.2)
        answer = _raw_call(socket_path(state), b'{"op": "nodes"}')
        assert answer["error"]["message"] == f"too many requests at once from uid {os.getuid()} (at most 8); try again"
        for s in idle:
            s.shutdown(socket.SHUT_WR)  # an empty request: answered, slot freed
            s.recv(65536)
        assert "ok" in _raw_call(socket_path(state), b'{"op": "nodes"}')
    finally:
        for s in idle:
            s.close()
        server.close()


runnable = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=10) | st.sampled_from(
    [n for n in NASTY if "\x00" not in n and not any(0xD800 <= ord(c) < 0xE000 for c in n) and len(n) < 1000])


@pytest.mark.parametrize("where", ["local", "ssh"])
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(args=st.lists(runnable, max_size=4), value=runnable)
def test_any_arguments_and_env_run_exactly_as_given(tmp_path_factory, request, where, args, value):
    if os.path.exists(CANARY):
        os.remove(CANARY)
    d = tmp_path_factory.mktemp("run")
    store = Store.init(d, SMALL)
    probe = ["sh", "-c", 'for a in "$@"; do printf "%s\\0" "$a"; done; printf "%s" "$HOSTILE"', "sh", *args]
    job_id = store.submit(JobRequest(probe, env={"HOSTILE": value}, workdir=str(d)), time.time())
    if where == "ssh":
        executor = SSHExecutor(d, {n.name: "127.0.0.1" for n in store.config.nodes}, request.getfixturevalue("sshd"))
    else:
        executor = LocalExecutor(d)
    Daemon(store, executor).run(until_idle=True, max_seconds=30)
    assert store.job(job_id).state == "COMPLETED", store.job(job_id).reason
    out = (d / "jobs" / str(job_id) / "rank-0.out").read_bytes()
    assert out == b"".join(a.encode() + b"\0" for a in args) + value.encode()
    assert not os.path.exists(CANARY)
