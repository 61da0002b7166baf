"""Job specs written down: a job TOML file (`adsub submit job.toml`) and a bulk file of one spec a
line (`adsub submit --file jobs.jsonl`), each line a JSON object or a TOML inline table:

    {"command": ["python", "sweep.py", "--lr", "0.1"], "queue": "debug", "gpus": 1, "time": "30:00"}
    {command = "python sweep.py --lr 0.2", queue = "debug", gpus = 1}

Both take the keys of JOB_FILE_KEYS and become JobRequests through `request`, the same path the
flags of `adsub submit` take, so a spec in a file is checked exactly as one typed on the line.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

from .errors import InvalidRequest
from .jobspec import JobRequest

JOB_FILE_KEYS = frozenset({"command", "nodes", "gpus_per_node", "gpus", "queue", "time", "name", "priority",
                           "max_leaves", "workdir", "env", "array", "dependency", "signal", "no_requeue"})


_INT = ("nodes", "gpus_per_node", "priority", "max_leaves")
_STR = ("queue", "name", "workdir", "array", "dependency", "signal")


def check_keys(spec: dict, where: str) -> dict:
    """Known keys with values of the right type (a wrong one is named, never a traceback later)."""
    unknown = sorted(set(spec) - JOB_FILE_KEYS)
    if unknown:
        raise InvalidRequest(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(JOB_FILE_KEYS))})")
    command = spec.get("command")
    if isinstance(command, str):
        try:
            spec["command"] = command = shlex.split(command)
        except ValueError as e:  # an unclosed quote
            raise InvalidRequest(f"{where}: command: {e}") from None
    if command is not None and not (isinstance(command, list) and all(isinstance(c, str) for c in command)):
        raise InvalidRequest(f"{where}: command must be a string or a list of strings")
    for key, value in spec.items():
        if key in _INT and (not isinstance(value, int) or isinstance(value, bool)):
            raise InvalidRequest(f"{where}: {key} must be an integer, got {value!r}")
        if key in _STR and not isinstance(value, str):
            raise InvalidRequest(f"{where}: {key} must be a string, got {value!r}")
    if isinstance(spec.get("time"), int) and not isinstance(spec["time"], bool):
        spec["time"] = str(spec["time"])  # minutes, as sbatch -t 30
    if "time" in spec and not isinstance(spec["time"], str):
        raise InvalidRequest(f"{where}: time must be a string like 30:00 or minutes, got {spec['time']!r}")
    if "gpus" in spec and (isinstance(spec["gpus"], bool) or not isinstance(spec["gpus"], (int, str))):
        raise InvalidRequest(f"{where}: gpus must be a count or a MIG profile like 1g.10gb:2")
    env = spec.get("env")
    if env is not None and not (isinstance(env, dict) and all(isinstance(v, str) for v in env.values())):
        raise InvalidRequest(f"{where}: env must be a table of strings")
    if "no_requeue" in spec and not isinstance(spec["no_requeue"], bool):
        raise InvalidRequest(f"{where}: no_requeue must be true or false")
    return spec


def load_job_file(path: str) -> dict:
    """A job TOML file as a spec dict (command split like a shell would)."""
    from adsched.core.config import toml_module

    tomllib = toml_module()
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as e:
        raise InvalidRequest(f"{path}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError:
        raise InvalidRequest(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise InvalidRequest(f"{path}: malformed TOML: {e}") from None
    return check_keys(data, path)


def read_spec_lines(path: str) -> list[dict]:
    """Every spec of a bulk file; blank lines and lines starting with # are skipped."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise InvalidRequest(f"{path}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError:
        raise InvalidRequest(f"{path}: not UTF-8 text") from None
    except ValueError:  # a NUL in the name
        raise InvalidRequest(f"{path!r}: not a file name") from None
    specs = []
    loads = json.loads
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            spec = loads(line)
        except ValueError:
            spec = _toml_inline_table(line, f"{path}:{n}")
        if not isinstance(spec, dict):
            raise InvalidRequest(f"{path}:{n}: not a JSON object or TOML inline table")
        specs.append(check_keys(spec, f"{path}:{n}"))
    if not specs:
        raise InvalidRequest(f"{path}: no job specs (one JSON object or TOML inline table a line)")
    return specs


def _toml_inline_table(line: str, where: str) -> dict:
    from adsched.core.config import toml_module

    tomllib = toml_module()
    try:
        return tomllib.loads("spec = " + line)["spec"]
    except tomllib.TOMLDecodeError:
        raise InvalidRequest(f"{where}: not a JSON object or TOML inline table") from None


def request(spec: dict, command: list[str], user: str, cwd: str | None = None) -> JobRequest:
    """A spec dict (from a file, with the flags merged in) and a command -> JobRequest.

    A relative workdir is taken from `cwd` (default: this process's; a bulk file passes it once)."""
    spec = dict(spec)
    gpus = spec.get("gpus")
    if isinstance(gpus, str):  # --gpus 2 or --gpus 1g.10gb:2
        if gpus.strip().lstrip("-").isdecimal():
            spec["gpus"] = int(gpus)
        else:
            spec["mig"] = spec.pop("gpus")
    spec.setdefault("nodes", 1)
    spec.setdefault("priority", 0)
    cwd = cwd or os.getcwd()
    spec["workdir"] = os.path.normpath(os.path.join(cwd, spec["workdir"])) if "workdir" in spec else cwd
    try:
        return JobRequest(command=command, user=user, **spec)
    except TypeError as e:  # a key JobRequest does not take: a bug in JOB_FILE_KEYS, say which
        raise InvalidRequest(f"bad job spec: {e}") from None
