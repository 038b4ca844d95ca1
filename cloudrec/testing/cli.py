"""``cloudrec services start|stop|env``: the loopback test servers in the background.

``start`` runs moto (S3), the fault proxy and HDFS detached and writes a
shell env file with their endpoints and pids; ``eval "$(cloudrec services env)"``
then makes pytest's fixtures reuse them; ``stop`` ends them by pid.
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Dict, List

from cloudrec.testing.hdfs import HdfsCluster
from cloudrec.testing.servers import FaultProxy, MotoServer, ServiceError, stop_pid

DEFAULT_ENV_FILE = os.path.join(".cache", "services.env")
# what each pid's command line must contain before we signal it (guards against pid reuse)
_MARKERS = {"moto": "moto", "faultproxy": "cloudrec.testing.faultproxy",
            "namenode": "namenode.NameNode", "datanode": "datanode.DataNode"}


def register(subparsers) -> None:
    p = subparsers.add_parser("services", help="start/stop the loopback S3, fault proxy and HDFS servers",
                              description=__doc__)
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--env-file", default=os.environ.get("CLOUDREC_SERVICES_ENV", DEFAULT_ENV_FILE),
                        help=f"env file with endpoints and pids (default {DEFAULT_ENV_FILE})")
    s = sub.add_parser("start", parents=[common], help="start in the background, write the env file")
    s.add_argument("--no-hdfs", action="store_true", help="S3 and fault proxy only")
    s.add_argument("--heap-mb", type=int, default=512, help="heap per HDFS JVM")
    s.set_defaults(func=_start)
    sub.add_parser("stop", parents=[common], help="stop the servers named in the env file").set_defaults(
        func=_stop)
    sub.add_parser("env", parents=[common], help="print the env file (for eval)").set_defaults(func=_env)
    p.set_defaults(func=lambda ns: (p.print_help(), 2)[1])


def _read_env(path: Path) -> Dict[str, str]:
    out: Dict[str, str] = {}
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            for item in shlex.split(line[len("export "):]):
                key, _, val = item.partition("=")
                out[key] = val
    return out


def _pids(env: Dict[str, str]) -> Dict[str, int]:
    pids = {}
    for item in env.get("CLOUDREC_SERVICES_PIDS", "").split():
        label, _, pid = item.partition(":")
        if pid.isdigit():
            pids[label] = int(pid)
    return pids


def _alive(label: str, pid: int) -> bool:
    """The pid runs and is still the server we started (not a reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return _MARKERS.get(label, label) in cmdline


def _start(ns: argparse.Namespace) -> int:
    path = Path(ns.env_file)
    old = _read_env(path)
    if old and any(_alive(k, v) for k, v in _pids(old).items()):
        print(f"services already running (see {path}); `cloudrec services stop` first", file=sys.stderr)
        return 1
    t0 = time.monotonic()
    started: List = []
    try:
        moto = MotoServer(detach=True).start()
        started.append(moto)
        proxy = FaultProxy(moto.endpoint_url, detach=True).start()
        started.append(proxy)
        hdfs = None
        if not ns.no_hdfs:
            hdfs = HdfsCluster(detach=True, heap_mb=ns.heap_mb).start()
            started.append(hdfs)
    except (ServiceError, OSError) as exc:
        for svc in started:
            svc.detach = False  # so stop() also removes its folder
            svc.stop()
        print(f"cloudrec services: could not start: {exc}", file=sys.stderr)
        return 1
    env = {"CLOUDREC_S3_ENDPOINT": moto.endpoint_url, "CLOUDREC_S3_FAULTY_ENDPOINT": proxy.endpoint_url}
    if hdfs is not None:
        env.update(CLOUDREC_HDFS_URL=hdfs.url, CLOUDREC_WEBHDFS_URL=hdfs.webhdfs_url)
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
               AWS_EC2_METADATA_DISABLED="true")
    pids = " ".join(f"{label}:{pid}" for svc in started for label, pid in svc.pids.items())
    env["CLOUDREC_SERVICES_PIDS"] = pids
    env["CLOUDREC_SERVICES_DIRS"] = " ".join(str(svc.workdir) for svc in started)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()))
    print(f"started in {time.monotonic() - t0:.1f} s; env file {path}:")
    print(path.read_text(), end="")
    return 0


def _stop(ns: argparse.Namespace) -> int:
    path = Path(ns.env_file)
    env = _read_env(path)
    if not env:
        print(f"no env file at {path}: nothing to stop", file=sys.stderr)
        return 0
    for label, pid in reversed(list(_pids(env).items())):
        if _alive(label, pid):
            stop_pid(pid)
            print(f"stopped {label} (pid {pid})")
    for folder in env.get("CLOUDREC_SERVICES_DIRS", "").split():
        if os.path.basename(folder).startswith("cloudrec-"):
            shutil.rmtree(folder, ignore_errors=True)
    path.unlink()
    return 0


def _env(ns: argparse.Namespace) -> int:
    path = Path(ns.env_file)
    if not path.exists():
        print(f"no env file at {path}; run `cloudrec services start`", file=sys.stderr)
        return 1
    print(path.read_text(), end="")
    return 0
