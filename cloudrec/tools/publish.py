"""Publishing a pack: temporaries renamed to their final names, then the manifest, last.

A rename on object storage is a copy plus a delete, so the window in which a
killed im2rec leaves half its shards is real; the manifest written after the
last rename is what makes a pack appear complete or not at all (checked by
``open_dataset`` on a glob or brace range).
"""
from __future__ import annotations

import posixpath
import uuid
from typing import TYPE_CHECKING, Any, Dict, Optional, Sequence

from cloudrec.errors import StorageError
from cloudrec.format.manifest import ManifestShard, build_manifest, manifest_name
from cloudrec.recordio import storage_errors
from cloudrec.storage.fs import join_url, resolve
from cloudrec.storage.writes import write_bytes

if TYPE_CHECKING:
    from cloudrec.tools.packing import ShardFile

__all__ = ["replace_file", "write_bytes_atomic", "commit_shards", "commit_pack", "remove_temps"]


def replace_file(fs, src: str, dst: str) -> None:
    """Rename ``src`` onto ``dst``, replacing an existing ``dst`` on every backend.

    POSIX and S3 overwrite on their own; HDFS refuses unless asked (hdfs-native's
    ``overwrite=True`` keeps it one atomic rename); a store that refuses
    otherwise gets ``dst`` removed first.
    """
    if fs.isdir(dst):  # local and HDFS renames would move src *into* the folder
        raise StorageError("the destination is a folder; refusing to replace it", dst)
    if type(fs).__module__.startswith("hdfs_native"):
        fs.mv(src, dst, overwrite=True)
        return
    try:
        fs.mv(src, dst)
    except OSError:
        if not fs.exists(dst):
            raise
        fs.rm(dst)
        fs.mv(src, dst)
        return
    if src != dst and fs.exists(src):  # refused without an error (e.g. WebHDFS)
        fs.rm(dst)
        fs.mv(src, dst)


def write_bytes_atomic(url: str, data: bytes,
                       storage_options: Optional[Dict[str, Any]] = None) -> None:
    """Write ``data`` to a temporary name next to ``url``, then rename it into place."""
    fs, path = resolve(url, storage_options)
    parent = posixpath.dirname(path)
    tmp = posixpath.join(parent, ".%s.tmp-%s" % (posixpath.basename(path), uuid.uuid4().hex[:10]))
    head, _, name = url.rstrip("/").rpartition("/")
    tmp_url = (head + "/" if head else "") + posixpath.basename(tmp)
    # time-limited (storage.writes); the parent is a file or there is no endpoint: StorageError
    try:
        write_bytes(tmp_url, data, storage_options)
    except StorageError as exc:  # name the file the user asked for, keep the class
        raise type(exc)(f"cannot write: {exc}", url) from exc
    try:
        with storage_errors(url, "move into place"):
            replace_file(fs, tmp, path)
    except BaseException:
        try:
            if fs.exists(tmp):
                fs.rm(tmp)
        except Exception:  # best effort: the first error is the one to report
            pass
        raise


def commit_shards(shards: Sequence[ShardFile], storage_options: Optional[Dict[str, Any]] = None
                  ) -> None:
    """Rename temporaries to final names: `.idx` first, then `.rec` (a lone `.idx` is
    obviously unfinished, a lone `.rec` is not)."""
    for sf in shards:
        for tmp, final in ((sf.tmp_idx, sf.final_idx), (sf.tmp_rec, sf.final_rec)):
            fs, src = resolve(tmp, storage_options)
            _, dst = resolve(final, storage_options)
            try:
                replace_file(fs, src, dst)
            except StorageError:  # already names the file
                raise
            except Exception as exc:  # OSError, botocore errors, ...
                raise StorageError(f"cannot rename {tmp} to its final name: "
                                   f"{type(exc).__name__}: {exc}", final) from exc


def commit_pack(shards: Sequence[ShardFile], dir_url: str, base: str,
                storage_options: Optional[Dict[str, Any]] = None, *, sharded: bool = True
                ) -> Optional[str]:
    """Publish a pack so that it appears complete or not at all; the manifest URL.

    On object storage a rename is a copy plus a delete, so shards become
    visible one by one.  The order makes every intermediate state detectable
    by ``open_dataset`` on a glob or brace range: (1) an older manifest of the
    same name goes first (a mix of old and new shards must not pass for the
    old pack), (2) the shards are renamed (temporaries still visible), (3)
    ``BASE.manifest.json`` with names, sizes and record counts is written last.
    A single unsharded output needs no manifest (its `.idx` is renamed first).
    """
    manifest_url = join_url(dir_url, manifest_name(base)) if sharded else None
    if manifest_url is not None:
        fs, path = resolve(manifest_url, storage_options)
        with storage_errors(manifest_url, "remove the old pack manifest"):
            if fs.exists(path):
                fs.rm(path)
    commit_shards(shards, storage_options)
    if manifest_url is not None:
        entries = [ManifestShard(posixpath.basename(sf.final_rec.split("://", 1)[-1]),
                                 sf.nbytes, sf.records) for sf in shards]
        write_bytes_atomic(manifest_url, build_manifest(base, entries), storage_options)
    return manifest_url


def remove_temps(shards: Sequence[ShardFile], storage_options: Optional[Dict[str, Any]] = None
                 ) -> None:
    """Delete the temporary files of ``shards``; missing ones are fine."""
    for sf in shards:
        for tmp in (sf.tmp_rec, sf.tmp_idx):
            try:
                fs, path = resolve(tmp, storage_options)
                if fs.exists(path):
                    fs.rm(path)
            except Exception:
                pass
