"""A real Slurm 22.05 cluster in Docker containers on one machine, driven from Python.

    with MiniCluster("mini8") as mc:      # sched/examples/mini8.toml; up() ... down()
        r = mc.exec("srun -N 8 hostname", timeout=30)
        print(r.rc, r.stdout)

One container per node of the cluster TOML (hostname = node name, fake GPUs /dev/nvidiaN cloned from
/dev/null) plus one for slurmctld, on a labelled user-defined `--internal` network with its own subnet.
Slurm's configuration is rendered by adsched.slurm.render into a per-cluster work dir and mounted
read-only at /etc/slurm; a shared read-write dir is mounted at /jobs in every container.

Engine: the one at DOCKER_HOST / /var/run/docker.sock when it answers; otherwise the driver starts a private
`dockerd --iptables=false --ip-forward=false --bridge=none ...` (it never changes the host's firewall or
forwarding) and stops it - by PID - when the last mini-cluster on it goes down.

Images: a registry-free Slurm base image (docker/build-base.sh; cached as a gzip'd `docker save` keyed on the
script's hash) and a thin image with this project installed (docker/Dockerfile).

State: `up()` writes <state_dir>/<name>.json so that `MiniCluster.attach(name)` (the CLI's down/status/exec)
works from another process.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import gzip
import hashlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from dataclasses import dataclass
from pathlib import Path

from adsched.core.config import ClusterConfig, ConfigError

from adsched.configfile import cluster_file, load_config
from adsched.slurm.render import EXECUTABLE, PluginSettings, render_all, render_plugin_files
from adsched.standalone.store import Store
from adsched.testbed.wheel import ProjectSource, WheelError, project_source

LABEL = "adsched.minicluster"  # value: the instance name
OWNER_LABEL = "adsched.minicluster.owner-pid"  # pid whose exit makes the objects leftovers; "0": persistent
CONTROLLER = "slurmctld"
JOBS_DIR = "/jobs"
NODE_DIR = "/etc/adsched-node"  # per node, read-only: the node's nvidia-smi.xml for the prolog
BASE_REPO = "adsched-slurm-base"
IMAGE_REPO = "adsched-minicluster"
# docker/ ships as package data (sched/testbed/image links to it), so an installed adsched finds it too.
_DOCKER_DIR = Path(str(resources.files("adsched.testbed") / "image"))


class MiniClusterError(RuntimeError):
    """Anything that keeps the mini-cluster from coming up or answering; the message says what and where."""


@dataclass
class ExecResult:
    rc: int
    stdout: str
    stderr: str

    @property
    def timed_out(self) -> bool:
        return self.rc == 124  # timeout(1)'s status

    @property
    def ok(self) -> bool:
        return self.rc == 0


def default_cache_dir() -> Path:
    return Path(os.environ.get("ADSCHED_CACHE_DIR") or Path.home() / ".cache" / "adsched")


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(os.environ.get("ADSCHED_MINICLUSTER_STATE") or Path(base) / "adsched" / "minicluster")


def _docker_sdk():
    """The `docker` SDK, imported on first use so the rest of adsched never needs it."""
    try:
        import docker  # noqa: PLC0415
    except ImportError as e:
        raise MiniClusterError(f"the docker SDK is not installed (pip install 'docker>=7'): {e}") from None
    return docker


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


# --------------------------------------------------------------------------------------------------- engine


class Engine:
    """A Docker engine to talk to; `private` when it is the driver's own dockerd (see module doc)."""

    def __init__(self, run_dir: Path | None = None, data_root: Path | None = None, docker_host: str | None = None):
        # Short paths: containerd puts unix sockets under the exec root (108-byte limit).
        if run_dir is None:
            run_dir = Path("/run/adsched-engine") if os.access("/run", os.W_OK) else \
                Path(tempfile.gettempdir()) / f"adsched-engine-{os.getuid()}"
        self.run_dir = Path(run_dir)
        self.data_root = Path(data_root) if data_root else default_cache_dir() / "engine"
        self.private_host = f"unix://{self.run_dir}/docker.sock"
        self.pidfile = self.run_dir / "dockerd.pid"
        self.log = self.run_dir / "dockerd.log"
        self.explicit_host = docker_host or os.environ.get("DOCKER_HOST")
        self.host: str | None = None
        self.client = None
        self.started = False  # this object started the engine
        self._proc: subprocess.Popen | None = None

    @property
    def private(self) -> bool:
        return self.host == self.private_host

    @contextlib.contextmanager
    def lock(self):
        """Serialises engine start/stop and cluster create/remove between processes."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / "lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _try(self, host: str):
        sdk = _docker_sdk()
        try:
            client = sdk.DockerClient(base_url=host, timeout=120)
            client.ping()
            return client
        except Exception:  # noqa: BLE001 - any failure means "does not answer"
            return None

    def connect(self, start: bool = True):
        """Connect to an answering engine, starting the private one if none answers (and `start`)."""
        if self.client is not None:
            return self.client
        if self.explicit_host:
            self.client = self._try(self.explicit_host)
            if self.client is None:
                raise MiniClusterError(f"no Docker engine answers at {self.explicit_host} (DOCKER_HOST)")
            self.host = self.explicit_host
            return self.client
        for host in ("unix:///var/run/docker.sock", self.private_host):
            if host.startswith("unix://") and not os.path.exists(host[7:]):
                continue
            client = self._try(host)
            if client is not None:
                self.client, self.host = client, host
                return client
        if not start:
            raise MiniClusterError("no Docker engine is running (nothing to talk to)")
        self._start()
        return self.client

    def _start(self) -> None:
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            raise MiniClusterError(
                "no Docker engine answers and dockerd is not installed "
                "(apt-get install -y --no-install-recommends docker.io debootstrap; see .ci/minicluster-setup.sh)")
        if os.geteuid() != 0:
            raise MiniClusterError("no Docker engine answers, and starting one needs root")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.data_root.mkdir(parents=True, exist_ok=True)
        sock = self.private_host[7:]
        with contextlib.suppress(FileNotFoundError):
            os.unlink(sock)
        # Never plain dockerd: it sets the FORWARD policy to DROP, ip_forward=1 and adds a NAT bridge.
        cmd = [dockerd, "--iptables=false", "--ip-forward=false", "--bridge=none", "--log-level=warn",
               f"--pidfile={self.pidfile}", f"--data-root={self.data_root}",
               f"--exec-root={self.run_dir}/exec", f"--host={self.private_host}"]
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                          start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            if os.path.exists(sock):
                client = self._try(self.private_host)
                if client is not None:
                    self.client, self.host, self.started = client, self.private_host, True
                    return
            time.sleep(0.1)
        if self._proc.poll() is None:
            self._proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(15)
        raise MiniClusterError(f"dockerd did not come up; last lines of {self.log}:\n{_tail_file(self.log)}")

    def engine_pid(self) -> int | None:
        """PID of the private dockerd, if it runs (checked to be a dockerd using our pidfile)."""
        try:
            pid = int(self.pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        if not cmdline or not cmdline[0].endswith(b"dockerd") or f"--pidfile={self.pidfile}".encode() not in cmdline:
            return None
        return pid if _pid_alive(pid) else None

    def stop_private(self) -> bool:
        """Stop the private engine by its PID (never by name). True when one was stopped."""
        pid = self.engine_pid()
        if pid is None:
            return False
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.close()
            self.client = None
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.pid == pid:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(0.1)
            else:  # started by another Engine object of this process: reap it, or it stays a zombie
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
            if not _pid_alive(pid):
                return True
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
        if self._proc is not None and self._proc.pid == pid:
            self._proc.wait(10)
        return True


def _tail_file(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _remove_link(name: str) -> None:
    """Delete a network link the engine left behind (only names the driver recorded)."""
    if shutil.which("ip") and Path(f"/sys/class/net/{name}").exists():
        subprocess.run(["ip", "link", "delete", name], capture_output=True, timeout=10, check=False)


# --------------------------------------------------------------------------------------------------- images


def _sha(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "big"))
        h.update(p)
    return h.hexdigest()[:12]


class Images:
    """Builds, caches and loads the two images (see module doc)."""

    def __init__(self, client, cache_dir: Path, log=print):
        self.client = client
        self.cache_dir = Path(cache_dir)
        self.log = log
        self.saving: threading.Thread | None = None  # the cache file being written, if any

    @property
    def base_tag(self) -> str:
        return f"{BASE_REPO}:{_sha((_DOCKER_DIR / 'build-base.sh').read_bytes())}"

    def _exists(self, tag: str) -> bool:
        sdk = _docker_sdk()
        try:
            self.client.images.get(tag)
            return True
        except sdk.errors.ImageNotFound:
            return False

    def ensure_base(self) -> str:
        tag = self.base_tag
        if self._exists(tag):
            return tag
        cache = self.cache_dir / f"{tag.replace(':', '-')}.tar.gz"
        if cache.exists():
            self.log(f"minicluster: loading {tag} from {cache}")
            with open(cache, "rb") as f:
                self.client.api.load_image(f)
            if self._exists(tag):
                return tag
            self.log(f"minicluster: {cache} did not hold {tag}; rebuilding")
        self.log(f"minicluster: building {tag} with debootstrap (about a minute)")
        env = dict(os.environ, DOCKER_HOST=self._host(), DEB_CACHE_DIR=str(self.cache_dir / "debs"))
        tail: collections.deque[str] = collections.deque(maxlen=30)
        with subprocess.Popen(["bash", str(_DOCKER_DIR / "build-base.sh"), tag], env=env, text=True,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as proc:
            for line in proc.stderr:
                tail.append(line.rstrip())
                if line.startswith("build-base.sh:"):
                    self.log(f"minicluster: {line.rstrip()}")
        if proc.returncode != 0 or not self._exists(tag):
            raise MiniClusterError(f"building the Slurm base image failed (rc {proc.returncode}):\n"
                                   + "\n".join(tail))
        # Written while the cluster comes up; MiniCluster.down() waits for it before it may stop the engine.
        self.saving = threading.Thread(target=self._save, args=(tag, cache), name="adsched-image-cache", daemon=True)
        self.saving.start()
        return tag

    def _host(self) -> str:
        return self.client._adsched_host  # set by MiniCluster when it makes the client

    def _save(self, tag: str, cache: Path) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) as gz:
                for chunk in self.client.images.get(tag).save(named=True):
                    gz.write(chunk)
        except Exception as e:  # noqa: BLE001 - a cache that is not written costs the next run a rebuild only
            tmp.unlink(missing_ok=True)
            self.log(f"minicluster: could not cache {tag}: {e}")
            return
        os.replace(tmp, cache)
        for old in self.cache_dir.glob(f"{BASE_REPO}-*.tar.gz"):
            if old != cache:
                old.unlink(missing_ok=True)
        self.log(f"minicluster: cached {tag} in {cache}")

    def _wheels(self, source: ProjectSource, dest: Path) -> None:
        """The project's wheel and its dependencies' wheels (cached) into dest."""
        deps = source.dependencies()
        dep_dir = self.cache_dir / "wheels" / _sha(*(d.encode() for d in deps), sys.version.encode())
        pip = [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check"]
        if not dep_dir.is_dir():
            tmp = Path(tempfile.mkdtemp(dir=self.cache_dir))
            r = subprocess.run([*pip, "-w", str(tmp), *deps], capture_output=True, text=True, timeout=600,
                               check=False)
            if r.returncode != 0:
                shutil.rmtree(tmp, ignore_errors=True)
                raise MiniClusterError(f"pip wheel {' '.join(deps)} failed:\n{r.stderr[-2000:]}")
            dep_dir.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, dep_dir)
        for whl in dep_dir.glob("*.whl"):
            shutil.copy(whl, dest)
        try:
            source.build_wheel(dest, pip)
        except WheelError as e:
            raise MiniClusterError(str(e)) from None

    def ensure_image(self) -> str:
        base = self.ensure_base()
        try:  # the adsched running this: its source tree, or the installed distribution (wheel.py)
            source = project_source()
        except WheelError as e:
            raise MiniClusterError(str(e)) from None
        files = {n: (_DOCKER_DIR / n).read_bytes() for n in ("Dockerfile", "entrypoint.sh")}
        tag = f"{IMAGE_REPO}:{_sha(base.encode(), *files.values(), source.fingerprint().encode())}"
        if self._exists(tag):
            return tag
        self.log(f"minicluster: building {tag}")
        with tempfile.TemporaryDirectory(prefix="adsched-image-") as ctx:
            (Path(ctx) / "wheels").mkdir()
            self._wheels(source, Path(ctx) / "wheels")
            for name, data in files.items():
                (Path(ctx) / name).write_bytes(data)
            os.chmod(Path(ctx) / "entrypoint.sh", 0o755)
            sdk = _docker_sdk()
            try:
                self.client.images.build(path=ctx, tag=tag, buildargs={"BASE": base}, rm=True, forcerm=True,
                                         labels={LABEL: "image"})
            except sdk.errors.BuildError as e:
                out = "".join(str(x.get("stream", x.get("error", ""))) for x in e.build_log)
                raise MiniClusterError(f"building {tag} failed: {e.msg}\n{out[-2000:]}") from None
        self.client.images.get(tag).tag(IMAGE_REPO, "latest")  # what docker/compose.yml runs
        keep = {tag, f"{IMAGE_REPO}:latest", base}
        for repo in (IMAGE_REPO, BASE_REPO):  # older builds (those still used by a container stay)
            for img in self.client.images.list(name=repo):
                for t in img.tags:
                    if t not in keep:
                        with contextlib.suppress(Exception):
                            self.client.images.remove(t, noprune=False)
        return tag


# --------------------------------------------------------------------------------------------------- cluster


class MiniCluster:
    """A Slurm cluster of containers for the nodes of `config_path` (see module doc)."""

    def __init__(
        self,
        config_path: str | os.PathLike,
        name: str | None = None,
        *,
        state_dir: str | os.PathLike | None = None,
        cache_dir: str | os.PathLike | None = None,
        subnet: str | None = None,
        node_timeout: float = 60.0,
        persistent: bool = False,
        engine: Engine | None = None,
        log=None,
        nvidia_smi_xml: str | None = None,
        controller_mode: bool = False,
    ):
        self.config_path = cluster_file(config_path).resolve()  # a path, or a shipped example's name
        try:
            self.config: ClusterConfig = load_config(self.config_path)
        except ConfigError as e:
            raise MiniClusterError(str(e)) from None
        self.name = name or f"adsched-{self.config.name}".lower().replace("_", "-")
        self.state_dir = Path(state_dir) if state_dir else default_state_dir()
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.workdir = self.state_dir / self.name
        self.subnet = subnet
        self.node_timeout = node_timeout
        self.owner_pid = 0 if persistent else os.getpid()
        self.engine = engine or Engine()
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        self.network_id: str | None = None
        self.addrs: dict[str, str] = {}
        self.image: str | None = None
        self.timings: dict[str, float] = {}
        self._images: Images | None = None
        # The adsched plugin: each node's prolog reads NODE_DIR/nvidia-smi.xml (its own, so a test can
        # break one node's GPUs); without XML the GPU check is off (containers have no GPUs to ask).
        self.nvidia_smi_xml = nvidia_smi_xml
        # Controller mode: job_submit.lua holds every job; `adsched slurm controller` (start_controller) decides.
        self.controller_mode = controller_mode

    # -- names
    @property
    def nodes(self) -> list[str]:
        return [n.name for n in self.config.nodes]

    def container_name(self, member: str) -> str:
        return f"{self.name}-{member}"

    def leaf_of(self, node: str) -> str:
        return self.config.node(node).leaf

    @property
    def jobs_dir(self) -> Path:
        """Host side of the shared /jobs dir."""
        return self.workdir / "jobs"

    @property
    def state_file(self) -> Path:
        return self.state_dir / f"{self.name}.json"

    # -- lifecycle
    def __enter__(self) -> MiniCluster:
        self.up()
        return self

    def __exit__(self, *exc) -> None:
        self.down()

    def _client(self, start: bool = True):
        client = self.engine.connect(start=start)
        client._adsched_host = self.engine.host
        return client

    def up(self) -> MiniCluster:
        """Start the cluster and wait until every node is idle; on any failure everything is torn down."""
        if CONTROLLER in self.nodes:
            raise MiniClusterError(f"a node may not be called {CONTROLLER!r} (the controller's hostname)")
        t0 = time.monotonic()
        try:
            with self.engine.lock():
                client = self._client()
                self.timings["engine"] = time.monotonic() - t0
                self._remove_leftovers(client)
                self._images = Images(client, self.cache_dir, self.log)
                self.image = self._images.ensure_image()
                self.timings["image"] = time.monotonic() - t0
                self._write_files()
                self._create(client)
            self._save_state()
            self.timings["containers"] = time.monotonic() - t0
            self.wait_idle(self.node_timeout)
            self.timings["up"] = time.monotonic() - t0
        except BaseException:
            self.down()
            raise
        return self

    def _labels(self) -> dict[str, str]:
        return {LABEL: self.name, OWNER_LABEL: str(self.owner_pid)}

    def _remove_leftovers(self, client) -> None:
        """Objects of this instance, and of any instance whose owner process is gone (a crashed run)."""
        stale = {self.name}
        for c in client.containers.list(all=True, filters={"label": LABEL}):
            if c.labels.get(LABEL) == self.name or not _owner_alive(c.labels):
                stale.add(c.labels.get(LABEL, ""))
        for n in client.networks.list(filters={"label": LABEL}):
            if n.attrs.get("Labels", {}).get(LABEL) == self.name or not _owner_alive(n.attrs.get("Labels", {})):
                stale.add(n.attrs["Labels"].get(LABEL, ""))
        for inst in stale:
            _remove_instance(client, inst)

    def _pick_subnet(self, client) -> ipaddress.IPv4Network:
        used = []
        for n in client.networks.list():
            for cfg in (n.attrs.get("IPAM") or {}).get("Config") or []:
                with contextlib.suppress(ValueError, KeyError):
                    used.append(ipaddress.ip_network(cfg["Subnet"], strict=False))
        for line in subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True,
                                   check=False).stdout.splitlines():
            with contextlib.suppress(ValueError, IndexError):
                used.append(ipaddress.ip_interface(line.split()[3]).network)
        if self.subnet:
            net = ipaddress.ip_network(self.subnet)
            if any(net.overlaps(u) for u in used):
                raise MiniClusterError(f"subnet {net} overlaps a network in use")
            return net
        need = len(self.nodes) + 3
        prefix = min(24, 32 - max(need - 1, 1).bit_length())
        start = int(hashlib.sha256(self.name.encode()).hexdigest(), 16) % 200
        for i in range(256):
            net = ipaddress.ip_network(f"10.77.{(start + i) % 256}.0/24")
            if prefix < 24:
                net = ipaddress.ip_network(f"10.{78 + (start + i) % 100}.0.0/{prefix}")
            if not any(net.overlaps(u) for u in used):
                return net
        raise MiniClusterError("no free subnet for the mini-cluster network")

    def node_dir(self, node: str) -> Path:
        """Host side of the node's /etc/adsched-node (its nvidia-smi.xml); changes show at once."""
        return self.workdir / "node-etc" / node

    @property
    def store_dir(self) -> Path:
        """Host side of the adsched store the hooks record in (/jobs/adsched-state in the containers)."""
        return self.jobs_dir / "adsched-state"

    def _plugin(self) -> PluginSettings:
        return PluginSettings(conf_dir="/etc/slurm", store=f"{JOBS_DIR}/adsched-state", hints_dir="/run/adsched",
                              nvidia_smi_xml=f"{NODE_DIR}/nvidia-smi.xml", gpu_check=self.nvidia_smi_xml is not None,
                              controller=self.controller_mode)

    def _write_files(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "etc-slurm"
        conf.mkdir(exist_ok=True)
        self.jobs_dir.mkdir(exist_ok=True)
        os.chmod(self.jobs_dir, 0o1777)
        for node in self.nodes:
            self.node_dir(node).mkdir(parents=True, exist_ok=True)
            if self.nvidia_smi_xml is not None:
                (self.node_dir(node) / "nvidia-smi.xml").write_text(self.nvidia_smi_xml)
        if not (self.store_dir / Store.DB_NAME).exists():
            Store.init(self.store_dir, self.config_path.read_text())
        key = self.workdir / "munge.key"
        if not key.exists():
            key.write_bytes(secrets.token_bytes(1024))
        os.chmod(key, 0o400)

    def _create(self, client) -> None:
        sdk = _docker_sdk()
        net = self._pick_subnet(client)
        self.addrs = member_addresses(net, self.nodes)
        write_slurm_dir(self.config, self.workdir / "etc-slurm", self.addrs, plugin=self._plugin(),
                        cluster_toml=self.config_path.read_text())
        gateway = str(next(net.hosts()))
        ipam = sdk.types.IPAMConfig(pool_configs=[sdk.types.IPAMPool(subnet=str(net), gateway=gateway)])
        network = client.networks.create(self.name, driver="bridge", internal=True, ipam=ipam,
                                         labels=self._labels(), check_duplicate=True)
        self.network_id = network.id
        self._save_state()  # from here on there is something to tear down
        volumes = {
            str(self.workdir / "munge.key"): {"bind": "/etc/munge-key/munge.key", "mode": "ro"},
            str(self.workdir / "etc-slurm"): {"bind": "/etc/slurm", "mode": "ro"},
            str(self.jobs_dir): {"bind": JOBS_DIR, "mode": "rw"},
        }

        def start(member: str) -> None:
            mounts = dict(volumes)
            if member == CONTROLLER:
                devices: list[str] = []
            else:
                devices = [f"/dev/null:/dev/nvidia{i}:rwm" for i in range(self.config.node(member).gpus)]
                mounts[str(self.node_dir(member))] = {"bind": NODE_DIR, "mode": "ro"}
            client.containers.run(
                self.image, command=self.command(member), name=self.container_name(member), hostname=member,
                detach=True, init=True, labels={**self._labels(), f"{LABEL}.member": member},
                network=self.name,
                networking_config={self.name: client.api.create_endpoint_config(ipv4_address=self.addrs[member])},
                extra_hosts=self.addrs, devices=devices, volumes=mounts,
                environment={"SLURM_CONF": "/etc/slurm/slurm.conf"}, working_dir=JOBS_DIR,
            )

        start(CONTROLLER)
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(start, self.nodes))

    def command(self, member: str) -> list[str]:
        """The container command of a member (the entrypoint's role); a subclass may break a node on purpose."""
        return ["controller"] if member == CONTROLLER else ["node"]

    # -- waiting and running
    def wait_idle(self, timeout: float | None = None) -> None:
        """Until every node is idle; MiniClusterError naming the nodes that are not, with their logs."""
        timeout = self.node_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        while True:
            dead = self._exited_members()
            if dead:
                raise MiniClusterError(self._not_up_message(dead, "exited", states))
            r = self.exec(["sinfo", "--noheader", "--Node", "--format=%N %T"], timeout=10)
            if r.rc == 0:
                states = _node_states(r.stdout)
                if states and all(states.get(n) == "idle" for n in self.nodes):
                    return
            if time.monotonic() >= deadline:
                waiting = [n for n in self.nodes if states.get(n) != "idle"] or [CONTROLLER]
                raise MiniClusterError(self._not_up_message(waiting, f"not idle after {timeout:.0f} s", states,
                                                            controller_error=r.stderr if r.rc else ""))
            time.sleep(0.25)

    def _exited_members(self) -> list[str]:
        client = self._client(start=False)
        out = []
        for c in client.containers.list(all=True, filters={"label": f"{LABEL}={self.name}"}):
            if c.status in ("exited", "dead"):
                out.append(c.labels.get(f"{LABEL}.member", c.name))
        return sorted(out)

    def _not_up_message(self, members: list[str], what: str, states: dict[str, str],
                        controller_error: str = "") -> str:
        lines = [f"mini-cluster {self.name}: {', '.join(members)} {what}"]
        if states:
            lines.append("sinfo: " + ", ".join(f"{n}={s}" for n, s in sorted(states.items())))
        if controller_error:
            lines.append(f"sinfo failed: {controller_error.strip()[-300:]}")
        logs = self.logs(tail=10)
        for m in members[:3]:
            lines.append(f"--- last lines of {m}'s log ---")
            lines.append(logs.get(m, "(no container)").rstrip() or "(empty)")
        return "\n".join(lines)

    def exec(self, cmd: str | list[str], timeout: float = 60, *, user: str | None = None,
             workdir: str = JOBS_DIR, env: dict[str, str] | None = None, member: str = CONTROLLER) -> ExecResult:
        """Run a command in a container (default: the controller, where the Slurm clients are), bounded by
        timeout(1): rc 124 when it ran out. A string runs under `bash -c`."""
        argv = ["bash", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        argv = ["timeout", "-k", "5", f"{max(timeout, 0.1):g}", *argv]
        client = self._client(start=False)
        sdk = _docker_sdk()
        try:
            container = client.containers.get(self.container_name(member))
        except sdk.errors.NotFound:
            raise MiniClusterError(f"mini-cluster {self.name}: no container for {member} (is it up?)") from None
        old = client.api.timeout
        client.api.timeout = timeout + 30
        try:
            res = container.exec_run(argv, demux=True, user=user or "", workdir=workdir,
                                     environment=env or None)
        except sdk.errors.APIError as e:
            raise MiniClusterError(f"exec in {member} failed: {e.explanation or e}") from None
        finally:
            client.api.timeout = old
        out, err = res.output if res.output else (None, None)
        return ExecResult(res.exit_code if res.exit_code is not None else -1,
                          (out or b"").decode(errors="replace"), (err or b"").decode(errors="replace"))

    # -- the adsched controller (controller mode), a real process in the controller container
    CONTROLLER_LOG = f"{JOBS_DIR}/adsched-controller.log"

    def start_controller(self, *args: str) -> int:
        """Start `adsched slurm controller` (detached) in the controller container; its pid there."""
        cmd = ["adsched", "slurm", "controller", "--state", f"{JOBS_DIR}/adsched-state", "-v", *args]
        line = " ".join(f"'{a}'" for a in cmd)
        r = self.exec(f"setsid nohup {line} >> {self.CONTROLLER_LOG} 2>&1 < /dev/null & echo $!", timeout=30)
        if r.rc != 0 or not r.stdout.strip().isdigit():
            raise MiniClusterError(f"could not start the adsched controller: {r.stderr.strip()[-300:]}")
        return int(r.stdout.strip())

    def signal_controller(self, pid: int, sig: str = "KILL") -> None:
        """Signal the controller process `pid` (by its pid, never by name) and wait until it is gone."""
        self.exec(f"kill -{sig} {int(pid)}; for i in $(seq 100); do kill -0 {int(pid)} 2>/dev/null || exit 0; "
                  "sleep 0.1; done; exit 1", timeout=20)

    def controller_log(self) -> str:
        path = self.jobs_dir / Path(self.CONTROLLER_LOG).name
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self, tail: int | str = "all") -> dict[str, str]:
        """{member: its container log (stdout+stderr)} for the members that have a container."""
        client = self._client(start=False)
        out = {}
        for c in client.containers.list(all=True, filters={"label": f"{LABEL}={self.name}"}):
            with contextlib.suppress(Exception):
                out[c.labels.get(f"{LABEL}.member", c.name)] = c.logs(tail=tail).decode(errors="replace")
        return out

    def status(self) -> dict:
        """Containers, Slurm's view of the nodes (when the controller answers) and where things are."""
        info = {"name": self.name, "config": str(self.config_path), "engine": self.engine.host,
                "network": self.name if self.network_id else None, "workdir": str(self.workdir),
                "containers": {}, "nodes": {}}
        try:
            client = self._client(start=False)
        except MiniClusterError:
            info["engine"] = None
            return info
        info["engine"] = self.engine.host
        for c in client.containers.list(all=True, filters={"label": f"{LABEL}={self.name}"}):
            info["containers"][c.labels.get(f"{LABEL}.member", c.name)] = c.status
        if info["containers"].get(CONTROLLER) == "running":
            r = self.exec(["sinfo", "--noheader", "--Node", "--format=%N %T"], timeout=10)
            info["nodes"] = _node_states(r.stdout)
        return info

    def down(self, stop_engine: bool = True) -> None:
        """Remove every container and the network of this cluster; stop the private engine when nothing else
        of ours runs on it (and stop_engine); delete the bridge link it may leave. Safe to call more than once."""
        t0 = time.monotonic()
        if self._images is not None and self._images.saving is not None:
            self._images.saving.join()  # the image cache is read from the engine: before it may stop
        try:
            client = self._client(start=False)
        except MiniClusterError:
            client = None
        with self.engine.lock():
            if client is not None:
                _remove_instance(client, self.name)
                others = client.containers.list(all=True, filters={"label": LABEL})
                if stop_engine and self.engine.private and not others:
                    self.engine.stop_private()
            if self.network_id:
                _remove_link(f"br-{self.network_id[:12]}")
        self.state_file.unlink(missing_ok=True)
        if self.workdir.exists():
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.timings["down"] = time.monotonic() - t0

    def leftovers(self) -> list[str]:
        """What down() should have removed but is still there: labelled containers/networks of this cluster, the
        bridge link of its network, and the private engine when it runs with nothing of ours on it."""
        found = []
        try:
            client = self.engine.connect(start=False)
        except MiniClusterError:  # no engine answers: then it holds nothing either
            client = None
        if client is not None:
            mine = {"label": f"{LABEL}={self.name}"}
            found += [f"container {c.name}" for c in client.containers.list(all=True, filters=mine)]
            found += [f"network {n.name}" for n in client.networks.list(filters=mine)]
            if self.engine.private and not client.containers.list(all=True, filters={"label": LABEL}):
                pid = self.engine.engine_pid()
                if pid is not None:
                    found.append(f"engine pid {pid}")
        if self.network_id and Path(f"/sys/class/net/br-{self.network_id[:12]}").exists():
            found.append(f"link br-{self.network_id[:12]}")
        return found

    # -- state for other processes
    def _save_state(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        state = {"name": self.name, "config": str(self.config_path), "engine_host": self.engine.host,
                 "engine_run_dir": str(self.engine.run_dir), "engine_data_root": str(self.engine.data_root),
                 "network_id": self.network_id, "addrs": self.addrs, "image": self.image,
                 "cache_dir": str(self.cache_dir), "node_timeout": self.node_timeout}
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, self.state_file)

    @classmethod
    def attach(cls, name: str, state_dir: str | os.PathLike | None = None) -> MiniCluster:
        """The cluster `name` brought up by another process (from its state file)."""
        sdir = Path(state_dir) if state_dir else default_state_dir()
        path = sdir / f"{name}.json"
        try:
            st = json.loads(path.read_text())
        except (OSError, ValueError):
            raise MiniClusterError(f"no mini-cluster {name!r} is up (no state in {path})") from None
        engine = Engine(run_dir=Path(st["engine_run_dir"]), data_root=Path(st["engine_data_root"]),
                        docker_host=st["engine_host"])
        mc = cls(st["config"], name, state_dir=sdir, cache_dir=st["cache_dir"], engine=engine,
                 node_timeout=st.get("node_timeout", 60.0), persistent=True)
        mc.network_id, mc.addrs, mc.image = st.get("network_id"), st.get("addrs", {}), st.get("image")
        return mc

    @staticmethod
    def list_up(state_dir: str | os.PathLike | None = None) -> list[str]:
        sdir = Path(state_dir) if state_dir else default_state_dir()
        return sorted(p.stem for p in sdir.glob("*.json")) if sdir.is_dir() else []


def member_addresses(subnet: str | ipaddress.IPv4Network, nodes: list[str]) -> dict[str, str]:
    """{member: address}: the controller, then the nodes, from the second host address of subnet on (the first
    is the gateway). docker/compose.yml uses the same plan for 10.78.0.0/24."""
    hosts = ipaddress.ip_network(subnet).hosts()
    next(hosts)
    members = [CONTROLLER, *nodes]
    addrs = {m: str(a) for m, a in zip(members, hosts)}
    if len(addrs) < len(members):
        raise MiniClusterError(f"subnet {subnet} is too small for {len(members)} containers")
    return addrs


def write_slurm_dir(config: ClusterConfig, dest: str | os.PathLike, addrs: dict[str, str],
                    plugin: PluginSettings | None = None, cluster_toml: str = "") -> list[Path]:
    """Render slurm.conf, topology.conf and gres.conf for the containers (addresses from member_addresses),
    and with `plugin` the adsched job_submit plugin, its rules and the hook scripts."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    files = render_all(config, controller=CONTROLLER, controller_addr=addrs[CONTROLLER],
                       node_addrs={n.name: addrs[n.name] for n in config.nodes}, plugin=plugin)
    if plugin is not None:
        files.update(render_plugin_files(config, cluster_toml, plugin))
    out = []
    for fname, text in files.items():
        (dest / fname).write_text(text)
        os.chmod(dest / fname, 0o755 if fname in EXECUTABLE else 0o644)
        out.append(dest / fname)
    return out


def render_for_compose(config_path: str | os.PathLike, dest: str | os.PathLike,
                       subnet: str = "10.78.0.0/24") -> list[Path]:
    """What docker/compose.yml mounts, in dest: etc-slurm/ (rendered for `subnet`), munge.key, jobs/."""
    try:
        config = load_config(config_path)
    except ConfigError as e:
        raise MiniClusterError(str(e)) from None
    dest = Path(dest)
    written = write_slurm_dir(config, dest / "etc-slurm", member_addresses(subnet, [n.name for n in config.nodes]))
    key = dest / "munge.key"
    if not key.exists():
        key.write_bytes(secrets.token_bytes(1024))
        os.chmod(key, 0o400)
    (dest / "jobs").mkdir(exist_ok=True)
    os.chmod(dest / "jobs", 0o1777)
    return [*written, key, dest / "jobs"]


def host_network_state() -> dict[str, str]:
    """What a plainly started dockerd would change on the host: ip_forward and the iptables FORWARD policy."""
    state = {"ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()}
    bridge_nf = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")  # docker may load br_netfilter
    state["bridge-nf-call-iptables"] = bridge_nf.read_text().strip() if bridge_nf.exists() else "absent"
    for tool in ("iptables", "iptables-legacy"):
        if shutil.which(tool):
            out = subprocess.run([tool, "-S", "FORWARD"], capture_output=True, text=True, check=False,
                                 timeout=30).stdout
            state[tool] = next((line for line in out.splitlines() if line.startswith("-P")), "")
    return state


def _node_states(sinfo_out: str) -> dict[str, str]:
    """{node: state} from `sinfo --noheader --Node --format="%N %T"` (a node in two partitions is listed twice)."""
    states: dict[str, str] = {}
    for line in sinfo_out.splitlines():
        parts = line.split()
        if len(parts) == 2:
            states.setdefault(parts[0], parts[1])
    return states


def _owner_alive(labels: dict) -> bool:
    try:
        pid = int(labels.get(OWNER_LABEL, "0"))
    except ValueError:
        return True
    return pid == 0 or _pid_alive(pid)


def _remove_instance(client, name: str) -> None:
    sdk = _docker_sdk()
    containers = client.containers.list(all=True, filters={"label": f"{LABEL}={name}"})

    def rm(c) -> None:
        with contextlib.suppress(sdk.errors.NotFound):
            c.remove(force=True)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(rm, containers))
    for n in client.networks.list(filters={"label": f"{LABEL}={name}"}):
        with contextlib.suppress(sdk.errors.NotFound):
            n.remove()
        _remove_link(f"br-{n.id[:12]}")
