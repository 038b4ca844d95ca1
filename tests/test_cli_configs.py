"""Configs are package data: load_config by name and by path, `cloudrec config list/show`,
`cloudrec --config NAME`."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import cloudrec
from cloudrec.cli import main
from cloudrec.configs import config_names, config_path, resolve_config
from cloudrec.errors import ConfigError

PACKAGED = Path(cloudrec.__file__).parent / "configs"


def test_packaged_configs_live_inside_the_package():
    names = config_names()
    assert {"imagenet-train", "imagenet-val", "faces-112", "detection", "storage-s3-local",
            "storage-hdfs"} <= set(names)
    for name in names:
        path = Path(config_path(name))
        assert path.parent == PACKAGED and path.name == f"{name}.yaml"


@pytest.mark.parametrize("spelling", ["imagenet-train", "imagenet-train.yaml",
                                      str(PACKAGED / "imagenet-train.yaml")])
def test_load_config_by_name_and_by_path(spelling, monkeypatch):
    monkeypatch.setenv("CLOUDREC_DATA", "s3://b/train-{0000..0003}.rec")
    cfg = cloudrec.load_config(spelling)
    assert cfg.iterator == "ImageRecordIter"
    assert cfg.iterator_kwargs()["path_imgrec"] == "s3://b/train-{0000..0003}.rec"
    assert cfg.params["data_shape"] == [3, 224, 224] and cfg.params["batch_size"] == 256


def test_a_local_file_wins_over_a_packaged_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("imagenet-val").write_text("params:\n  batch_size: 7\n")
    assert resolve_config("imagenet-val") == "imagenet-val"
    assert cloudrec.load_config("imagenet-val").params == {"batch_size": 7}


def test_unknown_name_suggests_the_closest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="did you mean 'imagenet-val'") as info:
        cloudrec.load_config("imagenet-vall")
    assert "imagenet-train" in str(info.value)  # the list of packaged names
    with pytest.raises(ConfigError, match="not found"):
        cloudrec.load_config("config/imagenet-val.yaml")  # a path is never guessed


def test_config_list_prints_every_name_with_its_description(capsys):
    assert main(["config", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == config_names()
    assert any(line.startswith("imagenet-val") and "centre crop 224" in line for line in out)


def test_config_show_prints_the_file_as_shipped(capsys):
    assert main(["config", "show", "imagenet-val"]) == 0
    out = capsys.readouterr().out
    assert out == (PACKAGED / "imagenet-val.yaml").read_text()
    assert yaml.safe_load(out)["params"]["resize"] == 256


def test_config_show_resolved_and_path(capsys, monkeypatch):
    monkeypatch.setenv("CLOUDREC_S3_ENDPOINT", "http://127.0.0.1:9")
    assert main(["config", "show", "storage-s3-local", "--resolved"]) == 0
    values = json.loads(capsys.readouterr().out)  # the loaded Config, ${VAR}s expanded
    assert values["storage"]["endpoint_url"] == "http://127.0.0.1:9"
    assert "${" not in json.dumps(values)
    assert main(["config", "show", "detection", "--path"]) == 0
    assert capsys.readouterr().out.strip() == str(PACKAGED / "detection.yaml")


def test_config_show_unknown_is_one_line(capsys):
    assert main(["config", "show", "nope"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cloudrec config: error:") and "packaged" in err[0]


def test_global_config_option_takes_a_name(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("CLOUDREC_CACHE_DIR", str(tmp_path / "envcache"))
    assert main(["--config", "storage-s3-local", "cache", "ls"]) == 0
    # the packaged YAML leaves the folder to the one default: $CLOUDREC_CACHE_DIR here
    assert str(tmp_path / "envcache") in capsys.readouterr().out


def test_no_packaged_config_names_a_cache_folder_of_its_own():
    """One default cache folder: the YAMLs leave `storage.cache.dir` to it."""
    for name in config_names():
        raw = yaml.safe_load((PACKAGED / f"{name}.yaml").read_text()) or {}
        assert "dir" not in ((raw.get("storage") or {}).get("cache") or {}), name
