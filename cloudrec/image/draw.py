"""Drawing detection boxes onto an image (for contact sheets and debugging); pure numpy/cv2."""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import cv2
import numpy as np

__all__ = ["draw_boxes"]


def draw_boxes(image: np.ndarray, label: np.ndarray, color: Optional[Sequence[int]] = None,
               thickness: int = 2, id2labels: Optional[Dict[int, str]] = None,
               rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """Draw each object's box (normalised corners, rows with xmin < 0 skipped) on a uint8
    HWC image in place and return it; ``color`` None = a random colour per box."""
    rng = rng if rng is not None else np.random.default_rng(0)
    height, width = image.shape[:2]
    for row in np.asarray(label):
        x1 = int(row[1] * width)
        if x1 < 0:
            continue
        y1, x2, y2 = int(row[2] * height), int(row[3] * width), int(row[4] * height)
        bc = tuple(float(c) for c in (rng.random(3) * 255 if not color else color))
        cv2.rectangle(image, (x1, y1), (x2, y2), bc, thickness)
        if id2labels is not None and int(row[0]) in id2labels:
            text = str(id2labels[int(row[0])])
            font = cv2.FONT_HERSHEY_SIMPLEX
            th = cv2.getTextSize(text, font, 0.5, 2)[0][1]
            cv2.putText(image, text, (x1 + 5, y1 + th + 5), font, 0.5, (255, 255, 255), 2)
    return image
