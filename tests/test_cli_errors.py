"""Every CLI error is one line on stderr with a non-zero exit code and no traceback;
``--debug`` shows the traceback; a missing optional extra names its pip install."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cloudrec.cli import main

CLOUDREC = [sys.executable, "-m", "cloudrec.cli"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def _run(args, env=None, timeout=120):
    full_env = {**os.environ, **(env or {})}
    full_env.pop("CLOUDREC_DEBUG", None)
    return subprocess.run(CLOUDREC + list(args), capture_output=True, text=True, env=full_env,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def _unreachable_env():
    return {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{_closed_port()}",
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


def test_unreachable_s3_endpoint_is_one_line_without_traceback():
    env = _unreachable_env()
    res = _run(["index", "s3://bucket/train.rec"], env)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("cloudrec index: error: ") and "EndpointConnectionError" in lines[0]
    assert env["AWS_ENDPOINT_URL"] in lines[0] and "Traceback" not in res.stderr


def test_debug_flag_shows_the_traceback_before_or_after_the_command():
    env = _unreachable_env()
    for args in (["--debug", "index", "s3://bucket/train.rec"],
                 ["index", "s3://bucket/train.rec", "--debug"]):
        res = _run(args, env)
        assert res.returncode == 1
        assert "Traceback (most recent call last)" in res.stderr
        assert res.stderr.strip().splitlines()[-1].startswith("cloudrec index: error:")


def test_cloudrec_error_is_one_line(tmp_path, capsys):
    assert main(["index", str(tmp_path / "missing.rec")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cloudrec index: error:")
    assert "missing.rec" in err[0]


def test_usage_error_is_one_line_naming_the_command(capsys):
    with pytest.raises(SystemExit) as info:
        main(["cache", "ls", "--bogus"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["cloudrec cache: error: unrecognized arguments: --bogus "
                   "(see `cloudrec cache --help`)"]


def test_missing_required_argument_is_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        main(["im2rec", "only-prefix"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "required: root" in err[0] and "cloudrec im2rec" in err[0]


@pytest.mark.parametrize("blocked", ["moto", "sklearn"])
def test_demo_without_its_extra_names_the_pip_install(blocked, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, blocked, None)  # as if the package were not installed
    if blocked == "sklearn":  # no sample photo from any of the three packages
        for mod in ("matplotlib", "skimage"):
            monkeypatch.setitem(sys.modules, mod, None)
    rc = main(["demo", "--workdir", str(tmp_path / "w"), "--images", "4"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1, err
    assert "pip install 'cloudrec[demo]'" in err[0] and repr(blocked) in err[0]
    assert not (tmp_path / "w" / "photos").exists()  # it failed before doing any work


def test_module_import_failure_names_the_extra(capsys, monkeypatch):
    from cloudrec.tools import cli_support
    exc = ModuleNotFoundError("No module named 'hdfs_native'", name="hdfs_native")
    assert cli_support.report_error("cloudrec index", exc) == 1
    err = capsys.readouterr().err.strip()
    assert err == ("cloudrec index: error: needs the optional package 'hdfs_native', which is "
                   "not installed: pip install 'cloudrec[hdfs]'")


def test_unexpected_exception_is_one_line_with_its_type(capsys, monkeypatch):
    from cloudrec.tools import cache
    monkeypatch.setattr(cache, "_ls", lambda ns: (_ for _ in ()).throw(
        KeyError("line one\nline two")))
    # the parser is built after the patch, so `cache ls` runs the patched function
    assert main(["cache", "ls", "--dir", "/nonexistent-ok"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["cloudrec cache: error: KeyError: 'line one\\nline two' "
                   "(--debug shows the traceback)"]


def test_version_matches_the_package_metadata(capsys):
    from importlib.metadata import version
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"cloudrec {version('cloudrec')}"


def test_python_m_im2rec_errors_are_one_line(tmp_path):
    res = subprocess.run([sys.executable, "-m", "cloudrec.tools.im2rec", str(tmp_path / "p"),
                          str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("im2rec: error:"), res.stderr
    assert str(Path(tmp_path)) in lines[0]


@pytest.mark.parametrize("blocked,url,extra", [
    ("hdfs_native", "hdfs://127.0.0.1:1/x.rec", "hdfs"),  # fsspec wraps the ImportError
    ("adlfs", "az://container/x.rec", "azure"),           # fsspec's own "Install adlfs" message
])
def test_missing_storage_backend_names_its_extra(blocked, url, extra):
    # a fresh interpreter in which the backend package cannot be imported, as if absent
    code = (f"import sys; sys.modules[{blocked!r}] = None; from cloudrec.cli import main; "
            f"sys.exit(main(['index', {url!r}]))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, stdin=subprocess.DEVNULL)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        f"cloudrec index: error: needs the optional package {blocked!r}, which is not "
        f"installed: pip install 'cloudrec[{extra}]'"]
