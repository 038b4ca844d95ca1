"""Real test servers on 127.0.0.1: moto's S3 and the fault proxy (HDFS: :mod:`cloudrec.testing.hdfs`).

Each class starts its processes on free ports, is a context manager, stops
them by pid (never by name) and registers an atexit stop, so nothing outlives
the Python process that started it unless asked to (``detach=True``, used by
``cloudrec services start``).  ``X.existing(...)`` wraps a server that some
other process runs (shared developer instance), and never stops it.
"""
from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Dict, IO, List, Optional

LOOPBACK = "127.0.0.1"
DUMMY_KEY = "testing"


class ServiceError(RuntimeError):
    """A test server could not be started; the message carries its log tail."""


def free_ports(n: int = 1) -> List[int]:
    """``n`` distinct ports that were free on 127.0.0.1 a moment ago."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((LOOPBACK, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_open(port: int, host: str = LOOPBACK) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return f"--- last lines of {path} ---\n" + "\n".join(text[-lines:])


def _die_with_parent_prefix() -> List[str]:
    """A command prefix making the child get SIGTERM when its parent dies.

    util-linux's ``setpriv --pdeathsig`` sets it before exec; a Python
    ``preexec_fn`` would do the same but can deadlock the forked child when
    other threads (hdfs-native, aiobotocore) hold locks.
    """
    exe = shutil.which("setpriv")
    return [exe, "--pdeathsig", "TERM", "--"] if exe else []


def _running(pid: int) -> bool:
    """The pid exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM one process by pid, SIGKILL it if it lingers; ignore if gone."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return
        except ChildProcessError:  # not our child: poll for existence instead
            if not _running(pid):
                return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


OWNER_FILE = "owner.pid"
LIVE_PIDS: set = set()  # pids of servers started (and not yet stopped) by this process


def _sweep_stale_workdirs() -> None:
    """Remove work folders left by killed test sessions (owner pid gone)."""
    for folder in Path(tempfile.gettempdir()).glob("cloudrec-*-*"):
        try:
            owner = int((folder / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # detached services and foreign folders have no owner file
        if not _running(owner):
            shutil.rmtree(folder, ignore_errors=True)


class _Service:
    """Owns a set of child processes and a work folder; stops both once."""

    name = "service"

    @classmethod
    def _external(cls, endpoint_url: str = "", default_port: int = 80):
        """An instance wrapping a server run elsewhere: marked started, never stopped by us."""
        self = cls.__new__(cls)
        _Service.__init__(self, workdir=tempfile.gettempdir())
        self.external, self.started = True, True
        if endpoint_url:
            self.endpoint_url = endpoint_url.rstrip("/")
            self.port = urllib.parse.urlsplit(self.endpoint_url).port or default_port
        return self

    def __init__(self, *, workdir: Optional[str] = None, detach: bool = False,
                 start_timeout: float = 60.0) -> None:
        self.detach = detach
        self.start_timeout = start_timeout
        self._own_workdir = workdir is None
        if workdir is None:
            _sweep_stale_workdirs()
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"cloudrec-{self.name}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self._own_workdir and not detach:
            (self.workdir / OWNER_FILE).write_text(str(os.getpid()))
        self.procs: Dict[str, subprocess.Popen] = {}
        self.started = False
        self.external = False
        self._logs: List[IO[bytes]] = []

    # -- process handling -------------------------------------------------
    def _spawn(self, label: str, cmd: List[str], env: Optional[Dict[str, str]] = None) -> subprocess.Popen:
        log = open(self.workdir / f"{label}.log", "ab")
        self._logs.append(log)
        if not self.detach:
            cmd = _die_with_parent_prefix() + cmd
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=env, cwd=str(self.workdir), start_new_session=True)
        self.procs[label] = proc
        LIVE_PIDS.add(proc.pid)
        return proc

    def _check_alive(self) -> None:
        for label, proc in self.procs.items():
            if proc.poll() is not None:
                raise ServiceError(f"{self.name}: {label} (pid {proc.pid}) exited with code "
                                   f"{proc.returncode} while starting\n"
                                   + _log_tail(self.workdir / f"{label}.log"))

    def _wait_port(self, port: int, label: str) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            self._check_alive()
            if port_open(port):
                return
            time.sleep(0.05)
        raise ServiceError(f"{self.name}: {label} not listening on {LOOPBACK}:{port} after "
                           f"{self.start_timeout:.0f} s\n" + _log_tail(self.workdir / f"{label}.log"))

    @property
    def pids(self) -> Dict[str, int]:
        return {label: p.pid for label, p in self.procs.items()}

    def start(self) -> "_Service":
        if self.started:
            return self
        if not self.detach:
            atexit.register(self.stop)
        try:
            self._start()
        except BaseException:
            self.stop(keep_workdir=True)  # logs stay for a look; swept once this process is gone
            raise
        self.started = True
        return self

    def _start(self) -> None:
        raise NotImplementedError

    def stop(self, keep_workdir: bool = False) -> None:
        """Stop every process this object started (by pid) and drop its work folder."""
        for proc in reversed(list(self.procs.values())):
            if proc.poll() is None:
                stop_pid(proc.pid)
            with contextlib.suppress(Exception):
                proc.wait(timeout=5)
            LIVE_PIDS.discard(proc.pid)
        self.procs.clear()
        for log in self._logs:
            log.close()
        self._logs.clear()
        if self._own_workdir and not self.detach and not self.external and not keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.started = False
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def s3_storage_options(endpoint_url: str, **config_kwargs: Any) -> Dict[str, Any]:
    """s3fs options for a loopback endpoint with dummy credentials."""
    opts: Dict[str, Any] = {"key": DUMMY_KEY, "secret": DUMMY_KEY,
                            "client_kwargs": {"endpoint_url": endpoint_url, "region_name": "us-east-1"}}
    if config_kwargs:
        opts["config_kwargs"] = config_kwargs
    return opts


class MotoServer(_Service):
    """moto's S3 server as a subprocess: ``moto_server -H 127.0.0.1 -p PORT``."""

    name = "moto"

    def __init__(self, port: Optional[int] = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.port = port or 0
        self.endpoint_url = ""

    @classmethod
    def existing(cls, endpoint_url: str) -> "MotoServer":
        """Wrap an S3 endpoint run elsewhere (not stopped by us)."""
        return cls._external(endpoint_url)

    def _start(self) -> None:
        exe = shutil.which("moto_server", path=os.path.dirname(sys.executable)) or shutil.which("moto_server")
        cmd = [exe] if exe else [sys.executable, "-m", "moto.server"]
        for attempt in range(3):
            port = self.port or free_ports(1)[0]
            self._spawn("moto", cmd + ["-H", LOOPBACK, "-p", str(port)])
            try:
                self._wait_port(port, "moto")
            except ServiceError:
                if self.port or attempt == 2:
                    raise
                stop_pid(self.procs.pop("moto").pid)  # port taken meanwhile: try another
                continue
            self.port = port
            break
        self.endpoint_url = f"http://{LOOPBACK}:{self.port}"

    @property
    def storage_options(self) -> Dict[str, Any]:
        return s3_storage_options(self.endpoint_url)

    def filesystem(self, **opts: Any):
        """A fresh (uncached) s3fs filesystem on this endpoint."""
        import s3fs
        return s3fs.S3FileSystem(skip_instance_cache=True, **{**self.storage_options, **opts})

    def new_bucket(self, prefix: str = "cloudrec-test") -> str:
        """Create a fresh bucket and return ``s3://name``.

        Uses ``create_bucket`` without a LocationConstraint: s3fs's ``mkdir``
        sends one for us-east-1, which moto rejects.
        """
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        if getattr(self, "_admin_fs", None) is None:
            self._admin_fs = self.filesystem()
        self._admin_fs.call_s3("create_bucket", Bucket=name)
        return f"s3://{name}"


class FaultProxy(_Service):
    """``cloudrec.testing.faultproxy`` in front of an S3 endpoint, on a free port."""

    name = "faultproxy"

    def __init__(self, upstream: str, port: Optional[int] = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.upstream = upstream.rstrip("/")
        self.port = port or 0
        self.endpoint_url = ""

    @classmethod
    def existing(cls, endpoint_url: str) -> "FaultProxy":
        """Wrap a fault proxy run elsewhere (not stopped by us)."""
        self = cls._external(endpoint_url)
        self.upstream = ""
        return self

    def _start(self) -> None:
        for attempt in range(3):
            port = self.port or free_ports(1)[0]
            self._spawn("faultproxy", [sys.executable, "-m", "cloudrec.testing.faultproxy",
                                       "--listen", str(port), "--upstream", self.upstream])
            try:
                self._wait_port(port, "faultproxy")
            except ServiceError:
                if self.port or attempt == 2:
                    raise
                stop_pid(self.procs.pop("faultproxy").pid)
                continue
            self.port = port
            break
        self.endpoint_url = f"http://{LOOPBACK}:{self.port}"

    @property
    def storage_options(self) -> Dict[str, Any]:
        """s3fs options through the proxy: botocore's own retries off and short
        timeouts, so injected faults reach the caller (s3fs still retries a few
        error kinds itself)."""
        return s3_storage_options(self.endpoint_url, retries={"max_attempts": 1, "mode": "standard"},
                                  connect_timeout=2, read_timeout=5)

    def _control(self, **query: Any) -> Dict[str, Any]:
        url = f"{self.endpoint_url}/__faults?" + urllib.parse.urlencode(query)
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise ValueError(f"fault proxy refused {query}: {exc.read().decode(errors='replace')}") from exc

    def configure(self, p503: float = 0.0, p500: float = 0.0, pdrop: float = 0.0, ptrunc: float = 0.0,
                  pstall: float = 0.0, latency_ms: float = 0.0, seed: int = 0, *,
                  p403: float = 0.0, pflip: float = 0.0,
                  stall_s: float = 30.0, stall_at: str = "head", methods: str = "",
                  targets: str = "", max_faults: int = -1, mb_per_s: float = 0.0,
                  clear_stats: bool = True) -> Dict[str, Any]:
        """Set every fault setting at once (unnamed ones back to 0/default),
        re-seed the RNG and, by default, zero the counts.  ``mb_per_s`` > 0 paces every
        answer's body (a slow link); ``targets`` limits faults to some kinds of request
        (``"GET"``, a listing; ``"GET .idx"``; see :meth:`traffic`)."""
        query: Dict[str, Any] = dict(p503=p503, p500=p500, pdrop=pdrop, ptrunc=ptrunc, pstall=pstall,
                                     p403=p403, pflip=pflip,
                                     latency_ms=latency_ms, seed=seed, stall_s=stall_s, stall_at=stall_at,
                                     methods=methods, targets=targets, max_faults=max_faults,
                                     mb_per_s=mb_per_s)
        if clear_stats:
            query["clear"] = 1
        return self._control(**query)["config"]

    def stats(self) -> Dict[str, int]:
        """Counts since the last clear: requests, 503, 500, drop, trunc, stall, flip, 403, ok, faults."""
        return self._control()["counts"]

    def traffic(self) -> Dict[str, Dict[str, int]]:
        """Since the last clear, by method and object suffix (``"GET .rec"``): requests and
        body bytes sent to the client (what a bench or test counts as moved)."""
        return self._control()["traffic"]


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
