"""The loopback test servers themselves: real round trips through moto, HDFS
(hdfs-native and WebHDFS) and every fault kind of the fault proxy."""
from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from cloudrec.storage.fs import resolve
from cloudrec.testing import MotoServer
from cloudrec.testing.servers import port_open

BLOB = os.urandom(300_001)


# ---------------------------------------------------------------- stores
def test_store_round_trip(store):
    assert store.name in ("local", "s3", "hdfs")
    assert store.listdir() == []
    assert store.put("a/b/blob.bin", BLOB) == store.url("a/b/blob.bin")
    store.put("empty.bin", b"")
    assert store.get("a/b/blob.bin") == BLOB
    assert store.get("empty.bin") == b""
    assert store.listdir() == ["a", "empty.bin"]
    # the URL alone (plus options) reaches the same bytes through cloudrec's resolver
    fs, path = resolve(store.url("a/b/blob.bin"), store.storage_options)
    assert fs.cat_file(path, start=1000, end=1010) == BLOB[1000:1010]
    prefix = {"local": "/", "s3": "s3://", "hdfs": "hdfs://127.0.0.1:"}[store.name]
    assert store.base_url.startswith(prefix)


def test_store_is_fresh_each_time(store):
    assert store.listdir() == []  # nothing left from the previous test
    store.put("x", b"1")


def test_new_buckets_are_distinct_and_empty(s3_server):
    a, b = s3_server.new_bucket(), s3_server.new_bucket()
    assert a != b and a.startswith("s3://")
    fs = s3_server.filesystem()
    assert fs.ls(a) == [] and fs.ls(b) == []


def test_hdfs_native_and_webhdfs_see_the_same_files(hdfs_server):
    assert hdfs_server.url.startswith("hdfs://127.0.0.1:")
    assert hdfs_server.webhdfs_url.startswith("webhdfs://127.0.0.1:")
    nfs, npath = resolve(hdfs_server.url + "/svc/native.bin", hdfs_server.storage_options)
    wfs, wpath = resolve(hdfs_server.webhdfs_url + "/svc/web.bin", hdfs_server.storage_options)
    nfs.makedirs("/svc", exist_ok=True)
    with nfs.open(npath, "wb") as fh:
        fh.write(BLOB)
    with wfs.open(wpath, "wb") as fh:
        fh.write(BLOB[::-1])
    assert wfs.cat_file("/svc/native.bin") == BLOB
    assert nfs.cat_file("/svc/web.bin") == BLOB[::-1]
    with wfs.open("/svc/native.bin", "rb") as fh:
        fh.seek(123_456)
        assert fh.read(100) == BLOB[123_456:123_556]
    assert nfs.cat_file(npath, start=7, end=77) == BLOB[7:77]
    assert nfs.size(npath) == wfs.size("/svc/native.bin") == len(BLOB)


# ---------------------------------------------------------------- fault proxy
@pytest.fixture
def s3_object(s3_server, fault_proxy):
    """A 300 KB object put straight into moto; returns a presigned path+query
    for a GET through the proxy (moto refuses anonymous reads)."""
    bucket = s3_server.new_bucket()
    s3_server.filesystem().pipe_file(bucket + "/obj.bin", BLOB)
    url = s3_server.filesystem(client_kwargs={"endpoint_url": fault_proxy.endpoint_url}).url(
        bucket + "/obj.bin", expires=600)
    assert url.startswith(fault_proxy.endpoint_url + "/")
    return url[len(fault_proxy.endpoint_url):]


def _get(proxy, path: str, timeout: float = 10.0):
    """One raw GET through the proxy: (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_clean_proxy_passes_bytes_through(fault_proxy, s3_object):
    status, headers, body = _get(fault_proxy, s3_object)
    assert status == 200 and body == BLOB and int(headers["Content-Length"]) == len(BLOB)
    assert fault_proxy.stats() == {"requests": 1, "503": 0, "500": 0, "drop": 0, "trunc": 0,
                                   "stall": 0, "flip": 0, "403": 0, "ok": 1, "faults": 0}


def test_flip_inverts_the_middle_byte_of_a_body_and_keeps_its_length(fault_proxy, s3_object):
    fault_proxy.configure(pflip=1.0)
    status, headers, body = _get(fault_proxy, s3_object)
    assert status == 200 and len(body) == len(BLOB) == int(headers["Content-Length"])
    diff = [i for i in range(len(BLOB)) if body[i] != BLOB[i]]
    assert diff == [len(BLOB) // 2] and body[diff[0]] == BLOB[diff[0]] ^ 0xFF
    stats = fault_proxy.stats()
    assert stats["flip"] == 1 and stats["faults"] == 1 and stats["ok"] == 0


@pytest.mark.parametrize("rate,status,code", [("p503", 503, "SlowDown"), ("p500", 500, "InternalError"),
                                              ("p403", 403, "AccessDenied")])
def test_error_statuses_carry_s3_xml(fault_proxy, s3_object, rate, status, code):
    fault_proxy.configure(**{rate: 1.0})
    for _ in range(3):
        got, headers, body = _get(fault_proxy, s3_object)
        assert got == status
        assert headers["Content-Type"].startswith("application/xml")
        assert f"<Code>{code}</Code>".encode() in body
    stats = fault_proxy.stats()
    assert stats[str(status)] == 3 and stats["faults"] == 3 and stats["ok"] == 0


def test_drop_closes_without_a_response(fault_proxy, s3_object):
    fault_proxy.configure(pdrop=1.0)
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        _get(fault_proxy, s3_object)
    assert fault_proxy.stats()["drop"] == 1


def test_truncation_keeps_content_length_and_cuts_the_body(fault_proxy, s3_object):
    fault_proxy.configure(ptrunc=1.0)
    conn = http.client.HTTPConnection("127.0.0.1", fault_proxy.port, timeout=10)
    conn.request("GET", s3_object)
    resp = conn.getresponse()
    assert resp.status == 200 and int(resp.getheader("Content-Length")) == len(BLOB)
    with pytest.raises(http.client.IncompleteRead) as info:
        resp.read()
    conn.close()
    assert info.value.partial == BLOB[: len(BLOB) // 2]
    assert fault_proxy.stats()["trunc"] == 1


@pytest.mark.parametrize("stall_at", ["head", "body"])
def test_stall_outlasts_the_client_timeout(fault_proxy, s3_object, stall_at):
    fault_proxy.configure(pstall=1.0, stall_s=10.0, stall_at=stall_at)
    t0 = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", fault_proxy.port, timeout=0.5)
    conn.request("GET", s3_object)
    with pytest.raises(socket.timeout):
        resp = conn.getresponse()
        assert stall_at == "body" and resp.status == 200
        resp.read()
    conn.close()
    assert 0.4 < time.monotonic() - t0 < 8.0  # the client gave up long before the stall ended
    assert fault_proxy.stats()["stall"] == 1


def test_latency_is_added_per_request(fault_proxy, s3_object):
    fault_proxy.configure(latency_ms=150)
    t0 = time.monotonic()
    for _ in range(3):
        assert _get(fault_proxy, s3_object)[2] == BLOB
    assert time.monotonic() - t0 >= 0.45
    assert fault_proxy.stats()["ok"] == 3


def test_same_seed_same_faults_and_control_endpoint(fault_proxy, s3_object):
    def pattern():
        return [_get(fault_proxy, s3_object)[0] for _ in range(20)]
    fault_proxy.configure(p503=0.4, seed=7)
    first = pattern()
    fault_proxy.configure(p503=0.4, seed=7)
    assert pattern() == first and 0 < first.count(503) < 20
    assert fault_proxy.stats()["503"] == first.count(503)
    # rates change at run time through the control endpoint
    with urllib.request.urlopen(f"{fault_proxy.endpoint_url}/__faults?p503=0&p500=1") as r:
        assert json.loads(r.read())["config"]["p500"] == 1.0
    assert _get(fault_proxy, s3_object)[0] == 500
    with pytest.raises(ValueError):
        fault_proxy.configure(p503=0.7, p500=0.7)


def test_method_filter_and_fault_budget(fault_proxy, s3_server, s3_object):
    fault_proxy.configure(p503=1.0, methods="GET", max_faults=2)
    import s3fs
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **fault_proxy.storage_options)
    bucket = s3_object.split("/")[1]
    fs.pipe_file(f"{bucket}/copy.bin", b"abc")  # PUT goes through: not faulted
    assert fault_proxy.stats()["503"] == 0
    statuses = [_get(fault_proxy, s3_object)[0] for _ in range(4)]
    assert statuses == [503, 503, 200, 200]
    assert s3_server.filesystem().cat_file(f"{bucket}/copy.bin") == b"abc"


def test_fault_budget_holds_under_concurrency(fault_proxy, s3_object):
    from concurrent.futures import ThreadPoolExecutor
    fault_proxy.configure(ptrunc=1.0, max_faults=3)

    def fetch(_):
        try:
            return len(_get(fault_proxy, s3_object)[2])
        except http.client.IncompleteRead:
            return "trunc"
    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(fetch, range(10)))
    assert results.count("trunc") == 3 and results.count(len(BLOB)) == 7
    stats = fault_proxy.stats()
    assert (stats["trunc"], stats["faults"], stats["ok"], stats["requests"]) == (3, 3, 7, 10)


def test_s3fs_reads_intact_bytes_through_faults(fault_proxy, s3_server):
    bucket = s3_server.new_bucket()
    direct = s3_server.filesystem()
    blobs = {f"{bucket}/k{i}": os.urandom(50_000 + i) for i in range(8)}
    for key, data in blobs.items():
        direct.pipe_file(key, data)
    import s3fs
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **fault_proxy.storage_options)
    fault_proxy.configure(pdrop=0.15, ptrunc=0.15, seed=3, methods="GET")
    for key, data in blobs.items():
        assert fs.cat_file(key) == data
    stats = fault_proxy.stats()
    assert stats["drop"] > 0 and stats["trunc"] > 0
    assert stats["ok"] >= len(blobs)


# ---------------------------------------------------------------- lifecycle
def test_moto_server_stops_its_process(tmp_path):
    with MotoServer() as server:
        pid, port = server.pids["moto"], server.port
        assert port_open(port)
        assert server.new_bucket().startswith("s3://")
    assert not port_open(port)
    assert not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read().split()[2]


def test_services_cli_start_env_stop(tmp_path):
    env_file = tmp_path / "services.env"
    cli = [sys.executable, "-m", "cloudrec.cli", "services"]
    out = subprocess.run(cli + ["start", "--no-hdfs", "--env-file", str(env_file)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    try:
        env = subprocess.run(cli + ["env", "--env-file", str(env_file)], capture_output=True, text=True).stdout
        values = dict(line[len("export "):].split("=", 1) for line in env.splitlines())
        endpoint = values["CLOUDREC_S3_ENDPOINT"]
        pids = [int(p.split(":")[1]) for p in values["CLOUDREC_SERVICES_PIDS"].strip("'").split()]
        assert len(pids) == 2 and all(os.path.exists(f"/proc/{p}") for p in pids)
        assert MotoServer.existing(endpoint).new_bucket().startswith("s3://")
    finally:
        stop = subprocess.run(cli + ["stop", "--env-file", str(env_file)], capture_output=True, text=True,
                              timeout=60)
    assert stop.returncode == 0, stop.stderr
    assert not env_file.exists()
    port = int(endpoint.rsplit(":", 1)[1])
    assert not port_open(port)


def test_hdfs_start_failures_are_clear_errors(monkeypatch, tmp_path):
    from cloudrec.testing import HdfsCluster, ServiceError
    from cloudrec.testing import hdfs
    with pytest.raises(ServiceError, match="no java found"):
        HdfsCluster(java=str(tmp_path / "no-java"), workdir=str(tmp_path / "h1")).start()
    monkeypatch.setattr(hdfs, "JERSEY_DIR", tmp_path)  # as if libjersey1-*-java were not installed
    with pytest.raises(ServiceError, match="apt-get install libjersey1-server-java"):
        HdfsCluster(workdir=str(tmp_path / "h2")).start()
    assert (tmp_path / "h2" / "conf").is_dir()  # a failed start keeps its folder for a look
