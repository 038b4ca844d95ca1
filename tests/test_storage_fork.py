"""fork() after remote I/O: children start promptly, never hang.

hdfs-native runs on a process-wide tokio runtime that fork() does not copy,
and fsspec drops its cached filesystems in a forked child: without cloudrec's
at-fork keep-alive the child blocked forever in the hdfs-native destructor.
"""
from __future__ import annotations

import os
import time

import pytest

from cloudrec.errors import StorageError
from cloudrec.storage.fs import HDFS_FORK_MESSAGE, resolve


def _fork_and_wait(child_fn, timeout: float = 20.0) -> int:
    pid = os.fork()
    if pid == 0:  # child
        try:
            code = child_fn()
        except BaseException:
            code = 99
        os._exit(code)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("forked child hung")


def test_fork_after_hdfs_use(hdfs_server):
    fs, path = resolve(hdfs_server.url + "/fork/x.bin", hdfs_server.storage_options)
    fs.pipe(path, b"payload")
    assert fs.cat(path) == b"payload"
    del fs
    # a child that does no HDFS I/O exits promptly (it used to hang in fsspec's at-fork reset)
    assert _fork_and_wait(lambda: 0) == 0

    def child_uses_hdfs() -> int:
        try:
            resolve(hdfs_server.url + "/fork/x.bin", hdfs_server.storage_options)
        except StorageError as exc:
            return 7 if HDFS_FORK_MESSAGE in str(exc) else 8
        return 0
    # a child that would use hdfs-native gets a clear error instead of blocking forever
    assert _fork_and_wait(child_uses_hdfs) == 7


def test_fork_after_s3_use_reads_in_child(s3_server):
    bucket = s3_server.new_bucket()
    fs, path = resolve(bucket + "/x.bin", s3_server.storage_options)
    fs.pipe(path, b"s3 bytes")
    assert fs.cat(path) == b"s3 bytes"

    def child_reads() -> int:
        fs2, p2 = resolve(bucket + "/x.bin", s3_server.storage_options)
        return 0 if fs2.cat(p2) == b"s3 bytes" else 3
    t0 = time.monotonic()
    assert _fork_and_wait(child_reads) == 0
    assert time.monotonic() - t0 < 15


def test_forked_child_reuses_the_parsed_s3_service_model(s3_server):
    """A worker forked after S3 use must not parse botocore's S3 model again (that parse was
    most of a DataLoader worker's start-up CPU): its new client reads through the
    parent's loader, and no service JSON file is loaded in the child."""
    import botocore.loaders
    import botocore.session

    bucket = s3_server.new_bucket()
    fs, path = resolve(bucket + "/m.bin", s3_server.storage_options)
    fs.pipe(path, b"model")
    parent_loader = botocore.session.create_loader(None)
    assert botocore.session.create_loader(None) is parent_loader      # one per search path
    assert any("s3" in str(k) for k in parent_loader._cache)          # the parent parsed it

    def child_reads_without_parsing() -> int:
        loads = []
        real = botocore.loaders.JSONFileLoader.load_file

        def counting(self, file_path):
            loads.append(file_path)
            return real(self, file_path)
        botocore.loaders.JSONFileLoader.load_file = counting
        fs2, p2 = resolve(bucket + "/m.bin", s3_server.storage_options)
        if fs2 is fs:
            return 4   # fsspec must have dropped the parent's instance
        if fs2.cat(p2) != b"model":
            return 3
        return 0 if not any("s3" in p for p in loads) else 5
    assert _fork_and_wait(child_reads_without_parsing) == 0


def test_forked_child_reuses_the_tls_context(s3_server):
    """A worker forked after S3 use must not build a TLS context and load the CA bundle
    again (55-75 ms of CPU per fresh session): its new session takes the parent's."""
    from cloudrec.storage import ssl_share

    bucket = s3_server.new_bucket()
    fs, path = resolve(bucket + "/t.bin", s3_server.storage_options)
    fs.pipe(path, b"tls")
    assert fs.cat(path) == b"tls"
    parent_ctxs = ssl_share.shared_contexts()
    assert parent_ctxs and all(c.verify_mode != 0 for c in parent_ctxs)   # built, verifying
    built = ssl_share.built()

    def child_reads_without_building() -> int:
        from aiobotocore.httpsession import AIOHTTPSession
        builds = []
        real = AIOHTTPSession._build_verify_context

        def counting(self):
            builds.append(1)
            return real(self)
        AIOHTTPSession._build_verify_context = counting
        fs2, p2 = resolve(bucket + "/t.bin", s3_server.storage_options)
        if fs2 is fs:
            return 4   # fsspec must have dropped the parent's instance
        if fs2.cat(p2) != b"tls":
            return 3
        if [id(c) for c in ssl_share.shared_contexts()] != [id(c) for c in parent_ctxs]:
            return 5
        if builds or ssl_share.built() != built:
            return 6
        ssl_share._shared.results.clear()   # the counter does see a build when nothing is shared
        fs3, p3 = resolve(bucket + "/t.bin", dict(s3_server.storage_options, skip_instance_cache=True))
        return 0 if fs3.cat(p3) == b"tls" and len(builds) == 1 else 7
    assert _fork_and_wait(child_reads_without_building) == 0


def test_tls_contexts_are_shared_per_setting_only(tmp_path):
    """One context per verify setting; a client certificate or a proxy gets its own (those
    steps modify the context), and a changed CA bundle file a new one."""
    import shutil
    import ssl

    import certifi
    from aiobotocore.httpsession import AIOHTTPSession

    from cloudrec.storage.ssl_share import share_ssl_contexts
    assert share_ssl_contexts()

    def ctx(**kw):
        return AIOHTTPSession(**kw)._build_ssl_contexts(kw.pop("_proxy", None))[0]
    on, off = ctx(verify=True), ctx(verify=False)
    assert ctx(verify=True) is on and ctx(verify=False) is off and on is not off
    assert on.verify_mode == ssl.CERT_REQUIRED and on.check_hostname
    assert off.verify_mode == ssl.CERT_NONE and not off.check_hostname
    bundle = str(tmp_path / "ca.pem")
    shutil.copy(certifi.where(), bundle)
    mine = ctx(verify=bundle)
    assert mine is not on and ctx(verify=bundle) is mine
    with open(bundle, "a") as fh:           # the bundle changed: its context is rebuilt
        fh.write("\n")
    assert ctx(verify=bundle) is not mine
    with pytest.raises((OSError, ssl.SSLError)):   # a missing bundle still fails as before
        ctx(verify=str(tmp_path / "missing.pem"))
    session = AIOHTTPSession(verify=True)
    assert session._build_ssl_contexts("http://127.0.0.1:9")[0] is not on   # via a proxy


def test_concurrent_forks_keep_each_childs_filesystems_alive(tmp_path):
    """Two threads forking at once: the first fork's after-fork hook must not drop the
    keep-alive the second child still needs (it then hung in fsspec's at-fork reset,
    finalizing an s3fs instance on a dead event loop)."""
    from cloudrec.storage import fs as fsmod
    fs, _ = resolve(str(tmp_path / "x"))
    fsmod._before_fork()          # thread A about to fork
    fsmod._before_fork()          # thread B about to fork
    fsmod._after_fork_in_parent()  # A's fork returned in the parent; B has not forked yet
    assert any(f is fs for f in fsmod._fork_keepalive)
    fsmod._after_fork_in_parent()  # B's fork returned too
    assert fsmod._fork_keepalive == [] and fsmod._forking == 0
