"""A Gluon-era ImageNet training loop over `.rec` files, ported off MXNet by changing one import.

``get_data_rec`` and ``get_data_loader`` are GluonCV's ImageNet record loaders
(``scripts/classification/imagenet/train_imagenet.py``: ``mx.io.ImageRecordIter``
with ``random_resized_crop``/colour jitter/PCA noise, and the Gluon path with
``vision.ImageRecordDataset`` + ``transform_first`` + ``DataLoader``), and
``train`` keeps its loop shape (``batch_fn`` with ``gluon.utils.split_and_load``,
per-epoch ``reset()``, train/val accuracy).  The only edit to the data code is
the module name in its imports (``mxnet`` -> ``cloudrec.mxnet_compat``).  cloudrec has no ``gluon.nn``/autograd, so the network is a
small numpy softmax classifier on pooled colour features: enough to show the
batches are right (it learns the synthetic classes), not a model zoo.

    python examples/gluon_imagenet_rec.py --make /tmp/inet            # write a tiny dataset
    python examples/gluon_imagenet_rec.py /tmp/inet --loader gluon    # train through DataLoader
    python examples/gluon_imagenet_rec.py s3://bucket/inet --make --endpoint-url http://127.0.0.1:PORT
"""
from __future__ import annotations

import argparse
import os

import numpy as np

# the port: "mxnet" became "cloudrec.mxnet_compat" in the imports, nothing else in the data code
from cloudrec import mxnet_compat as mx                         # was: import mxnet as mx
from cloudrec.mxnet_compat import gluon                         # was: from mxnet import gluon
from cloudrec.mxnet_compat.gluon.data.vision import transforms  # was: from mxnet.gluon...


# ---- GluonCV's data code (unchanged but for the imports above) --------------------------
def get_data_rec(rec_train, rec_train_idx, rec_val, rec_val_idx, batch_size, num_workers,
                 input_size=224, crop_ratio=0.875):
    jitter_param = 0.4
    lighting_param = 0.1
    resize = int(np.ceil(input_size / crop_ratio))
    mean_rgb = [123.68, 116.779, 103.939]
    std_rgb = [58.393, 57.12, 57.375]

    def batch_fn(batch, ctx):
        data = gluon.utils.split_and_load(batch.data[0], ctx_list=ctx, batch_axis=0)
        label = gluon.utils.split_and_load(batch.label[0], ctx_list=ctx, batch_axis=0)
        return data, label

    train_data = mx.io.ImageRecordIter(
        path_imgrec=rec_train,
        path_imgidx=rec_train_idx,
        preprocess_threads=num_workers,
        shuffle=True,
        batch_size=batch_size,
        data_shape=(3, input_size, input_size),
        mean_r=mean_rgb[0],
        mean_g=mean_rgb[1],
        mean_b=mean_rgb[2],
        std_r=std_rgb[0],
        std_g=std_rgb[1],
        std_b=std_rgb[2],
        rand_mirror=True,
        random_resized_crop=True,
        max_aspect_ratio=4. / 3.,
        min_aspect_ratio=3. / 4.,
        max_random_area=1,
        min_random_area=0.08,
        brightness=jitter_param,
        saturation=jitter_param,
        contrast=jitter_param,
        pca_noise=lighting_param,
    )
    val_data = mx.io.ImageRecordIter(
        path_imgrec=rec_val,
        path_imgidx=rec_val_idx,
        preprocess_threads=num_workers,
        shuffle=False,
        batch_size=batch_size,
        resize=resize,
        data_shape=(3, input_size, input_size),
        mean_r=mean_rgb[0],
        mean_g=mean_rgb[1],
        mean_b=mean_rgb[2],
        std_r=std_rgb[0],
        std_g=std_rgb[1],
        std_b=std_rgb[2],
    )
    return train_data, val_data, batch_fn


def get_data_loader(rec_train, rec_val, batch_size, num_workers, input_size=224,
                    crop_ratio=0.875):
    normalize = transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    jitter_param = 0.4
    lighting_param = 0.1
    resize = int(np.ceil(input_size / crop_ratio))

    def batch_fn(batch, ctx):
        data = gluon.utils.split_and_load(batch[0], ctx_list=ctx, batch_axis=0)
        label = gluon.utils.split_and_load(batch[1], ctx_list=ctx, batch_axis=0)
        return data, label

    transform_train = transforms.Compose([
        transforms.RandomResizedCrop(input_size),
        transforms.RandomFlipLeftRight(),
        transforms.RandomColorJitter(brightness=jitter_param, contrast=jitter_param,
                                     saturation=jitter_param),
        transforms.RandomLighting(lighting_param),
        transforms.ToTensor(),
        normalize
    ])
    transform_test = transforms.Compose([
        transforms.Resize(resize, keep_ratio=True),
        transforms.CenterCrop(input_size),
        transforms.ToTensor(),
        normalize
    ])

    train_data = gluon.data.DataLoader(
        gluon.data.vision.ImageRecordDataset(rec_train).transform_first(transform_train),
        batch_size=batch_size, shuffle=True, last_batch='discard', num_workers=num_workers)
    val_data = gluon.data.DataLoader(
        gluon.data.vision.ImageRecordDataset(rec_val).transform_first(transform_test),
        batch_size=batch_size, shuffle=False, num_workers=num_workers)
    return train_data, val_data, batch_fn


# ---- the model: numpy, because cloudrec ships data loading only ---------------------------
class PooledSoftmax:
    """Softmax regression on per-channel mean and std of the image (6 features)."""

    def __init__(self, classes: int, lr: float = 0.5) -> None:
        self.w = np.zeros((6, classes))
        self.b = np.zeros(classes)
        self.lr = lr

    @staticmethod
    def features(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        return np.concatenate([x.mean(axis=(2, 3)), x.std(axis=(2, 3))], axis=1)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.features(x) @ self.w + self.b

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        f = self.features(x)
        z = f @ self.w + self.b
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        onehot = np.eye(self.w.shape[1])[y]
        g = (p - onehot) / len(y)
        self.w -= self.lr * f.T @ g
        self.b -= self.lr * g.sum(axis=0)
        return float(-np.log(p[np.arange(len(y)), y] + 1e-12).mean())


def _accuracy(net, batches, batch_fn, ctx, is_iter):
    correct = total = 0
    for batch in batches:
        data, label = batch_fn(batch, ctx)
        for x, y in zip(data, label):
            pad = batch.pad if is_iter else 0
            n = len(y) - pad
            pred = net(x.asnumpy()[:n]).argmax(axis=1)
            correct += int((pred == y.asnumpy()[:n].astype(int)).sum())
            total += n
    return correct / max(total, 1), total


def train(args) -> int:
    ctx = [mx.cpu()]
    root = args.root.rstrip("/")
    if args.loader == "rec":
        train_data, val_data, batch_fn = get_data_rec(
            root + "/train.rec", root + "/train.idx", root + "/val.rec", root + "/val.idx",
            args.batch_size, args.num_workers, args.input_size)
    else:
        train_data, val_data, batch_fn = get_data_loader(
            root + "/train.rec", root + "/val.rec", args.batch_size, args.num_workers,
            args.input_size)
    is_iter = args.loader == "rec"
    net = PooledSoftmax(args.classes)
    seen = 0
    for epoch in range(args.epochs):
        if is_iter:
            train_data.reset()
        losses = []
        for batch in train_data:
            data, label = batch_fn(batch, ctx)
            for x, y in zip(data, label):
                losses.append(net.step(x.asnumpy(), y.asnumpy().astype(int)))
                seen += len(y)
        if is_iter:
            val_data.reset()
        acc, n_val = _accuracy(net, val_data, batch_fn, ctx, is_iter)
        print(f"epoch {epoch}: loss {np.mean(losses):.3f} val-acc {acc:.3f} ({n_val} images)")
    print(f"trained {args.epochs} epochs, {seen} images through {args.loader}")
    return 0


# ---- a tiny ImageNet-style dataset (class = dominant colour) ------------------------------
def write_dataset(root: str, classes: int = 3, n_train: int = 48, n_val: int = 12) -> None:
    """train.rec/.idx and val.rec/.idx with JPEGs of noisy colour fields, one hue per class."""
    import cv2
    rng = np.random.default_rng(0)
    colours = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40]])[:classes]
    for split, n in (("train", n_train), ("val", n_val)):
        rec = mx.recordio.MXIndexedRecordIO(f"{root}/{split}.idx", f"{root}/{split}.rec", "w")
        for i in range(n):
            label = i % classes
            h, w = rng.integers(48, 80, size=2)
            img = np.clip(colours[label] + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
            ok, jpg = cv2.imencode(".jpg", img[:, :, ::-1])
            rec.write_idx(i, mx.recordio.pack(mx.recordio.IRHeader(0, float(label), i, 0),
                                              jpg.tobytes()))
        rec.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", help="folder or URL with train.rec/.idx and val.rec/.idx")
    ap.add_argument("--make", action="store_true", help="write a tiny dataset there first")
    ap.add_argument("--loader", choices=("rec", "gluon"), default="rec",
                    help="rec: mx.io.ImageRecordIter; gluon: ImageRecordDataset + DataLoader")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--input-size", type=int, default=32)
    ap.add_argument("--num-workers", type=int, default=2)
    ap.add_argument("--classes", type=int, default=3)
    ap.add_argument("--endpoint-url", default=os.environ.get("CLOUDREC_S3_ENDPOINT"))
    args = ap.parse_args(argv)
    if args.endpoint_url:
        mx.storage_options.update(client_kwargs={"endpoint_url": args.endpoint_url})
    if args.make:
        if "://" not in args.root:
            os.makedirs(args.root, exist_ok=True)
        write_dataset(args.root, args.classes)
    mx.random.seed(0)
    return train(args)


if __name__ == "__main__":
    raise SystemExit(main())
