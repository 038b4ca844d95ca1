"""YAML configs: the shipped files load, env expansion, unknown keys named."""
from __future__ import annotations

from pathlib import Path

import pytest

from cloudrec import load_config
from cloudrec.config import config_from_dict, parse_size
from cloudrec.errors import ConfigError

CONFIGS = sorted((Path(__file__).parent.parent / "cloudrec" / "configs").glob("*.yaml"))


def test_all_shipped_configs_load():
    assert {p.name for p in CONFIGS} >= {"imagenet-train.yaml", "imagenet-val.yaml",
                                         "faces-112.yaml", "detection.yaml"}
    for p in CONFIGS:
        load_config(p)


def test_imagenet_train_values(monkeypatch):
    monkeypatch.setenv("CLOUDREC_DATA", "s3://b/train-{0000..0003}.rec")
    monkeypatch.setenv("CLOUDREC_S3_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    c = load_config("imagenet-train")   # packaged config, by name
    kw = c.iterator_kwargs(batch_size=8)
    assert kw["path_imgrec"] == "s3://b/train-{0000..0003}.rec"
    assert kw["data_shape"] == (3, 224, 224) and kw["batch_size"] == 8
    opts = c.storage.storage_options()
    assert opts["client_kwargs"]["endpoint_url"] == "http://127.0.0.1:9"
    assert (opts["key"], opts["secret"]) == ("k", "s")
    assert c.storage.cache_mode == "auto" and c.storage.cache_max_bytes == 200 * 1024 ** 3


@pytest.mark.parametrize("raw,needle", [
    ({"storag": {}}, "'storage'"),
    ({"data": {"path_imgrc": "x"}}, "'path_imgrec'"),
    ({"storage": {"cache": {"max_byte": 1}}}, "'max_bytes'"),
    ({"iterator": "ImageRecordIterator"}, "'ImageRecordIter'"),
    ({"storage": {"cache": {"mode": "always"}}}, "none, shards or auto"),
])
def test_unknown_keys_are_named(raw, needle):
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw)
    assert needle in str(info.value)


def test_env_default_and_missing(monkeypatch):
    monkeypatch.delenv("CLOUDREC_NOPE", raising=False)
    assert config_from_dict({"data": {"path_imgrec": "${CLOUDREC_NOPE:-a.rec}"}}).data == \
        {"path_imgrec": "a.rec"}
    with pytest.raises(ConfigError, match="CLOUDREC_NOPE"):
        config_from_dict({"data": {"path_imgrec": "${CLOUDREC_NOPE}"}})


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(bad)


def test_parse_size():
    assert parse_size("512MB") == 512 * 1024 ** 2
    assert parse_size("1.5GiB") == int(1.5 * 1024 ** 3)
    assert parse_size(7) == 7
    with pytest.raises(ConfigError):
        parse_size("lots")


def test_cli_config_sets_storage_options_and_cache_dir(tmp_path, monkeypatch, capsys):
    from cloudrec.cli import build_parser, apply_config, main
    cfg = tmp_path / "c.yaml"
    cfg.write_text("storage:\n  endpoint_url: http://127.0.0.1:9\n"
                   f"  cache:\n    dir: {tmp_path / 'cachedir'}\n")
    ns = build_parser(["inspect"]).parse_args(["--config", str(cfg), "inspect", "x.rec"])
    apply_config(ns)
    assert ns.storage_options["client_kwargs"]["endpoint_url"] == "http://127.0.0.1:9"
    # an explicit flag wins over the config
    ns = build_parser(["inspect"]).parse_args(
        ["--config", str(cfg), "inspect", "x.rec", "--storage-options", '{"anon": true}'])
    apply_config(ns)
    assert ns.storage_options == {"anon": True}
    assert main(["--config", str(cfg), "cache", "ls"]) == 0
    assert str(tmp_path / "cachedir") in capsys.readouterr().out


def test_cli_config_unknown_key_is_a_clear_error(tmp_path, capsys):
    from cloudrec.cli import main
    cfg = tmp_path / "c.yaml"
    cfg.write_text("storage:\n  endpoint: x\n")
    assert main(["--config", str(cfg), "cache", "ls"]) == 1
    assert "unknown key 'endpoint'" in capsys.readouterr().err
