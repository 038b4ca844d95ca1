"""A one-node HDFS on 127.0.0.1 for the tests and demos: Hadoop 2.7.3's NameNode and DataNode.

The jars come from the pyspark 2.4.8 sdist on PyPI (fetched once per machine,
:func:`hadoop_jars`), WebHDFS needs Debian's Jersey 1; :class:`HdfsCluster`
starts both daemons on free ports like the other loopback servers of
:mod:`cloudrec.testing.servers`, and stops them by pid.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional

from cloudrec.testing.servers import (LOOPBACK, ServiceError, _locked, _log_tail, _Service,
                                      free_ports, stop_pid)

HADOOP_VERSION = "2.7.3"
PYSPARK_SDIST = "pyspark==2.4.8"
_JVM_OPENS = ["java.base/java.lang", "java.base/java.nio", "java.base/sun.nio.ch", "java.base/java.util",
              "java.base/java.lang.reflect", "java.base/java.io", "java.base/java.net",
              "java.base/jdk.internal.misc", "java.base/java.util.concurrent",
              "java.security.jgss/sun.security.krb5"]
_JERSEY1 = ["jsr311-api.jar", "jersey1-core.jar", "jersey1-server.jar", "jersey1-servlet.jar"]
JERSEY_DIR = Path("/usr/share/java")


def hdfs_cache_dir() -> Path:
    """Where the pyspark sdist and Hadoop jars are kept, once per machine."""
    return Path(os.environ.get("CLOUDREC_HDFS_CACHE", Path.home() / ".cache" / "cloudrec" / "hdfs"))


def hadoop_jars(cache: Optional[Path] = None) -> Path:
    """Folder of the Hadoop 2.7.3 jars, taken from the pyspark 2.4.8 sdist on PyPI.

    Downloads (``pip download``, ~220 MB, needs setuptools+wheel) and unpacks
    once per machine, under a file lock so parallel sessions share the work.
    """
    cache = cache or hdfs_cache_dir()
    jars = cache / f"jars-{HADOOP_VERSION}"
    if (jars / f"hadoop-hdfs-{HADOOP_VERSION}.jar").exists():
        return jars
    with _locked(cache / ".lock"):
        if (jars / f"hadoop-hdfs-{HADOOP_VERSION}.jar").exists():
            return jars
        dl = cache / "dl"
        sdists = sorted(dl.glob("pyspark-2.4.8.tar.gz"))
        if not sdists:
            dl.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, "-m", "pip", "download", "-q", PYSPARK_SDIST, "--no-deps",
                   "--no-build-isolation", "--no-binary", ":all:", "-d", str(dl)]
            res = subprocess.run(cmd, capture_output=True, text=True)
            sdists = sorted(dl.glob("pyspark-2.4.8.tar.gz"))
            if res.returncode != 0 or not sdists:
                raise ServiceError(f"could not download the {PYSPARK_SDIST} sdist for its Hadoop jars "
                                   f"({' '.join(cmd)} -> {res.returncode}):\n{res.stdout}\n{res.stderr}")
        tmp = Path(tempfile.mkdtemp(prefix="jars-", dir=cache))
        try:
            with tarfile.open(sdists[0], "r:gz") as tar:
                for member in tar:
                    parts = member.name.split("/")
                    if (member.isfile() and len(parts) == 4 and parts[1:3] == ["deps", "jars"]
                            and parts[3].endswith(".jar")):
                        src = tar.extractfile(member)
                        assert src is not None
                        with open(tmp / parts[3], "wb") as out:
                            shutil.copyfileobj(src, out, 1 << 20)
            if not (tmp / f"hadoop-hdfs-{HADOOP_VERSION}.jar").exists():
                raise ServiceError(f"{sdists[0]} holds no hadoop-hdfs-{HADOOP_VERSION}.jar")
            shutil.rmtree(jars, ignore_errors=True)
            tmp.rename(jars)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return jars


def _hdfs_classpath(conf: Path, jars: Path) -> str:
    """Jersey 1 (Debian) first; Spark's JAX-RS 2 / Jersey 2 jars left out (they clash)."""
    missing = [j for j in _JERSEY1 if not (JERSEY_DIR / j).exists()]
    if missing:
        raise ServiceError("WebHDFS needs Debian's Jersey 1 jars, missing: " + ", ".join(
            str(JERSEY_DIR / j) for j in missing) + " (apt-get install libjersey1-server-java "
            "libjersey1-servlet-java libjersey1-core-java)")
    cp = [str(conf)] + [str(JERSEY_DIR / j) for j in _JERSEY1]
    for jar in sorted(jars.glob("*.jar")):
        if not jar.name.startswith(("javax.ws.rs-api-", "jersey-")):
            cp.append(str(jar))
    return ":".join(cp)


def _site_xml(props: Dict[str, Any]) -> str:
    body = "".join(f" <property><name>{k}</name><value>{v}</value></property>\n" for k, v in props.items())
    return f"<?xml version=\"1.0\"?>\n<configuration>\n{body}</configuration>\n"


class HdfsCluster(_Service):
    """One NameNode + one DataNode (Hadoop 2.7.3 on Java 17) on free loopback ports.

    ``.url`` is ``hdfs://127.0.0.1:RPC`` (hdfs-native), ``.webhdfs_url`` is
    ``webhdfs://127.0.0.1:HTTP``; data lives in a temporary folder.
    """

    name = "hdfs"
    PORT_NAMES = ("rpc", "http", "dn_xfer", "dn_http", "dn_ipc")

    def __init__(self, *, heap_mb: int = 512, java: Optional[str] = None, start_timeout: float = 180.0,
                 **kw: Any) -> None:
        super().__init__(start_timeout=start_timeout, **kw)
        self.heap_mb = heap_mb
        self.java = java or os.environ.get("CLOUDREC_JAVA") or shutil.which("java") or "java"
        self.ports: Dict[str, int] = {}
        self.url = ""
        self.webhdfs_url = ""
        self.startup_seconds = 0.0

    @classmethod
    def existing(cls, url: str, webhdfs_url: str = "") -> "HdfsCluster":
        """Wrap an HDFS run elsewhere (not stopped by us)."""
        self = cls._external()
        self.url, self.webhdfs_url = url.rstrip("/"), webhdfs_url.rstrip("/")
        self.ports = {"rpc": urllib.parse.urlsplit(self.url).port or 8020}
        if webhdfs_url:
            self.ports["http"] = urllib.parse.urlsplit(self.webhdfs_url).port or 9870
        return self

    @property
    def storage_options(self) -> Dict[str, Any]:
        """Options for both ``hdfs://`` (host/port come from the URL) and ``webhdfs://``."""
        return {}

    @property
    def webhdfs_storage_options(self) -> Dict[str, Any]:
        return {"user": "root"}

    def _jvm(self, cp: str) -> List[str]:
        opts = [f"-Xmx{self.heap_mb}m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                "-Djava.net.preferIPv4Stack=true", f"-Dhadoop.log.dir={self.workdir / 'logs'}",
                f"-Dhadoop.home.dir={self.workdir}"]
        opts += [f"--add-opens={m}=ALL-UNNAMED" for m in _JVM_OPENS]
        return [self.java] + opts + ["-cp", cp]

    def _write_conf(self, conf: Path) -> None:
        base, p = self.workdir, self.ports
        for app in ("hdfs", "datanode", "secondary"):
            # HttpServer2 only needs webapps/<name> on the classpath (the Maven jar lacks it)
            web = conf / "webapps" / app / "WEB-INF"
            web.mkdir(parents=True, exist_ok=True)
            (web / "web.xml").write_text('<web-app xmlns="http://java.sun.com/xml/ns/javaee" version="2.5">'
                                         "</web-app>\n")
        (conf / "core-site.xml").write_text(_site_xml({
            "fs.defaultFS": f"hdfs://{LOOPBACK}:{p['rpc']}", "hadoop.tmp.dir": base / "tmp",
            "hadoop.http.staticuser.user": "root"}))
        (conf / "hdfs-site.xml").write_text(_site_xml({
            "dfs.replication": 1,
            "dfs.namenode.name.dir": f"file://{base / 'name'}",
            "dfs.datanode.data.dir": f"file://{base / 'data'}",
            "dfs.namenode.rpc-bind-host": LOOPBACK,
            "dfs.namenode.rpc-address": f"{LOOPBACK}:{p['rpc']}",
            "dfs.namenode.http-address": f"{LOOPBACK}:{p['http']}",
            "dfs.namenode.secondary.http-address": f"{LOOPBACK}:0",
            "dfs.datanode.address": f"{LOOPBACK}:{p['dn_xfer']}",
            "dfs.datanode.http.address": f"{LOOPBACK}:{p['dn_http']}",
            "dfs.datanode.ipc.address": f"{LOOPBACK}:{p['dn_ipc']}",
            "dfs.datanode.hostname": LOOPBACK,
            "dfs.namenode.datanode.registration.ip-hostname-check": "false",
            "dfs.permissions.enabled": "false",
            "dfs.webhdfs.enabled": "true",
            "dfs.namenode.safemode.extension": 0,
            "dfs.namenode.safemode.min.datanodes": 0,
            "dfs.blocksize": 64 << 20,
            "dfs.namenode.fs-limits.min-block-size": 1 << 16,
            "dfs.heartbeat.interval": 1,
        }))
        (conf / "log4j.properties").write_text(
            "log4j.rootLogger=INFO,console\nlog4j.appender.console=org.apache.log4j.ConsoleAppender\n"
            "log4j.appender.console.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.console.layout.ConversionPattern=%d{HH:mm:ss} %p %c{1}: %m%n\n")

    def _name_dir(self, cmd: List[str], env: Dict[str, str], cache: Path) -> None:
        """A formatted NameNode folder: copied from a per-machine template (one
        ``-format`` JVM run per machine, not per start)."""
        template = cache / f"name-template-{HADOOP_VERSION}"
        if not (template / "current" / "VERSION").exists():
            with _locked(cache / ".lock"):
                if not (template / "current" / "VERSION").exists():
                    log = self.workdir / "format.log"
                    with open(log, "wb") as fh:
                        res = subprocess.run(cmd + ["org.apache.hadoop.hdfs.server.namenode.NameNode",
                                                    "-format", "-force", "-nonInteractive"],
                                             stdout=fh, stderr=subprocess.STDOUT, env=env,
                                             cwd=str(self.workdir), timeout=self.start_timeout)
                    if res.returncode != 0 or not (self.workdir / "name" / "current" / "VERSION").exists():
                        raise ServiceError(f"hdfs: NameNode -format failed ({res.returncode})\n"
                                           + _log_tail(log))
                    tmp = Path(tempfile.mkdtemp(prefix="name-", dir=cache))
                    shutil.copytree(self.workdir / "name", tmp / "n")
                    shutil.rmtree(template, ignore_errors=True)
                    (tmp / "n").rename(template)
                    shutil.rmtree(tmp, ignore_errors=True)
                    return
        shutil.rmtree(self.workdir / "name", ignore_errors=True)
        shutil.copytree(template, self.workdir / "name")

    def _ready(self) -> bool:
        http = f"http://{LOOPBACK}:{self.ports['http']}"
        try:
            with urllib.request.urlopen(f"{http}/jmx?qry=Hadoop:service=NameNode,name=FSNamesystemState",
                                        timeout=2) as r:
                beans = json.loads(r.read()).get("beans", [{}])
            if not beans or beans[0].get("NumLiveDataNodes") != 1:
                return False
            with urllib.request.urlopen(f"{http}/jmx?qry=Hadoop:service=NameNode,name=NameNodeInfo",
                                        timeout=2) as r:
                info = json.loads(r.read()).get("beans", [{}])
            if not info or info[0].get("Safemode"):
                return False
            with urllib.request.urlopen(f"{http}/webhdfs/v1/?op=GETFILESTATUS&user.name=root", timeout=2) as r:
                return r.status == 200
        except (OSError, ValueError):
            return False

    def _start(self) -> None:
        t0 = time.monotonic()
        if not Path(self.java).exists() and not shutil.which(self.java):
            raise ServiceError(f"hdfs: no java found ({self.java}); install Java 17 (openjdk-17-jre-headless)")
        cache = hdfs_cache_dir()
        jars = hadoop_jars(cache)
        for attempt in range(3):
            try:
                self._start_once(jars, cache)
                break
            except ServiceError as exc:
                if attempt == 2 or "BindException" not in str(exc) and "Address already in use" not in str(exc):
                    raise
                for label in list(self.procs):  # a port was taken meanwhile: new ports, new try
                    stop_pid(self.procs.pop(label).pid)
        self.startup_seconds = time.monotonic() - t0

    def _start_once(self, jars: Path, cache: Path) -> None:
        self.ports = dict(zip(self.PORT_NAMES, free_ports(len(self.PORT_NAMES))))
        for sub in ("conf", "logs", "data", "tmp"):
            shutil.rmtree(self.workdir / sub, ignore_errors=True)
            (self.workdir / sub).mkdir(parents=True)
        conf = self.workdir / "conf"
        self._write_conf(conf)
        cmd = self._jvm(_hdfs_classpath(conf, jars))
        env = dict(os.environ, HADOOP_USER_NAME=os.environ.get("HADOOP_USER_NAME", "root"))
        self._name_dir(cmd, env, cache)
        self._spawn("namenode", cmd + ["org.apache.hadoop.hdfs.server.namenode.NameNode"], env)
        self._spawn("datanode", cmd + ["org.apache.hadoop.hdfs.server.datanode.DataNode"], env)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            self._check_alive()
            if self._ready():
                self.url = f"hdfs://{LOOPBACK}:{self.ports['rpc']}"
                self.webhdfs_url = f"webhdfs://{LOOPBACK}:{self.ports['http']}"
                return
            time.sleep(0.25)
        raise ServiceError(f"hdfs: not ready after {self.start_timeout:.0f} s (ports {self.ports})\n"
                           + _log_tail(self.workdir / "namenode.log") + "\n"
                           + _log_tail(self.workdir / "datanode.log"))

    def rss_mb(self) -> Dict[str, float]:
        """Resident memory of each JVM in MB (from /proc)."""
        out = {}
        for label, pid in self.pids.items():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        out[label] = int(line.split()[1]) / 1024
        return out
