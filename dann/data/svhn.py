"""SVHN (Street View House Numbers, cropped digits) and the `svhn_to_mnist` pair.

SVHN needs `dataset.root=/path` holding `/path/train_32x32.mat` and `/path/test_32x32.mat` (the
"Format 2" files of http://ufldl.stanford.edu/housenumbers/, torchvision's layout): `X` uint8
32 x 32 x 3 x N, `y` N x 1 with label 10 meaning digit 0. They are read with scipy exactly as
torchvision.datasets.SVHN reads them, without its MD5 check of the official files, so the same
reader also serves SynDigits' `synth_*_32x32.mat` (dann/data/syndigits.py). There is no embedded
SVHN. MNIST comes from `/path/MNIST/raw` when that folder exists, else the embedded 5,000 digits;
the datamodule makes it 3-channel 32x32 (`dataset.channels`, `dataset.image_size`).
"""

import logging
from pathlib import Path

import numpy as np
import torch

from dann.data.mnist import load_mnist_from_root
from dann.data.registry import (
    DomainData,
    PairData,
    PairSpec,
    Split,
    hold_out_val,
    register_pair,
)
from dann.errors import DataError, InvalidDataError

log = logging.getLogger(__name__)

SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}
SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"


def read_digits_mat(path: Path) -> Split:
    """An SVHN-format .mat file (X: 32x32x3xN uint8, y: Nx1, 10 = digit 0) as a uint8 Split
    (N, 3, 32, 32) with labels 0..9."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path))
        x, y = mat["X"], mat["y"]
    except Exception as e:
        raise InvalidDataError(f"{path} could not be read as an SVHN-format .mat ({e})") from e
    if x.ndim != 4 or x.shape[2] != 3 or y.size != x.shape[3]:
        raise InvalidDataError(
            f"{path}: expected X of shape 32x32x3xN and y of N labels, got X {x.shape}, y {y.shape}"
        )
    labels = y.astype(np.int64).reshape(-1)
    labels[labels == 10] = 0
    if labels.min() < 0 or labels.max() > 9:
        raise InvalidDataError(f"{path}: labels must be 1..10 (10 = digit 0) or 0..9")
    images = np.ascontiguousarray(np.transpose(x, (3, 2, 0, 1))).astype(np.uint8, copy=False)
    return Split(torch.from_numpy(images), torch.from_numpy(labels))


def load_svhn(root: str | None, split_seed: int) -> DomainData:
    base = Path(root) if root is not None else None
    missing = [f for f in SVHN_FILES.values() if base is None or not (base / f).is_file()]
    if missing:
        where = f"under {base}" if base is not None else "(dataset.root is not set)"
        raise DataError(
            f"SVHN not found {where}: missing {', '.join(missing)}. Add dataset.root=/path "
            f"dataset.download=true to fetch and verify it, or pass dataset.root=/path with "
            f"/path/train_32x32.mat and /path/test_32x32.mat, the cropped-digit 'Format 2' files "
            f"from {SVHN_URL} (torchvision's layout; torchvision.datasets.SVHN(root, split, "
            f"download=True) writes them). There is no embedded SVHN."
        )
    train = read_digits_mat(base / SVHN_FILES["train"])
    test = read_digits_mat(base / SVHN_FILES["test"])
    return hold_out_val("svhn", train, test, split_seed)


@register_pair("svhn_to_mnist")
def load_svhn_to_mnist(spec: PairSpec) -> PairData:
    svhn = load_svhn(spec.root, spec.split_seed)
    mnist, _ = load_mnist_from_root(spec.root, spec.data_dir, spec.split_seed)
    return PairData(source=svhn, target=mnist, num_classes=10)
