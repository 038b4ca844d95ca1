"""Debian's nginx serving one folder read-only over HTTP on a free 127.0.0.1 port.

A Range-capable static server for ``http://`` tests (``python -m http.server``
ignores Range).  ``tcp_nopush off`` matters: with Debian's default (on) every
small ranged read waits ~40 ms for the kernel to flush; off, ~0.5 ms.  Runs as
one process (``master_process off``) as the current user, so files under a
private temporary folder are readable and the pid we hold is the server.
Install: ``apt-get install nginx-light`` (or ``nginx``).
"""
from __future__ import annotations

import os
import shutil
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Optional

from cloudrec.testing.servers import LOOPBACK, ServiceError, _Service, free_ports, port_open, stop_pid

NGINX_CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")


def find_nginx() -> str:
    """Path of the nginx binary (``CLOUDREC_NGINX`` overrides), or ServiceError."""
    exe = os.environ.get("CLOUDREC_NGINX") or shutil.which("nginx")
    if not exe:
        exe = next((c for c in NGINX_CANDIDATES if os.access(c, os.X_OK)), None)
    if not exe:
        raise ServiceError("nginx: no nginx binary found on PATH or in /usr/sbin "
                           "(apt-get install nginx-light)")
    return exe


def _conf(root: Path, port: int, workdir: Path, token: str) -> str:
    tmp = workdir / "tmp"
    temps = "".join(f"    {kind}_temp_path {tmp / kind};\n"
                    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""daemon off;
master_process off;
worker_processes 1;
pid {workdir / 'nginx.pid'};
error_log {workdir / 'error.log'} warn;
events {{ worker_connections 512; }}
http {{
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    tcp_nopush off;
    tcp_nodelay on;
    keepalive_requests 100000;
{temps}    server {{
        listen {LOOPBACK}:{port};
        server_name localhost;
        root {root};
        location / {{
            limit_except GET {{ deny all; }}
        }}
        location = /__cloudrec-ready-{token} {{
            default_type text/plain;
            return 200 "{token}";
        }}
    }}
}}
"""


class NginxServer(_Service):
    """``root_dir`` served read-only at ``.url`` (``http://127.0.0.1:PORT``), Range included."""

    name = "nginx"

    def __init__(self, root_dir: Any, port: Optional[int] = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.root = Path(root_dir).resolve()
        self.port = port or 0
        self.url = ""
        self.startup_seconds = 0.0

    @property
    def storage_options(self) -> dict:
        """fsspec ``http`` needs no options here."""
        return {}

    def url_of(self, relpath: str) -> str:
        """The http URL of ``relpath`` under the served folder."""
        return f"{self.url}/{relpath.lstrip('/')}"

    def _wait_ready(self, port: int, token: str) -> None:
        """Ready when *this* nginx answers a per-start token (an open port alone could
        belong to another server that took it first)."""
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            self._check_alive()
            if port_open(port) and _answers(port, token):
                return
            time.sleep(0.05)
        raise ServiceError(f"nginx: not answering on {LOOPBACK}:{port} after {self.start_timeout:.0f} s")

    def _start(self) -> None:
        t0 = time.monotonic()
        exe = find_nginx()
        if not self.root.is_dir():
            raise ServiceError(f"nginx: root folder {self.root} does not exist")
        (self.workdir / "tmp").mkdir(exist_ok=True)
        for attempt in range(3):
            port = self.port or free_ports(1)[0]
            conf = self.workdir / "nginx.conf"
            token = uuid.uuid4().hex
            conf.write_text(_conf(self.root, port, self.workdir, token))
            # -e: the startup error log, opened before the config is read (default is under /var/log)
            self._spawn("nginx", [exe, "-p", f"{self.workdir}/", "-e", str(self.workdir / "error.log"),
                                  "-c", str(conf)])
            try:
                self._wait_ready(port, token)
            except ServiceError as exc:
                exc.args = (exc.args[0] + "\n" + _error_log(self.workdir),)
                if self.port or attempt == 2:
                    raise
                stop_pid(self.procs.pop("nginx").pid)  # port taken meanwhile: try another
                continue
            self.port = port
            break
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.startup_seconds = time.monotonic() - t0


def _answers(port: int, token: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/__cloudrec-ready-{token}", timeout=2) as r:
            return r.read().decode() == token
    except (OSError, ValueError):
        return False


def _error_log(workdir: Path) -> str:
    try:
        return "--- nginx error.log ---\n" + (workdir / "error.log").read_text(errors="replace")[-3000:]
    except OSError:
        return "(no nginx error.log)"
