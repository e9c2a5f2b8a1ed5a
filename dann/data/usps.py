"""USPS and its embedded substitute, scikit-learn's 8x8 digits: the pairs `mnist_to_usps`,
`usps_to_mnist`, `mnist_to_digits` and `digits_to_mnist`.

- USPS (16x16 grey, 7,291 train / 2,007 test): `dataset.root=/path` holding `/path/usps.bz2` and
  `/path/usps.t.bz2` (torchvision's layout: libsvm's files as downloaded, still bz2-compressed).
  There is no embedded USPS; without it the loaders raise and point at `mnist_to_digits`.
- Digits: scikit-learn's `load_digits()`, 1,797 real 8x8 handwritten digits from the UCI
  "optical recognition of handwritten digits" set (values 0..16), shipped inside scikit-learn.
  Not USPS: a smaller, coarser set used when no data can be downloaded.
MNIST comes from `/path/MNIST/raw` when that folder exists, else the embedded 5,000 digits.
The datamodule resizes every domain to `dataset.image_size` (28 by default).
"""

import logging
from pathlib import Path

import torch

from dann.data.mnist import EMBEDDED_MNIST_HINT, embedded_mnist_note, load_mnist_from_root
from dann.data.registry import (
    DomainData,
    PairData,
    PairSpec,
    Split,
    hold_out_val,
    register_pair,
    split_indices,
    take,
)
from dann.errors import DataError, InvalidDataError

log = logging.getLogger(__name__)

USPS_FILES = {"train": "usps.bz2", "test": "usps.t.bz2"}
USPS_URL = "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/multiclass.html#usps"
DIGITS_SIZES = (180, 360)  # val, test of the 1,797 digits; the remaining 1,257 train


def load_usps(root: str | None, split_seed: int) -> DomainData:
    from torchvision.datasets import USPS

    base = Path(root) if root is not None else None
    missing = [f for f in USPS_FILES.values() if base is None or not (base / f).is_file()]
    if missing:
        where = f"under {base}" if base is not None else "(dataset.root is not set)"
        raise DataError(
            f"USPS not found {where}: missing {', '.join(missing)}. Add dataset.root=/path "
            f"dataset.download=true to fetch and verify it, or pass dataset.root=/path with "
            f"/path/usps.bz2 (train) and /path/usps.t.bz2 (test), bz2-compressed as downloaded "
            f"from {USPS_URL} (torchvision's layout; torchvision.datasets.USPS(root, "
            f"download=True) writes them). Without downloads, dataset=mnist_to_digits is an "
            f"embedded real-data substitute (scikit-learn's 8x8 UCI digits, not USPS)."
        )
    parts = {}
    for split, name in USPS_FILES.items():
        try:
            ds = USPS(str(base), train=split == "train", download=False)
        except Exception as e:
            raise InvalidDataError(
                f"USPS file {base / name} could not be read ({e}); re-download it"
            ) from e
        images = torch.from_numpy(ds.data).unsqueeze(1).contiguous()  # uint8 (N, 1, 16, 16)
        parts[split] = Split(images, torch.tensor(ds.targets, dtype=torch.long))
    return hold_out_val("usps", parts["train"], parts["test"], split_seed)


def load_sklearn_digits(split_seed: int) -> DomainData:
    """The 1,797 8x8 UCI digits (0..16) scaled to uint8 0..255, split 1,257 / 180 / 360."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images).mul(255 / 16).round().clamp(0, 255)
    full = Split(images.to(torch.uint8).unsqueeze(1), torch.from_numpy(digits.target).long())
    train, val, test = split_indices(len(full), DIGITS_SIZES, split_seed)
    return DomainData("uci-digits-8x8", take(full, train), take(full, val), take(full, test))


def _mnist_and_usps(spec: PairSpec) -> tuple[DomainData, DomainData]:
    usps = load_usps(spec.root, spec.split_seed)  # first: no data, no point reading MNIST
    mnist, _ = load_mnist_from_root(spec.root, spec.data_dir, spec.split_seed)
    return mnist, usps


def _mnist_and_digits(spec: PairSpec) -> tuple[DomainData, DomainData]:
    digits = load_sklearn_digits(spec.split_seed)
    mnist, embedded = load_mnist_from_root(spec.root, spec.data_dir, spec.split_seed, warn=False)
    mnist_note = (
        f"MNIST = {embedded_mnist_note(mnist)}; {EMBEDDED_MNIST_HINT}"
        if embedded
        else f"MNIST = the full MNIST from {spec.root}/MNIST/raw"
    )
    log.warning(
        "EMBEDDED DATA: digits = scikit-learn's load_digits(), %d real 8x8 UCI handwritten "
        "digits (train %d / val %d / test %d), NOT USPS; %s. For USPS use dataset=mnist_to_usps "
        "dataset.root=/path with /path/usps.bz2 and /path/usps.t.bz2 (torchvision layout).",
        len(digits),
        len(digits.train),
        len(digits.val),
        len(digits.test),
        mnist_note,
    )
    return mnist, digits


@register_pair("mnist_to_usps")
def load_mnist_to_usps(spec: PairSpec) -> PairData:
    mnist, usps = _mnist_and_usps(spec)
    return PairData(source=mnist, target=usps, num_classes=10)


@register_pair("usps_to_mnist")
def load_usps_to_mnist(spec: PairSpec) -> PairData:
    mnist, usps = _mnist_and_usps(spec)
    return PairData(source=usps, target=mnist, num_classes=10)


@register_pair("mnist_to_digits")
def load_mnist_to_digits(spec: PairSpec) -> PairData:
    mnist, digits = _mnist_and_digits(spec)
    return PairData(source=mnist, target=digits, num_classes=10)


@register_pair("digits_to_mnist")
def load_digits_to_mnist(spec: PairSpec) -> PairData:
    mnist, digits = _mnist_and_digits(spec)
    return PairData(source=digits, target=mnist, num_classes=10)
