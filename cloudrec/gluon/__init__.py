"""MXNet Gluon's data API (``mx.gluon.data``) on numpy, reading any fsspec URL.

Reach it as ``mx.gluon.data`` after ``from cloudrec import mxnet_compat as mx``
(or ``from cloudrec.mxnet_compat.gluon.data.vision import transforms``).
Samples and batches are the shim's NDArray (a numpy array with ``asnumpy()``).
Only the data side of Gluon exists here: no ``nn``, ``Trainer`` or autograd.
"""
from cloudrec.gluon import rng
from cloudrec.gluon import data
from cloudrec.gluon import utils

__all__ = ["data", "rng", "utils"]
