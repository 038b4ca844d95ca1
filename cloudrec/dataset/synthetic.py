"""Synthetic sharded datasets (random payloads) for tests and storage benchmarks.

Payloads are random bytes, some with aligned RecordIO magic words inside so the
multi-part framing path is exercised too.  Knows no images.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from cloudrec.format.framing import MAGIC_BYTES, encode_record
from cloudrec.format.idx import format_idx
from cloudrec.storage.fs import resolve


def make_payload(rng: np.random.Generator, size: int, with_magic: bool = False) -> bytes:
    """Random bytes of ``size``; optionally with an aligned magic word inside."""
    b = bytearray(rng.bytes(size))
    if with_magic and size >= 12:
        i = int(rng.integers(0, size // 4 - 1)) * 4
        b[i:i + 4] = MAGIC_BYTES
    return bytes(b)


def build_shard(payloads: List[bytes], keys: List[Any]) -> Tuple[bytes, bytes]:
    """(.rec bytes, .idx bytes) for records in the order given."""
    parts, offs, pos = [], [], 0
    for p in payloads:
        enc = encode_record(p)
        offs.append(pos)
        parts.append(enc)
        pos += len(enc)
    return b"".join(parts), format_idx(keys, offs)


def write_synthetic(base_url: str, n_shards: int, records_per_shard: int, *,
                    min_size: int = 0, max_size: int = 4096, seed: int = 0,
                    storage_options: Optional[Dict[str, Any]] = None,
                    put: Optional[Callable[[str, bytes], None]] = None,
                    name: str = "train-{:04d}", magic_every: int = 17,
                    write_idx: bool = True) -> Tuple[List[str], Dict[Tuple[int, int], bytes]]:
    """Write ``n_shards`` shards ``name.rec``/``.idx`` under ``base_url``.

    Returns the shard URLs and ``{(shard, key): payload}``; key ``k`` of shard
    ``s`` is ``s * records_per_shard + k`` so keys are unique over the dataset.
    """
    rng = np.random.default_rng(seed)
    if put is None:
        def put(url: str, data: bytes) -> None:
            fs, path = resolve(url, storage_options)
            fs.pipe_file(path, data)
    urls, truth = [], {}
    for s in range(n_shards):
        payloads, keys = [], []
        for i in range(records_per_shard):
            size = int(rng.integers(min_size, max_size + 1))
            p = make_payload(rng, size, with_magic=magic_every > 0 and i % magic_every == 3)
            k = s * records_per_shard + i
            payloads.append(p)
            keys.append(k)
            truth[(s, k)] = p
        rec, idx = build_shard(payloads, keys)
        url = base_url.rstrip("/") + "/" + name.format(s) + ".rec"
        put(url, rec)
        if write_idx:
            put(url[:-4] + ".idx", idx)
        urls.append(url)
    return urls, truth
