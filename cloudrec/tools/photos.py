"""Make a small photo-like, ImageNet-style folder dataset from the real sample
photos that ship inside PyPI packages (scikit-learn, matplotlib, scikit-image).

Nothing is downloaded: the photos are found inside the installed packages.
Each class is one source photo; its images are random crops, rescales, flips
and brightness changes of it, derived from ``seed`` so every run is identical.
Layout: ``OUT/<class>/<class>_<n>.jpg`` (what ``im2rec --list --recursive`` wants).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

# (package, file inside the package)
SAMPLE_PHOTOS: Sequence[Tuple[str, str]] = (
    ("sklearn", "datasets/images/china.jpg"),
    ("sklearn", "datasets/images/flower.jpg"),
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    ("skimage", "data/astronaut.png"),
    ("skimage", "data/chelsea.png"),
    ("skimage", "data/coffee.png"),
    ("skimage", "data/rocket.jpg"),
    ("skimage", "data/motorcycle_left.png"),
    ("skimage", "data/hubble_deep_field.jpg"),
    ("skimage", "data/retina.jpg"),
)


def find_sample_photos() -> List[Tuple[str, str]]:
    """(name, path) of every sample photo found in the installed packages."""
    found = []
    for pkg, rel in SAMPLE_PHOTOS:
        try:
            spec = importlib.util.find_spec(pkg)
        except (ImportError, ValueError):
            continue
        if spec is None or not spec.submodule_search_locations:
            continue
        path = os.path.join(list(spec.submodule_search_locations)[0], rel)
        if os.path.isfile(path):
            found.append((os.path.splitext(os.path.basename(rel))[0], path))
    return found


@dataclass(frozen=True)
class PhotoSpec:
    """Sizes and mix of the generated images."""

    n: int = 600
    classes: int = 6
    min_side: int = 120
    max_side: int = 320
    gray_frac: float = 0.05
    png_frac: float = 0.03
    quality: int = 90
    seed: int = 0


def _render(src: np.ndarray, rng: random.Random, spec: PhotoSpec, gray: bool) -> np.ndarray:
    long_side = rng.randint(spec.min_side, spec.max_side)
    short_side = max(16, int(long_side * rng.uniform(0.6, 1.0)))
    w, h = (long_side, short_side) if rng.random() < 0.7 else (short_side, long_side)
    sh, sw = src.shape[:2]
    scale = rng.uniform(0.35, 1.0) * min(sw / w, sh / h)
    cw, ch = max(8, int(w * scale)), max(8, int(h * scale))
    x, y = rng.randint(0, sw - cw), rng.randint(0, sh - ch)
    img = src[y:y + ch, x:x + cw]
    if rng.random() < 0.5:
        img = img[:, ::-1]
    img = cv2.resize(np.ascontiguousarray(img), (w, h),
                     interpolation=cv2.INTER_AREA if cw > w else cv2.INTER_LINEAR)
    img = cv2.convertScaleAbs(img, alpha=rng.uniform(0.85, 1.15), beta=rng.uniform(-12, 12))
    if gray:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    return img


def make_photos(out: str, spec: PhotoSpec = PhotoSpec(), workers: int = 2,
                photos: Optional[List[Tuple[str, str]]] = None) -> List[str]:
    """Write ``spec.n`` images under ``out``; return their relative paths."""
    photos = photos if photos is not None else find_sample_photos()
    if not photos:
        raise RuntimeError("no sample photos found: pip install scikit-learn matplotlib "
                           "scikit-image (they ship the photos)")
    sources = [cv2.imread(p, cv2.IMREAD_COLOR) for _, p in photos]
    names = ["n%08d_%s" % (k, photos[k % len(photos)][0]) for k in range(spec.classes)]
    for name in names:
        os.makedirs(os.path.join(out, name), exist_ok=True)
    order = list(range(spec.n))
    random.Random(f"kinds:{spec.seed}").shuffle(order)
    n_gray, n_png = round(spec.n * spec.gray_frac), round(spec.n * spec.png_frac)
    gray, png = set(order[:n_gray]), set(order[n_gray:n_gray + n_png])

    def one(i: int) -> str:
        c = i % spec.classes
        rng = random.Random(f"photo:{spec.seed}:{i}")
        img = _render(sources[c % len(sources)], rng, spec, i in gray)
        ext = ".png" if i in png else ".jpg"
        rel = os.path.join(names[c], "%s_%05d%s" % (names[c], i // spec.classes, ext))
        params = [cv2.IMWRITE_PNG_COMPRESSION, 3] if ext == ".png" else \
            [cv2.IMWRITE_JPEG_QUALITY, spec.quality]
        ok, buf = cv2.imencode(ext, img, params)
        if not ok:
            raise RuntimeError(f"cannot encode {rel}")
        path = os.path.join(out, rel)
        with open(path + ".tmp", "wb") as f:
            f.write(buf.tobytes())
        os.replace(path + ".tmp", path)
        return rel

    with ThreadPoolExecutor(max(1, workers)) as pool:
        return list(pool.map(one, range(spec.n)))


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--n", type=int, default=PhotoSpec.n)
    ap.add_argument("--classes", type=int, default=PhotoSpec.classes)
    ap.add_argument("--min-side", type=int, default=PhotoSpec.min_side)
    ap.add_argument("--max-side", type=int, default=PhotoSpec.max_side)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    rels = make_photos(a.out, PhotoSpec(n=a.n, classes=a.classes, min_side=a.min_side,
                                        max_side=a.max_side, seed=a.seed))
    print(f"wrote {len(rels)} images to {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
