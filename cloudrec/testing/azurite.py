"""Azurite (Microsoft's Azure Blob emulator, npm) on a free 127.0.0.1 port, for ``az://`` tests.

The npm package is installed once per machine into a cache folder
(``~/.cache/cloudrec/azurite``, or ``CLOUDREC_AZURITE_CACHE``) with
``npm install --prefix``, under a file lock; node must be on PATH.  Blobs
live in memory and vanish with the process.  Clients use adlfs with the
emulator's well-known ``devstoreaccount1`` connection string.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Optional

from cloudrec.testing.servers import (LOOPBACK, ServiceError, _locked, _log_tail, _Service, free_ports, port_open,
                                      stop_pid)

AZURITE_VERSION = "3.37.0"
ACCOUNT = "devstoreaccount1"
# the emulator's public, documented development key (not a secret)
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azurite_cache_dir() -> Path:
    """Where the azurite npm package is installed, once per machine."""
    return Path(os.environ.get("CLOUDREC_AZURITE_CACHE", Path.home() / ".cache" / "cloudrec" / "azurite"))


def _installed_version(prefix: Path) -> Optional[str]:
    try:
        return json.loads((prefix / "node_modules" / "azurite" / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


def azurite_blob_script(cache: Optional[Path] = None, timeout: float = 600.0) -> Path:
    """The ``azurite-blob`` launcher, installing azurite@AZURITE_VERSION first if needed.

    Installs into a temporary prefix and renames it when complete, so a killed
    install never leaves a half package that a later run would try to start.
    """
    cache = cache or azurite_cache_dir()
    prefix = cache / f"azurite-{AZURITE_VERSION}"
    script = prefix / "node_modules" / ".bin" / "azurite-blob"
    if script.exists() and _installed_version(prefix) == AZURITE_VERSION:
        return script
    npm = shutil.which("npm")
    if not npm:
        raise ServiceError("azurite: npm not found on PATH (install Node.js >= 18 with npm)")
    with _locked(cache / ".lock"):
        if script.exists() and _installed_version(prefix) == AZURITE_VERSION:
            return script
        tmp = Path(tempfile.mkdtemp(prefix="install-", dir=cache))
        try:
            cmd = [npm, "install", "--prefix", str(tmp), "--no-audit", "--no-fund", "--omit=dev",
                   "--loglevel=error", f"azurite@{AZURITE_VERSION}"]
            try:
                res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                     stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired as exc:
                raise ServiceError(f"azurite: `{' '.join(cmd)}` took more than {timeout:.0f} s") from exc
            if res.returncode != 0 or _installed_version(tmp) != AZURITE_VERSION:
                raise ServiceError(f"azurite: `{' '.join(cmd)}` failed ({res.returncode}):\n"
                                   f"{res.stdout[-2000:]}\n{res.stderr[-4000:]}")
            shutil.rmtree(prefix, ignore_errors=True)
            tmp.rename(prefix)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return script


def connection_string(blob_endpoint: str) -> str:
    """The devstoreaccount1 connection string for a blob endpoint ``http://host:port``."""
    return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={blob_endpoint.rstrip('/')}/{ACCOUNT};")


class AzuriteServer(_Service):
    """azurite's blob service, in memory: ``.endpoint_url``, ``.storage_options`` (adlfs),
    ``.new_container() -> "az://<fresh container>"``."""

    name = "azurite"

    def __init__(self, port: Optional[int] = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.port = port or 0
        self.endpoint_url = ""
        self.startup_seconds = 0.0  # launch until listening (install excluded)
        self.install_seconds = 0.0
        self._admin_fs = None

    @classmethod
    def existing(cls, endpoint_url: str) -> "AzuriteServer":
        """Wrap an azurite blob endpoint run elsewhere (not stopped by us)."""
        self = cls._external(endpoint_url, default_port=10000)
        self.startup_seconds = self.install_seconds = 0.0
        self._admin_fs = None
        return self

    def _start(self) -> None:
        node = shutil.which("node")
        if not node:
            raise ServiceError("azurite: node not found on PATH (install Node.js >= 18)")
        t0 = time.monotonic()
        script = azurite_blob_script()
        self.install_seconds = time.monotonic() - t0
        t1 = time.monotonic()
        for attempt in range(3):
            port = self.port or free_ports(1)[0]
            # node directly (not the .bin shell shim), so the pid we stop is the server itself
            self._spawn("azurite", [node, str(script.resolve()), "--blobHost", LOOPBACK, "--blobPort",
                                    str(port), "--inMemoryPersistence", "--skipApiVersionCheck",
                                    "--loose", "--silent"])
            try:
                self._wait_listening(port)
            except ServiceError:
                if self.port or attempt == 2:
                    raise
                stop_pid(self.procs.pop("azurite").pid)  # port taken meanwhile: try another
                continue
            self.port = port
            break
        self.endpoint_url = f"http://{LOOPBACK}:{self.port}"
        self.startup_seconds = time.monotonic() - t1

    def _wait_listening(self, port: int) -> None:
        """Ready when *our* process logs that it listens on ``port`` (an open port alone
        could belong to another server that took it first)."""
        log = self.workdir / "azurite.log"
        needle = f"successfully listens on http://{LOOPBACK}:{port}"
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                if needle in log.read_text(errors="replace") and port_open(port):
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise ServiceError(f"azurite: not listening on {LOOPBACK}:{port} after {self.start_timeout:.0f} s\n"
                           + _log_tail(log))

    def stop(self, keep_workdir: bool = False) -> None:
        """Stop by pid with a short grace: on SIGTERM azurite waits for idle keep-alive
        client connections (~10 s); its blobs are in memory, so there is nothing to flush."""
        for proc in list(self.procs.values()):
            if proc.poll() is None:
                stop_pid(proc.pid, timeout=1.0)
        super().stop(keep_workdir=keep_workdir)

    @property
    def connection_string(self) -> str:
        return connection_string(self.endpoint_url)

    @property
    def storage_options(self) -> Dict[str, Any]:
        """adlfs options (``az://`` and ``abfs://``)."""
        return {"connection_string": self.connection_string}

    def filesystem(self, **opts: Any):
        """A fresh (uncached) adlfs filesystem on this endpoint."""
        import adlfs
        return adlfs.AzureBlobFileSystem(skip_instance_cache=True, **{**self.storage_options, **opts})

    def new_container(self, prefix: str = "cloudrec-test") -> str:
        """Create a fresh container (names: 3-63 lowercase letters, digits, dashes); ``az://name``."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}".lower()
        if self._admin_fs is None:
            self._admin_fs = self.filesystem()
        self._admin_fs.mkdir(name)
        return f"az://{name}"
