"""The built wheel works outside the clone: install it non-editable into a fresh venv and
load a config by name (configs are package data), with the console script and its
``--version``; the build prints no setuptools deprecation warning (SPDX licence field).

Offline and fast: the wheel is built with this venv's setuptools (no build isolation), the
fresh venv has no pip of its own (this pip installs into it with ``--python``), and it
borrows this venv's dependencies through a ``.pth`` line, which adds the folder but not
the editable-install hook inside it, so ``import cloudrec`` can only find the wheel's copy.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _copy_sources(dst: Path) -> None:
    """What the wheel is built from (a copy, so the build leaves nothing in the checkout)."""
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, dst / name)
    shutil.copytree(REPO / "cloudrec", dst / "cloudrec",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    src, wheels, env_dir = tmp / "src", tmp / "wheels", tmp / "venv"
    src.mkdir()
    _copy_sources(src)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps",
                            "--no-build-isolation", "--no-index", "-w", str(wheels), str(src)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (wheel,) = wheels.glob("cloudrec-*.whl")
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    inst = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                           "--no-deps", "--no-index", str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert inst.returncode == 0, inst.stdout + inst.stderr
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                              "['purelib'])"], capture_output=True, text=True, check=True
                             ).stdout.strip()
    Path(purelib, "_borrowed_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return dict(python=python, env_dir=env_dir, build_log=build.stdout + build.stderr,
                install_log=inst.stdout + inst.stderr, workdir=tmp)


def _env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.pop("VIRTUAL_ENV", None)
    return env


def test_fresh_venv_loads_a_config_by_name(installed):
    code = ("import json, cloudrec; c = cloudrec.load_config('imagenet-val'); "
            "print(json.dumps([cloudrec.__file__, c.params['resize'], c.params['batch_size'],"
            " c.iterator]))")
    res = subprocess.run([str(installed["python"]), "-c", code], capture_output=True, text=True,
                         cwd=installed["workdir"], env=_env(), timeout=120)
    assert res.returncode == 0, res.stderr
    path, resize, batch, iterator = json.loads(res.stdout)
    assert Path(path).resolve().is_relative_to(installed["env_dir"].resolve())  # not the clone
    assert (resize, batch, iterator) == (256, 250, "ImageRecordIter")


def test_console_script_lists_and_shows_configs(installed):
    bin_dir = installed["env_dir"] / "bin"
    res = subprocess.run([str(bin_dir / "cloudrec"), "config", "list"], capture_output=True,
                         text=True, cwd=installed["workdir"], env=_env(), timeout=120)
    assert res.returncode == 0, res.stderr
    assert [line.split()[0] for line in res.stdout.splitlines()][:4] == [
        "detection", "faces-112", "imagenet-train", "imagenet-val"]
    show = subprocess.run([str(bin_dir / "cloudrec"), "config", "show", "imagenet-train"],
                          capture_output=True, text=True, cwd=installed["workdir"], env=_env(),
                          timeout=120)
    assert show.returncode == 0 and "random_resized_crop: true" in show.stdout
    ver = subprocess.run([str(bin_dir / "cloudrec"), "--version"], capture_output=True,
                         text=True, env=_env(), timeout=60)
    import cloudrec
    assert ver.stdout.strip() == f"cloudrec {cloudrec.__version__}"


def test_wheel_carries_the_licence_and_builds_without_deprecation_warnings(installed):
    log = installed["build_log"]
    assert "SetuptoolsDeprecationWarning" not in log, log[-3000:]
    assert "ERROR" not in installed["install_log"]
    dist = list((Path(str(installed["python"].parent.parent)) / "lib").glob(
        "python*/site-packages/cloudrec-*.dist-info"))
    assert len(dist) == 1
    meta = (dist[0] / "METADATA").read_text()
    assert "License-Expression: Apache-2.0" in meta
    licence = next(dist[0].rglob("LICENSE"))
    assert licence.read_text() == (REPO / "LICENSE").read_text()
    assert "Apache License" in licence.read_text() and "Version 2.0" in licence.read_text()
