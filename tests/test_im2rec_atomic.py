"""Issue #15 item 2: im2rec's output appears complete or not at all.

A sharded pack is published as temporaries -> final names -> the manifest
``BASE.manifest.json`` last; ``open_dataset`` on a glob or brace range checks
the manifest (or, without one, temporaries and gaps in the shard numbers).
The SIGKILL test kills real im2rec processes packing to the loopback S3
server (moto) at seeded random times and at observed mid-commit states, and
checks that no state ever opens as a complete pack unless it is one.
"""
from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cloudrec import cli
from cloudrec.dataset import IncompletePackError, open_dataset
from cloudrec.errors import CloudrecError
from cloudrec.format.lst import format_lst_line
from cloudrec.storage.fs import resolve

FIX = Path(__file__).parent / "fixtures" / "mxnet"
IMAGES = sorted((FIX / "images").rglob("*.jp*g"))
N_IMAGES = 160
SHARDS = 8


def _image_root(root: Path, n: int) -> str:
    """``n`` image files (the fixture JPEGs, cycled) and their list text."""
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        src = IMAGES[i % len(IMAGES)]
        name = f"img{i:04d}{src.suffix}"
        shutil.copy(src, root / name)
        lines.append(format_lst_line(i, (float(i % 3),), name))
    return "".join(lines)


def _pack_local(tmp: Path, n: int, shards: int) -> Path:
    out = tmp / "out"
    out.mkdir()
    (out / "all.lst").write_text(_image_root(tmp / "imgs", n))
    assert cli.main(["im2rec", "--pass-through", "--num-shards", str(shards), "--no-progress",
                     str(out / "all"), str(tmp / "imgs")]) == 0
    return out


def test_complete_pack_opens_by_glob_brace_and_subset(tmp_path):
    out = _pack_local(tmp_path, 24, 4)
    doc = json.loads((out / "all.manifest.json").read_text())
    assert doc["records"] == 24 and len(doc["shards"]) == 4
    assert len(open_dataset(str(out / "all-*.rec"))) == 24
    assert len(open_dataset(str(out / "all-{00000..00003}-of-00004.rec"))) == 24
    sub = open_dataset(str(out / "all-0000[01]-of-00004.rec"))  # a subset by choice is fine
    assert len(sub) == sum(e["records"] for e in doc["shards"][:2])


def test_missing_shard_is_named_with_and_without_manifest(tmp_path):
    out = _pack_local(tmp_path, 24, 4)
    (out / "all-00002-of-00004.rec").unlink()
    with pytest.raises(IncompletePackError, match=r"all-00002-of-00004\.rec.*missing"):
        open_dataset(str(out / "all-*.rec"))
    with pytest.raises(CloudrecError, match="all-00002-of-00004.rec"):
        open_dataset(str(out / "all-{00000..00003}-of-00004.rec"))
    (out / "all.manifest.json").unlink()  # an unfinished pack (or one from before manifests)
    with pytest.raises(IncompletePackError, match=r"all-00002-of-00004\.rec.*missing"):
        open_dataset(str(out / "all-*.rec"))


def test_temporaries_without_manifest_mean_unfinished(tmp_path):
    out = _pack_local(tmp_path, 24, 4)
    (out / "all.manifest.json").unlink()
    shutil.copy(out / "all-00003-of-00004.rec", out / ".all-00003-of-00000.rec.tmp-0123456789")
    with pytest.raises(IncompletePackError, match=r"temporary objects .*tmp-0123456789"):
        open_dataset(str(out / "all-*.rec"))
    (out / ".all-00003-of-00000.rec.tmp-0123456789").unlink()
    assert len(open_dataset(str(out / "all-*.rec"))) == 24  # all shards, no temporaries


def test_shard_not_matching_the_manifest(tmp_path):
    out = _pack_local(tmp_path, 24, 4)
    good = (out / "all-00001-of-00004.rec").read_bytes()
    good_idx = (out / "all-00001-of-00004.idx").read_bytes()
    # a shard replaced by one from another pack: same name, other size
    shutil.copy(out / "all-00000-of-00004.rec", out / "all-00001-of-00004.rec")
    shutil.copy(out / "all-00000-of-00004.idx", out / "all-00001-of-00004.idx")
    with pytest.raises(IncompletePackError, match=r"manifest.*all-00001-of-00004\.rec"):
        open_dataset(str(out / "all-*.rec"))
    (out / "all-00001-of-00004.rec").write_bytes(good)
    (out / "all-00001-of-00004.idx").write_bytes(good_idx)
    assert len(open_dataset(str(out / "all-*.rec"))) == 24
    # stray shards of an older 8-shard pack next to the 4-shard one
    shutil.copy(out / "all-00000-of-00004.rec", out / "all-00005-of-00008.rec")
    shutil.copy(out / "all-00000-of-00004.idx", out / "all-00005-of-00008.idx")
    with pytest.raises(IncompletePackError, match=r"all-00005-of-00008\.rec not listed in "
                                                  r"the pack manifest .*all\.manifest\.json"):
        open_dataset(str(out / "all-*.rec"))
    (out / "all.manifest.json").unlink()  # no manifest: the gaps of the 8-shard pack show
    with pytest.raises(IncompletePackError, match="8-shard pack"):
        open_dataset(str(out / "all-*.rec"))


def test_repack_removes_the_old_manifest_before_renaming(tmp_path, monkeypatch):
    from cloudrec.tools import publish
    out = _pack_local(tmp_path, 24, 4)
    seen = []
    real = publish.commit_shards

    def spy(shards, so=None):
        seen.append((out / "all.manifest.json").exists())
        return real(shards, so)
    monkeypatch.setattr(publish, "commit_shards", spy)
    assert cli.main(["im2rec", "--pass-through", "--num-shards", "4", "--no-progress",
                     str(out / "all"), str(tmp_path / "imgs")]) == 0
    assert seen == [False] and (out / "all.manifest.json").exists()


# -- SIGKILL against the loopback S3 server ---------------------------------------------------------

def _state(glob: str, brace: str, so, fs, reference) -> str:
    """'refused' or 'complete' (asserting every shard equals the reference bytes)."""
    fs.invalidate_cache()
    outcomes = []
    for pattern in (glob, brace):
        try:
            ds = open_dataset(pattern, storage_options=so)
        except CloudrecError:
            outcomes.append("refused")
            continue
        assert len(ds) == N_IMAGES, f"{pattern} opened {len(ds)} of {N_IMAGES} records"
        for s in ds.shards:
            name = s.rec_url.rsplit("/", 1)[1]
            assert fs.cat_file(resolve(s.rec_url, so)[1]) == reference[name], name
        outcomes.append("complete")
    return "/".join(outcomes)


@pytest.mark.s3
def test_sigkill_during_pack_to_s3_never_opens_as_complete(tmp_path, s3_server):
    lst = _image_root(tmp_path / "imgs", N_IMAGES)
    ref = tmp_path / "ref"
    ref.mkdir()
    (ref / "all.lst").write_text(lst)
    assert cli.main(["im2rec", "--pass-through", "--num-shards", str(SHARDS), "--no-progress",
                     str(ref / "all"), str(tmp_path / "imgs")]) == 0
    reference = {p.name: p.read_bytes() for p in ref.glob("all-*.rec")}
    so = s3_server.storage_options
    bucket = s3_server.new_bucket()
    fs, _ = resolve(bucket, so)

    def launch(prefix: str) -> subprocess.Popen:
        fs.pipe_file(resolve(prefix + ".lst", so)[1], lst.encode())
        return subprocess.Popen(
            [sys.executable, "-m", "cloudrec.cli", "im2rec", "--pass-through", "--num-shards",
             str(SHARDS), "--no-progress", "--storage-options", json.dumps(so), prefix,
             str(tmp_path / "imgs")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def finals(run: str) -> int:
        fs.invalidate_cache()
        try:
            return sum(1 for p in fs.ls(resolve(f"{bucket}/{run}", so)[1])
                       if p.rsplit("/", 1)[1].startswith("all-"))
        except FileNotFoundError:
            return 0

    # one undisturbed run: how long a pack takes, and that it completes
    t0 = time.monotonic()
    proc = launch(f"{bucket}/full/all")
    assert proc.wait(timeout=120) == 0, proc.stderr.read().decode()
    full = time.monotonic() - t0
    g = f"{bucket}/full/all-*.rec"
    assert _state(g, f"{bucket}/full/all-{{00000..{SHARDS - 1:05d}}}-of-{SHARDS:05d}.rec", so,
                  fs, reference) == "complete/complete"

    rng = random.Random(15)
    outcomes = []
    for k in range(8):
        run = f"run{k}"
        if k % 2:  # a re-pack over a complete earlier pack in the same place (in-process)
            fs.pipe_file(resolve(f"{bucket}/{run}/all.lst", so)[1], lst.encode())
            assert cli.main(["im2rec", "--pass-through", "--num-shards", str(SHARDS),
                             "--no-progress", "--storage-options", json.dumps(so),
                             f"{bucket}/{run}/all", str(tmp_path / "imgs")]) == 0
        proc = launch(f"{bucket}/{run}/all")
        if k < 4:  # kill at a seeded random time
            time.sleep(rng.uniform(0.2, 1.0) * full)
        else:      # kill once the commit has visibly started
            deadline = time.monotonic() + 120
            manifest = resolve(f"{bucket}/{run}/all.manifest.json", so)[1]
            want = rng.randint(1, 2 * SHARDS - 1)
            while proc.poll() is None and time.monotonic() < deadline:
                if k % 2 == 0 and finals(run) >= want:  # some shards already renamed
                    break
                if k % 2 and not fs.exists(manifest):  # the old manifest is gone
                    time.sleep(rng.uniform(0.0, 0.2))
                    break
                time.sleep(0.005)
        proc.kill()
        proc.wait(timeout=30)
        state = _state(f"{bucket}/{run}/all-*.rec",
                       f"{bucket}/{run}/all-{{00000..{SHARDS - 1:05d}}}-of-{SHARDS:05d}.rec",
                       so, fs, reference)
        outcomes.append((k, proc.returncode, state))
    # every state either refused or verified complete above; print what was exercised
    print("sigkill outcomes:", outcomes)
    assert len(outcomes) == 8


@pytest.mark.s3
def test_pack_to_a_frozen_s3_ends_with_a_write_timeout_and_leaves_nothing(tmp_path, s3_server,
                                                                          fault_proxy,
                                                                          monkeypatch, capsys):
    # issue #15 item 4: im2rec writing to a frozen server never exited (400 s+)
    lst = _image_root(tmp_path / "imgs", 24)
    so = fault_proxy.storage_options
    bucket = s3_server.new_bucket()
    fs, _ = resolve(bucket, so)
    fs.pipe_file(resolve(bucket + "/out/all.lst", so)[1], lst.encode())
    monkeypatch.setenv("CLOUDREC_WRITE_TIMEOUT", "2")
    fault_proxy.configure(pstall=1.0, stall_s=60, methods="PUT,POST")
    try:
        rc = cli.main(["im2rec", "--pass-through", "--num-shards", "2", "--no-progress",
                       "--storage-options", json.dumps(so), bucket + "/out/all",
                       str(tmp_path / "imgs")])
        stalls = fault_proxy.stats()["stall"]
    finally:
        fault_proxy.configure()
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err and "no answer within 2 s" in err, err
    assert stalls >= 1
    fs.invalidate_cache()
    left = sorted(p.rsplit("/", 1)[1] for p in fs.ls(resolve(bucket + "/out", so)[1]))
    assert left == ["all.lst"], left  # no shard, no manifest, no temporary is visible
    with pytest.raises(CloudrecError):
        open_dataset(bucket + "/out/all-*.rec", storage_options=so)
