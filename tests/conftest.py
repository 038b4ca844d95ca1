"""Shared pytest fixtures: real loopback S3 (moto), an S3 fault proxy, HDFS.

Servers start lazily (only when a test asks for them) on free ports and stop
at the end of the session.  To reuse running ones (``cloudrec services start``
then ``eval "$(cloudrec services env)"``) set CLOUDREC_S3_ENDPOINT,
CLOUDREC_HDFS_URL and CLOUDREC_WEBHDFS_URL.  If HDFS cannot start, the hdfs
tests fail with the startup error; they are never skipped.

Fixtures: ``s3_server``, ``hdfs_server`` (session), ``fault_proxy`` and
``store`` (per test; ``store`` is parametrised local / s3 / hdfs).
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import time

import pytest

from cloudrec.testing import FaultProxy, HdfsCluster, MotoServer
from cloudrec.testing.stores import hdfs_store, local_store, s3_store

# never let boto look for real credentials (or probe a metadata address off loopback)
for _key, _val in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                   "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}.items():
    os.environ.setdefault(_key, _val)
os.environ.pop("AWS_PROFILE", None)


# Orphans of this session (e.g. a forked child that deadlocked) are re-parented to pytest
# instead of init, so the session can end them by pid at the end rather than leave them running.
def _set_child_subreaper() -> bool:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


_SUBREAPER = _set_child_subreaper()


def _children(pid: int):
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append((int(entry), fields[0]))
    return out


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    """End (by pid) and report processes the tests left behind; reap zombies."""
    if not _SUBREAPER or session.config.pluginmanager.has_plugin("dsession"):
        return  # pytest-xdist's controller runs no test: its children are the workers,
        # and each worker (a subreaper too) ends its own leftovers
    me = os.getpid()
    from cloudrec.testing.servers import LIVE_PIDS  # servers: their fixtures stop them
    leftovers = [pid for pid, state in _children(me) if state not in ("Z", "X") and pid not in LIVE_PIDS]
    for pid in list(leftovers):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            cmd = "?"
        if "from multiprocessing." in cmd:  # stdlib helpers (resource tracker, forkserver) end with us
            leftovers.remove(pid)
            continue
        print(f"\nconftest: ending process {pid} left running by the tests: {cmd[:200]}", file=sys.stderr)
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while leftovers and time.monotonic() < deadline:
        leftovers = [pid for pid, state in _children(me) if state not in ("Z", "X") and pid in leftovers]
        time.sleep(0.05)
    for pid in leftovers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    while True:  # reap what was re-parented to us
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server: ``.endpoint_url``, ``.storage_options``, ``.new_bucket()``."""
    url = os.environ.get("CLOUDREC_S3_ENDPOINT")
    if url:
        yield MotoServer.existing(url)
        return
    with MotoServer() as server:
        yield server


@pytest.fixture(scope="session")
def hdfs_server():
    """One-node HDFS: ``.url`` (hdfs://), ``.webhdfs_url``, ``.storage_options``."""
    url = os.environ.get("CLOUDREC_HDFS_URL")
    if url:
        yield HdfsCluster.existing(url, os.environ.get("CLOUDREC_WEBHDFS_URL", ""))
        return
    with HdfsCluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def _fault_proxy_process(s3_server):
    # always private to this session: configure() from another session must not leak in
    with FaultProxy(s3_server.endpoint_url) as proxy:
        yield proxy


@pytest.fixture
def fault_proxy(_fault_proxy_process):
    """The fault proxy in front of moto, all faults off and counts zeroed for this test."""
    _fault_proxy_process.configure()
    yield _fault_proxy_process
    _fault_proxy_process.configure()


_STORE_PARAMS = [pytest.param("local", id="local"),
                 pytest.param("s3", id="s3", marks=pytest.mark.s3),
                 pytest.param("hdfs", id="hdfs", marks=pytest.mark.hdfs)]


@pytest.fixture(params=_STORE_PARAMS)
def store(request, tmp_path):
    """A fresh empty folder: ``.name``, ``.base_url``, ``.storage_options``,
    ``.url(rel)``, ``.put(rel, bytes)``, ``.get(rel)``."""
    if request.param == "local":
        return local_store(tmp_path / "store")
    if request.param == "s3":
        return s3_store(request.getfixturevalue("s3_server"))
    return hdfs_store(request.getfixturevalue("hdfs_server"))
