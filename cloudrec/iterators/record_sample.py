"""ImageRecordIter's per-image step, run on the decode threads: header and label, the one
decode, MXNet's aug_default, then the fused write into the batch slot."""
from __future__ import annotations

from typing import Optional

import numpy as np

from cloudrec.errors import CloudrecError, HeaderError, ImageDecodeError, LabelError
from cloudrec.format.irheader import unpack_header
from cloudrec.pipeline.augment import AugRng
from cloudrec.pipeline.batcher import BatchBuffers

__all__ = ["RecordSampleWriter"]


class _RecordWhere:
    """`` (record id R: url, key K, offset O)`` for error messages, built only when one is
    formatted (describing a record costs more than a cheap image's Python steps)."""

    __slots__ = ("_owner", "_rid")

    def __init__(self, owner: "RecordSampleWriter", rid: int) -> None:
        self._owner, self._rid = owner, rid

    def __str__(self) -> str:
        return self._owner._where(self._rid)

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


class RecordSampleWriter:
    """Mixin of ImageRecordIter: ``_process_one(payload, rid, slot, buf)`` for BatchPipeline."""

    # -- per image (runs on the decode threads) ---------------------------------------------
    def _where(self, rid: int) -> str:
        return f" (record id {rid}: {self._source.describe(rid)})"

    def _process_one(self, payload: bytes, rid: int, slot: int, buf: BatchBuffers) -> None:
        try:
            self._process_inner(payload, rid, slot, buf)
        except HeaderError as exc:
            raise HeaderError(f"{exc}{self._where(rid)}") from None
        except CloudrecError:
            raise
        except Exception as exc:  # OpenCV errors and the like: name the record
            raise ImageDecodeError(f"{type(exc).__name__}: {exc}{self._where(rid)}") from exc

    def _labels(self, header, rid: int) -> np.ndarray:
        lw = self.label_width
        if self._imglist is not None:
            lab = self._imglist.get(int(header.id))
            if lab is None:
                raise LabelError(f"fail to find imagelabel for id {header.id} in "
                                 f"{self.params.parser.path_imglist}{self._where(rid)}")
            return lab
        if header.flag > 0:
            if header.flag != lw:
                raise LabelError(f"rec file provide {header.flag}-dimensional label but "
                                 f"label_width is set to {lw}{self._where(rid)}")
            return header.label
        if lw != 1:
            raise LabelError(f"label_width must be 1 unless an imglist is provided or the rec "
                             f"file is packed with multi dimensional label (label_width={lw})"
                             f"{self._where(rid)}")
        return np.float32(header.label)

    def _process_one_rng(self, rid: int, epoch: int) -> Optional[AugRng]:
        """The image's own generator: a pure function of (aug seed, epoch, record id)."""
        if not self._rng_needed:
            return None
        return AugRng(((self._aug_seed & 0xFFFFFFFF) << 96) | ((epoch & 0xFFFFFFFF) << 64)
                      | (int(rid) & 0xFFFFFFFFFFFFFFFF))

    def _process_inner(self, payload: bytes, rid: int, slot: int, buf: BatchBuffers) -> None:
        header, start = unpack_header(payload)
        buf.label[slot] = self._labels(header, rid)
        buf.header_id[slot] = int(header.id)
        where = _RecordWhere(self, rid)
        rng = self._process_one_rng(rid, buf.plan.epoch)
        img = self._aug.decode_process(memoryview(payload)[start:], rng, where)
        n = self.params.norm
        mirror = bool(n.mirror)
        if n.rand_mirror and rng.random() < 0.5:
            mirror = True
        contrast, illum = n.scale, 0.0
        if self.dtype.kind == "f" and (n.max_random_contrast > 0 or n.max_random_illumination > 0):
            mrc, mri = n.max_random_contrast, n.max_random_illumination
            contrast = (rng.random() * 2 * mrc - mrc + 1) * n.scale
            illum = (rng.random() * 2 * mri - mri) * n.scale
        self._writer.write(img, buf.data[slot], mirror, contrast / n.scale if n.scale else 0.0,
                           illum)
