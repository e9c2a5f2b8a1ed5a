"""Dataset pairs register here once, by name, and are looked up by name.

A pair loader is `load(spec: PairSpec) -> PairData`. Each split of each domain is either
- a `Split`: tensors held in memory, `inputs` uint8 images (N, C, H, W) or float features
  (N, ...), with int64 `labels` (N,); the fast path, batched by index; or
- a `torch.utils.data.Dataset` yielding `(x, y)` per item (large folder datasets, decoded by
  DataLoader workers with their own transforms).
The datamodule drops the target training labels before anything reaches the model.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset

from dann.errors import ConfigError

UNLABELLED = -1  # the label of an example whose class is unknown (a target file without labels)


@dataclass(frozen=True)
class Split:
    inputs: torch.Tensor  # uint8 images (N, C, H, W), or float features (N, ...)
    labels: torch.Tensor  # int64, (N,); UNLABELLED (-1) where the class is unknown

    def __post_init__(self):
        if self.inputs.dtype == torch.uint8 and self.inputs.ndim != 4:
            raise ValueError(
                f"uint8 inputs must be images (N, C, H, W), got {tuple(self.inputs.shape)}"
            )
        if len(self.inputs) != len(self.labels):
            raise ValueError(f"{len(self.inputs)} inputs but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def is_image(self) -> bool:
        return self.inputs.dtype == torch.uint8


@dataclass(frozen=True)
class DomainData:
    name: str
    train: Split | Dataset
    val: Split | Dataset
    test: Split | Dataset

    def __len__(self) -> int:
        """Examples over all three splits."""
        return len(self.train) + len(self.val) + len(self.test)


@dataclass(frozen=True)
class PairData:
    source: DomainData
    target: DomainData
    num_classes: int
    # the width of one input step the backbone reads, when it is not inputs.shape[-1] (sequences
    # carry a validity-mask channel after their features)
    input_size: int | None = None
    # what was fitted on the training data (standardisation statistics, categories, vocabulary):
    # plain types, saved in checkpoints; a loader given it back in `options["preprocessing"]`
    # applies it instead of fitting again
    preprocessing: dict | None = None


@dataclass(frozen=True)
class PairSpec:
    """What a loader is asked for: the dataset config, minus what only the datamodule uses."""

    name: str
    root: str | None = None  # user-supplied files; None = embedded/generated data if any
    data_dir: Path = Path("data")  # caches of generated/decoded data
    split_seed: int = 0
    image_size: int | None = None
    channels: int | None = None
    options: dict = field(default_factory=dict)  # pair-specific keys of the dataset config


PairLoader = Callable[[PairSpec], PairData]
_PAIRS: dict[str, PairLoader] = {}
# the modules that register pairs, imported on the first lookup (dann/data/__init__.py)
PAIR_MODULES = (
    "amazon",  # amazon_reviews
    "benchmarks",  # office31, office_home, visda2017, domainnet
    "folders",  # folder, synsigns_to_gtsrb
    "mnistm",  # mnist_to_mnistm
    "sequences",  # sequences
    "svhn",  # svhn_to_mnist
    "syndigits",  # syndigits_to_svhn
    "table",  # table
    "text",  # text
    "toy",  # moons
    "usps",  # mnist_to_usps, usps_to_mnist, *_digits
)


def _register_all() -> None:
    import importlib

    for module in PAIR_MODULES:
        importlib.import_module(f"dann.data.{module}")


def register_pair(name: str) -> Callable[[PairLoader], PairLoader]:
    def add(loader: PairLoader) -> PairLoader:
        if name in _PAIRS:
            raise ValueError(f"dataset pair {name!r} is registered twice")
        _PAIRS[name] = loader
        return loader

    return add


def available_pairs() -> list[str]:
    _register_all()
    return sorted(_PAIRS)


def get_pair(name: str) -> PairLoader:
    _register_all()
    if name not in _PAIRS:
        choices = ", ".join(available_pairs())
        raise ConfigError(f"unknown dataset pair {name!r}; valid choices: {choices}")
    return _PAIRS[name]


def val_size(num_train: int) -> int:
    """Validation images held out of a full training set: 5,000 (of MNIST's 60,000), fewer for
    small sets."""
    return min(5_000, num_train // 10)


def split_indices(n: int, sizes: tuple[int, int], seed: int) -> tuple[torch.Tensor, ...]:
    """A fixed random permutation of range(n) cut into (rest, sizes[0], sizes[1])."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    a, b = sizes
    return perm[: n - a - b], perm[n - a - b : n - b], perm[n - b :]


def take(split: Split, index: torch.Tensor) -> Split:
    return Split(split.inputs[index], split.labels[index])


def hold_out_val(name: str, train: Split, test: Split, seed: int) -> DomainData:
    """A domain from an official train/test release: `val_size` training images, chosen by a
    fixed permutation, become the validation split."""
    rest, val, _ = split_indices(len(train), (val_size(len(train)), 0), seed)
    return DomainData(name, take(train, rest), take(train, val), test)
