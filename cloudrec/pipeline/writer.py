"""ImageWriter: one augmented image into its batch slot, normalisation fused into the write."""
from __future__ import annotations

from typing import List, Optional, Sequence

import cv2
import numpy as np

__all__ = ["ImageWriter"]


class ImageWriter:
    """Writes one augmented OpenCV-order image into a batch slot.

    BGR(A) -> RGB(A), optional mirror, HWC -> CHW (or kept HWC), and for float
    outputs MXNet's ``(x - mean) * float32(contrast_scaled / std) + illum / std``.
    uint8 copies raw pixels; int8 stores ``saturate(x - round(mean))``.
    """

    def __init__(self, channels: int, dtype: np.dtype, layout: str, mean: Sequence[float],
                 std: Sequence[float], scale: float, mean_img: Optional[np.ndarray] = None
                 ) -> None:
        self.C = channels
        self.dtype = np.dtype(dtype)
        self.chw = layout == "NCHW"
        self.mean = np.asarray(mean[:channels], np.float32)
        self.std = np.asarray(std[:channels], np.float32)
        self.scale = np.float32(scale)
        self.mean_img = mean_img  # (C, H, W) float32 in output channel order, or None
        self.float_out = self.dtype.kind == "f"
        self.identity = (not self.float_out) or (mean_img is None and not self.mean.any()
                                                 and (self.std == 1).all() and scale == 1)
        self._blob = self._blob_params() if (self.C == 3 and mean_img is None and self.chw
                                             and self.dtype == np.float32) else None

    def _blob_params(self) -> Optional[object]:
        """OpenCV's blob conversion for the default float32 NCHW write (None if unavailable)."""
        dnn = getattr(cv2, "dnn", None)
        if dnn is None or not hasattr(dnn, "blobFromImageWithParams"):
            return None
        p = dnn.Image2BlobParams()
        k = self.scale / self.std  # the float32 factor of the formula, passed exactly
        p.scalefactor = tuple(float(x) for x in k) + (0.0,)
        p.mean = tuple(float(x) for x in self.mean) + (0.0,)  # applied after the swap
        p.swapRB = True
        p.ddepth = cv2.CV_32F
        return p

    _default_luts: Optional[List[np.ndarray]] = None

    def _luts(self, k: np.ndarray, illum: Optional[np.ndarray]) -> List[np.ndarray]:
        """Per output channel, the (1, 256) float32 table of ``(v - mean) * k (+ illum)``."""
        v = np.arange(256, dtype=np.float32)
        out = []
        for c in range(self.C):
            t = np.subtract(v, self.mean[c])
            np.multiply(t, k[c], out=t)
            if illum is not None:
                np.add(t, illum[c], out=t)
            out.append(t.reshape(1, 256))
        return out

    def _source_channels(self, img: np.ndarray) -> List[np.ndarray]:
        """Contiguous source planes in output order (R, G, B, A or gray)."""
        if img.ndim == 2:
            return [img]
        if self.C == 1:
            return [np.ascontiguousarray(img[..., 0])]
        planes = cv2.split(img)
        return [planes[k] for k in (2, 1, 0, 3)[:self.C]]

    def write(self, img: np.ndarray, out: np.ndarray, mirror: bool,
              contrast: float = 1.0, illumination: float = 0.0) -> None:
        """Fill ``out`` (C,H,W or H,W,C) from ``img`` (H,W[,C] uint8 BGR/BGRA/gray)."""
        if mirror:  # OpenCV reads a crop view (row-strided) as is: one copy, not two
            img = cv2.flip(img, 1)
        if (self._blob is not None and contrast == 1.0 and not illumination
                and self.mean_img is None and img.ndim == 3 and img.shape[2] == 3
                and out.flags.c_contiguous):
            # one native call: BGR->RGB, (x - mean) * (scale / std) in float32, HWC -> CHW,
            # straight into the slot; the same float32 ops as the LUT path below (bit-identical)
            # and one GIL release instead of four (split + a LUT per plane)
            dst = out[None]
            got = cv2.dnn.blobFromImageWithParams(img, dst, self._blob)
            if got is not dst:  # OpenCV allocated instead of writing in place: copy it in
                out[...] = got[0]
            return
        if self.dtype == np.uint8 and not self.chw and self.C == 3 and img.ndim == 3:
            cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=out)
            return
        chans = self._source_channels(img)
        views = [out[c] if self.chw else out[..., c] for c in range(self.C)]
        if self.dtype == np.uint8:
            for v, s in zip(views, chans):
                v[...] = s
            return
        if self.dtype == np.int8:
            mean = (np.rint(self.mean_img) if self.mean_img is not None
                    else np.rint(self.mean).reshape(-1, 1, 1))
            for c, (v, s) in enumerate(zip(views, chans)):
                v[...] = np.clip(s.astype(np.int16) - mean[c].astype(np.int16), -128, 127)
            return
        k = np.float32(contrast) * self.scale / self.std if contrast != 1.0 \
            else self.scale / self.std
        illum = np.float32(illumination) / self.std if illumination else None
        if self.mean_img is None and self.dtype == np.float32 and self.chw:
            # a uint8 pixel has 256 values: one table lookup per plane straight into the
            # batch slot, the table made with the very float32 ops below (same bits); 3
            # native calls instead of 9 numpy passes, fewer GIL hand-offs between threads
            luts = self._default_luts if (contrast == 1.0 and not illumination) else None
            if luts is None:
                luts = self._luts(k, illum)
                if contrast == 1.0 and not illumination:
                    self._default_luts = luts
            for v, s_, lut in zip(views, chans, luts):
                cv2.LUT(s_, lut, dst=v)
            return
        direct = self.dtype == np.float32 and self.chw
        tmp = None if direct else np.empty(chans[0].shape, np.float32)
        for c, (v, s) in enumerate(zip(views, chans)):
            dst = v if direct else tmp
            m = self.mean_img[c] if self.mean_img is not None else self.mean[c]
            np.copyto(dst, s, casting="unsafe")  # exact uint8 -> float32, SIMD
            np.subtract(dst, m, out=dst)
            np.multiply(dst, k[c], out=dst)
            if illum is not None:
                np.add(dst, illum[c], out=dst)
            if not direct:
                v[...] = tmp
