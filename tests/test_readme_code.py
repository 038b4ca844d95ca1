"""The README's code runs as written: its Quick start blocks (local files, S3, HDFS, PyTorch
on images of mixed sizes, the YAML recipe) and the MXNet porting snippet.

Each block is taken from README.md at test time.  The only substitutions are where the
README names a server or bucket the reader would have: ``s3://bucket/`` becomes a fresh
bucket on the loopback moto server, ``http://127.0.0.1:5555`` its endpoint and
``hdfs://namenode:9000`` the loopback HDFS.  Shell lines run in bash with this venv's
``cloudrec`` first on PATH; Python blocks run in order in one namespace per test, as in a
reader's session, in a folder holding ``./images`` (three classes of JPEGs of mixed sizes).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, List

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.M | re.S)
N_IMAGES = 45


def _section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end > 0 else None]


def _block(lang: str, needle: str, section: str = "Quick start") -> str:
    """The one ``lang`` fenced block of ``section`` whose text contains ``needle``."""
    found = [body for kind, body in FENCE.findall(_section(section))
             if kind == lang and needle in body]
    assert len(found) == 1, f"{len(found)} {lang} blocks in {section!r} contain {needle!r}"
    return found[0]


def _make_images(root: Path) -> None:
    """Three class folders of photo-like JPEGs, every one of another size (230-420 px)."""
    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        folder = root / f"class{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        h, w = int(rng.integers(230, 420)), int(rng.integers(230, 420))
        base = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
        img = (base * np.array([1.0, 0.6, 0.3]) * (1 + i % 3) / 3 + rng.normal(0, 12, (h, w, 3)))
        assert cv2.imwrite(str(folder / f"{i:03d}.jpg"), np.clip(img, 0, 255).astype(np.uint8))


def _shell(block: str, cwd: Path, env: Dict[str, str]) -> List[str]:
    """Run each command line of a bash block (comments kept: bash ignores them)."""
    outputs = []
    for line in block.splitlines():
        if not line.strip() or line.lstrip().startswith(("#", "pip install")):
            continue  # comments; the install line is what made this venv
        res = subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True,
                             text=True, timeout=300, stdin=subprocess.DEVNULL)
        assert res.returncode == 0, f"{line}\n{res.stdout}\n{res.stderr}"
        outputs.append(res.stdout)
    return outputs


def _exec(code: str, ns: dict) -> dict:
    exec(compile(textwrap.dedent(code), "<README>", "exec"), ns)
    return ns


def _imports(code: str) -> str:
    return "\n".join(line for line in code.splitlines() if line.startswith(("from ", "import ")))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("readme")
    _make_images(d / "images")
    return d


@pytest.fixture
def in_workdir(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("CLOUDREC_CACHE_DIR", str(workdir / "cache"))  # cache="auto" lands here
    return workdir


def _cli_env(extra: Dict[str, str] = ()) -> Dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra or {})
    return env


@pytest.fixture(scope="module")
def s3(s3_server, workdir):
    """The README's S3 commands, run once against a fresh bucket: list, pack 8 shards,
    inspect with a contact sheet."""
    bucket = s3_server.new_bucket("readme")
    env = _cli_env({"AWS_ENDPOINT_URL": s3_server.endpoint_url,
                    "AWS_ACCESS_KEY_ID": s3_server.storage_options["key"],
                    "AWS_SECRET_ACCESS_KEY": s3_server.storage_options["secret"],
                    "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"})
    block = _block("bash", "s3://bucket/imgs/train").replace("s3://bucket/", bucket + "/")
    outputs = _shell(block, workdir, env)
    return dict(bucket=bucket, env=env, outputs=outputs, server=s3_server)


def _s3_code(code: str, s3) -> str:
    return (code.replace("s3://bucket/", s3["bucket"] + "/")
                .replace("http://127.0.0.1:5555", s3["server"].endpoint_url))


# -- the blocks ------------------------------------------------------------------------------------

def test_install_block_commands_run():
    out = _shell(_block("bash", "pip install -e ."), REPO, _cli_env())
    import cloudrec
    assert out[0].strip() == f"cloudrec {cloudrec.__version__}"
    assert "imagenet-train" in out[1] and "storage-s3-local" in out[1]


def test_local_files_pack_and_read(in_workdir):
    _shell(_block("bash", "--recursive train ./images"), in_workdir, _cli_env())
    assert (in_workdir / "train.rec").stat().st_size > 0 and (in_workdir / "train.idx").exists()
    ns = _exec(_block("python", 'MXIndexedRecordIO("train.idx"'), {})
    try:
        assert ns["img"].ndim == 3 and ns["img"].dtype == np.uint8 and ns["img"].shape[2] == 3
        assert ns["header"].label in (0.0, 1.0, 2.0)
        batch = ns["batch"]  # the last batch of the loop the README runs
        assert batch.data[0].shape == (64, 3, 224, 224) and batch.data[0].dtype == np.float32
        assert ns["it"].num_batches == 1 and batch.pad == 64 - N_IMAGES
    finally:
        ns["it"].close()
        ns["rec"].close()


def test_s3_commands_pack_eight_shards_and_draw_a_sheet(s3, workdir):
    fs = s3["server"].filesystem()
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(s3["bucket"] + "/imgs"))
    assert [n for n in names if n.endswith(".rec")] == [
        f"train-{i:05d}-of-00008.rec" for i in range(8)]
    assert "train.lst" in names
    sheet = workdir / "sheet.png"
    assert cv2.imread(str(sheet)) is not None
    assert str(N_IMAGES) in s3["outputs"][2]  # inspect counted every record


def test_s3_iterator_block(s3, in_workdir):
    ns = _exec(_imports(_block("python", 'MXIndexedRecordIO("train.idx"')), {})
    _exec(_s3_code(_block("python", "shuffle_mode=\"block\""), s3), ns)
    it = ns["it"]
    try:
        seen = []
        for batch in it:
            assert batch.data[0].shape == (64, 3, 224, 224)
            seen += [int(i) for i in batch.index[:64 - batch.pad]]
        assert len(seen) == N_IMAGES and len(set(seen)) == N_IMAGES
    finally:
        it.close()


@pytest.mark.hdfs
def test_hdfs_block(hdfs_server, in_workdir):
    from cloudrec.storage.fs import resolve
    if not (in_workdir / "train.rec").exists():
        _shell(_block("bash", "--recursive train ./images"), in_workdir, _cli_env())
    code = _block("python", "hdfs://namenode:9000").replace("hdfs://namenode:9000",
                                                             hdfs_server.url)
    fs, _ = resolve(hdfs_server.url + "/data/train.rec", hdfs_server.storage_options)
    fs.makedirs("/data", exist_ok=True)
    for name in ("train.rec", "train.idx"):
        fs.put_file(str(in_workdir / name), f"/data/{name}")
    ns = _exec(_imports(_block("python", 'MXIndexedRecordIO("train.idx"')), {})
    _exec(code, ns)
    try:
        batch = ns["it"].next()
        assert batch.data[0].shape == (64, 3, 224, 224) and batch.pad == 64 - N_IMAGES
    finally:
        ns["it"].close()


def test_pytorch_block_on_images_of_mixed_sizes(s3, in_workdir, workdir):
    """The PyTorch block over the S3 pack, whose images all have different sizes."""
    pytest.importorskip("torch")
    from cloudrec.format.lst import parse_lst_line
    ns = _exec(_imports(_block("python", 'MXIndexedRecordIO("train.idx"')), {})
    _exec(_s3_code(_block("python", "shuffle_mode=\"block\""), s3), ns)
    ns["it"].close()
    _exec(_s3_code(_block("python", "ResumableLoader("), s3), ns)
    state, batch = ns["state"], ns["batch"]
    assert (state["epoch"], state["consumed"]) == (10, 0)  # ten whole epochs were read
    ids, is_pad = np.asarray(batch["ids"]), np.asarray(batch["is_pad"]).astype(bool)
    assert len(ids) == 64 and sorted(ids[~is_pad].tolist()) == list(range(N_IMAGES))
    lst_text = s3["server"].filesystem().cat_file(s3["bucket"] + "/imgs/train.lst").decode()
    # record ids count records in shard order, which is the .lst's line order
    entries = [parse_lst_line(line, "train.lst", n) for n, line in
               enumerate(lst_text.splitlines(), 1)]
    images, labels = batch["data"][0], np.asarray(batch["data"][1]).reshape(len(ids), -1)
    for k in np.flatnonzero(~is_pad):
        entry = entries[int(ids[k])]
        assert labels[k, 0] == entry.labels[0]
        if isinstance(images, (list, tuple)):  # variable sizes travel as a list of HWC images
            src = cv2.imread(str(workdir / "images" / entry.path))
            assert tuple(images[k].shape) == src.shape
        else:  # or brought to one shape by the dataset
            assert tuple(images.shape[:1]) == (len(ids),) and images.shape[-1] == 3


def test_yaml_recipe(s3, in_workdir, monkeypatch):
    """The **YAML** paragraph: its inline statements, with the packaged imagenet-train config
    pointed at the S3 shards through its ${CLOUDREC_DATA} and ${CLOUDREC_S3_ENDPOINT}."""
    para = README[README.index("**YAML**"):]
    para = para[:para.index("\n\n")]
    statements = [s for s in re.findall(r"`([^`]+)`", para)
                  if re.match(r"^(cfg|it) = ", s)]
    assert statements and statements[0].startswith("cfg = cloudrec.load_config(")
    monkeypatch.setenv("CLOUDREC_DATA",
                       s3["bucket"] + "/imgs/train-{00000..00007}-of-00008.rec")
    monkeypatch.setenv("CLOUDREC_S3_ENDPOINT", s3["server"].endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3["env"]["AWS_ACCESS_KEY_ID"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3["env"]["AWS_SECRET_ACCESS_KEY"])
    ns = _exec("import cloudrec\nfrom cloudrec.iterators import ImageRecordIter\n"
               + "\n".join(statements), {})
    it = ns.get("it")
    assert it is not None, f"the YAML paragraph makes no iterator: {statements}"
    try:
        batch = it.next()
        assert batch.data[0].shape == (256, 3, 224, 224)  # imagenet-train's batch and shape
        assert batch.pad == 256 - N_IMAGES
    finally:
        it.close()


def test_mxnet_porting_block(in_workdir):
    if not (in_workdir / "train.rec").exists():
        _shell(_block("bash", "--recursive train ./images"), in_workdir, _cli_env())
    code = _block("python", "mxnet_compat as mx", section="Compatibility with MXNet")
    ns = _exec(code, {})
    try:
        assert ns["sample"].ndim == 3 and ns["sample"].dtype == np.uint8
        assert ns["header"].id == 1
    finally:
        ns["rec"].close()
