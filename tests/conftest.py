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

import os

import pytest

from cloudrec.testing import FaultProxy, HdfsCluster, MotoServer
from cloudrec.testing.stores import hdfs_store, local_store, s3_store

# never let boto look for real credentials (or probe a metadata address off loopback)
for _key, _val in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                   "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}.items():
    os.environ.setdefault(_key, _val)
os.environ.pop("AWS_PROFILE", None)


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
