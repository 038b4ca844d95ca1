"""Benchmarks write JSON with their settings and the machine's load (bench/_common.py
``write_result``); bench/readme_table.py turns those files into the README's table and
names the benches that have none."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture
def bench_modules(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(BENCH))
    monkeypatch.setenv("CLOUDREC_BENCH_RESULTS", str(tmp_path / "results"))
    for name in ("_common", "readme_table"):
        sys.modules.pop(name, None)
    import _common
    import readme_table
    yield _common, readme_table
    for name in ("_common", "readme_table"):
        sys.modules.pop(name, None)


def _write_storage(common, out):
    return common.write_result(
        "storage-s3", settings={"shards": 4, "records_per_shard": 163, "latency_ms": 20,
                                "block_bytes": 4 << 20},
        results={"naive_s": 10.0, "block_s": 0.13},
        figures=[common.figure("planner + `block` vs naive", 76.6, "x", target=">= 10x"),
                 common.figure("`global`", 10.8, "x", group="other orders vs naive"),
                 common.figure("`shard`", 31.25, "x", group="other orders vs naive")],
        title="one shuffled epoch from S3", command="python bench/storage.py --shards 4",
        out_dir=str(out))


def test_write_result_records_settings_machine_and_figures(bench_modules, tmp_path, capsys):
    common, _ = bench_modules
    path = _write_storage(common, tmp_path / "r")
    assert path == str(tmp_path / "r" / "storage-s3.json")
    assert f"results: {path}" in capsys.readouterr().out
    rec = json.loads(Path(path).read_text())
    assert rec["bench"] == "storage-s3" and rec["script"] == "bench/storage.py"
    assert rec["settings"]["shards"] == 4 and rec["results"]["block_s"] == 0.13
    m = rec["machine"]
    assert m["cpu_count"] == os.cpu_count() and m["cpus_usable"] >= 1
    assert len(m["loadavg_start"]) == 3 and len(m["loadavg_end"]) == 3
    assert all(x >= 0 for x in m["loadavg_end"])
    assert m["versions"]["numpy"] == __import__("numpy").__version__
    assert m["python"] == ".".join(map(str, sys.version_info[:3]))
    assert [f["value"] for f in rec["figures"]] == [76.6, 10.8, 31.25]
    assert not list((tmp_path / "r").glob("*.tmp"))


def test_table_rows_come_from_the_json_and_missing_benches_are_named(bench_modules, tmp_path):
    common, table = bench_modules
    _write_storage(common, tmp_path / "r")
    (tmp_path / "r" / "junk.json").write_text("{not json")
    block, missing = table.build(str(tmp_path / "r"))
    lines = block.strip().splitlines()
    assert lines[0] == "| what | command | settings | result | machine |" and len(lines) == 3
    row = lines[2]
    assert "one shuffled epoch from S3" in row and "`python bench/storage.py --shards 4`" in row
    assert "shards=4" in row and "block_bytes=4194304" in row and "latency_ms=20" in row
    assert "planner + `block` vs naive **76.6x** (target >= 10x)" in row
    assert "other orders vs naive: `global` **10.8x**, `shard` **31.2x**" in row
    assert f"{os.cpu_count()} cores, load " in row
    scripts = table.bench_scripts()
    assert "storage" in scripts and "readme_table" not in scripts and "_common" not in scripts
    assert "storage" not in missing and set(missing) == set(scripts) - {"storage"}


def test_write_and_check_replace_only_the_marked_block(bench_modules, tmp_path):
    common, table = bench_modules
    _write_storage(common, tmp_path / "r")
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nintro\n\n{table.BEGIN}\n| old | table |\n{table.END}\n\nafter\n")
    script = [sys.executable, str(BENCH / "readme_table.py"), "--results", str(tmp_path / "r")]
    stale = subprocess.run(script + ["--check", str(readme)], capture_output=True, text=True)
    assert stale.returncode == 1 and "--write" in stale.stderr
    wrote = subprocess.run(script + ["--write", str(readme)], capture_output=True, text=True)
    assert wrote.returncode == 0, wrote.stderr
    assert "missing: no" in wrote.stderr and "python bench/imageiter.py" in wrote.stderr
    text = readme.read_text()
    assert text.startswith("# x\n\nintro\n\n") and text.endswith(f"{table.END}\n\nafter\n")
    assert "| old | table |" not in text and "**76.6x**" in text
    again = subprocess.run(script + ["--check", str(readme)], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr


def test_readme_without_markers_is_a_clear_error(bench_modules, tmp_path):
    _, table = bench_modules
    with pytest.raises(SystemExit, match="no table markers"):
        table.replace_block("# no markers\n", "| a |\n")


def test_the_readme_has_the_markers_and_the_real_results_make_a_table(bench_modules):
    """`--write README.md` has a place to write to, and every write_result() file that the
    benches committed turns into a row."""
    _, table = bench_modules
    readme = (BENCH.parent / "README.md").read_text()
    assert readme.count(table.BEGIN) == 1 and readme.count(table.END) == 1
    assert readme.index(table.BEGIN) < readme.index(table.END)
    block, _ = table.build(str(BENCH / "results"))
    results = table.load_results(str(BENCH / "results"))
    rows = block.strip().splitlines()[2:]
    assert len(rows) == sum(len(v) for v in results.values())
    assert "orders" in results  # committed: bench/results/orders.json
    new = table.replace_block(readme, block)
    assert new.count(table.BEGIN) == 1 and block in new
