"""What the pairs read from user files (`table`, `sequences`, `text`) share: file checks, label
encoding and the train / val / test split.

- `existing_file`: a path that must be a readable, non-empty file of a known format.
- `encode_labels`: class index = position in the sorted source classes; a class found only in
  the target is an error (no classifier can learn it from the source); a target without labels
  gets `UNLABELLED` everywhere (its accuracy is then not reported).
- `split_rows`: each file is cut into train / val / test by a fixed permutation (`split_seed`),
  `val_fraction` and `test_fraction` of its rows held out (at least one row each).
Preprocessing (statistics, categories, vocabulary) is fitted on the training rows only.
"""

from pathlib import Path

import numpy as np
import torch

from dann.data.registry import UNLABELLED, DomainData, Split, split_indices
from dann.errors import ConfigError, DataError, InvalidDataError

DOMAIN_KEYS = {"source": "dataset.source", "target": "dataset.target"}


def existing_file(path: str | None, domain: str, formats: tuple[str, ...], example: str) -> Path:
    """`path` (the dataset.source / dataset.target value) as a Path, checked: set, present, a
    file, not empty, and of one of `formats` (suffixes)."""
    key = DOMAIN_KEYS[domain]
    if path is None:
        raise ConfigError(
            f"{key} is not set: give the {domain} file, e.g. {key}={example} "
            f"(formats: {', '.join(formats)})"
        )
    file = Path(str(path)).expanduser()
    if not file.exists():
        raise DataError(f"{key}={path}: no such file; give the path of the {domain} data file")
    if not file.is_file():
        raise DataError(f"{key}={path} is a directory; give the {domain} data file itself")
    if file.suffix.lower() not in formats:
        raise InvalidDataError(
            f"{key}={path}: unknown format {file.suffix or '(no suffix)'!r}; use one of "
            f"{', '.join(formats)}"
        )
    if file.stat().st_size == 0:
        raise InvalidDataError(f"{file} is empty (0 bytes): give a file with a header and rows")
    return file


def pandas():
    """The pandas module, or a clear error naming the extra that installs it."""
    try:
        import pandas as pd
    except ImportError as e:  # pragma: no cover - pandas comes with the `tables` extra
        raise DataError("table and text files need pandas: pip install -e '.[tables]'") from e
    return pd


def load_npz(file: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(file, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError) as e:
        raise InvalidDataError(f"{file} is not a readable .npz archive ({e})") from e


def npz_with_x(file: Path, holds: str) -> dict[str, np.ndarray]:
    """The arrays of an .npz file that must hold one named x; `holds` says what such a file
    holds (the error's hint)."""
    arrays = load_npz(file)
    if "x" not in arrays:
        names = list(arrays)
        shown = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
        raise InvalidDataError(f"{file} has no array 'x' (it has {shown or 'none'}); {holds}")
    return arrays


def plain(values) -> list:
    """NumPy scalars as Python ones (ints, floats, strings): checkpoint-safe plain types."""
    return [v.item() if isinstance(v, np.generic) else v for v in values]


def encode_labels(
    source: np.ndarray,
    target: np.ndarray | None,
    files: tuple[Path, Path],
    classes: list | None = None,
) -> tuple[torch.Tensor, torch.Tensor, list]:
    """(source indices, target indices, classes). `classes`: the sorted source classes, or the
    ones a checkpoint was trained with (then the source may hold a subset of them)."""
    found = sorted(set(plain(np.unique(source))))
    if classes is None:
        classes = found
        if len(classes) < 2:
            raise InvalidDataError(
                f"{files[0]} has {len(classes)} label class ({classes}); a classifier needs "
                "at least 2"
            )
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(found) - set(index), key=str)
    if unknown:
        raise InvalidDataError(
            f"{files[0]} has label classes {unknown} the checkpoint was not trained with "
            f"(its classes: {classes})"
        )
    src = torch.tensor([index[c] for c in plain(source)], dtype=torch.long)
    if target is None:
        return src, None, classes
    only_target = sorted(set(plain(np.unique(target))) - set(index), key=str)
    if only_target:
        raise InvalidDataError(
            f"label classes {only_target} occur in the target ({files[1]}) but never in the "
            f"source ({files[0]}, classes {classes}): no source example teaches them. Drop "
            "those target rows, map them onto source classes, or drop the target's label "
            "column (then the target is unlabelled)"
        )
    return src, torch.tensor([index[c] for c in plain(target)], dtype=torch.long), classes


def unlabelled(n: int) -> torch.Tensor:
    return torch.full((n,), UNLABELLED, dtype=torch.long)


def split_rows(
    n: int, val_fraction: float, test_fraction: float, seed: int, file: Path
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train, val, test) row indices of a file of `n` rows, by a fixed permutation."""
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 < f < 1:
            raise ConfigError(f"dataset.{name}={f} must be in (0, 1)")
    sizes = (max(1, round(n * val_fraction)), max(1, round(n * test_fraction)))
    if n - sum(sizes) < 1:
        raise InvalidDataError(
            f"{file} has {n} row(s): too few for train / val / test splits (need at least 3)"
        )
    return split_indices(n, sizes, seed)


def labels_and_rows(ys, yt, n_source: int, n_target: int, files: tuple[Path, Path], spec):
    """What every file pair does first: the label indices (with the classes of a checkpoint's
    saved preprocessing, when the loader was given it back) and the fixed (train, val, test)
    rows of both files. Returns (fitted or None, y_source, y_target, classes, source rows,
    target rows)."""
    o = spec.options
    fitted = o.get("preprocessing")
    y_src, y_tgt, classes = encode_labels(ys, yt, files, fitted["classes"] if fitted else None)
    seed, val_f, test_f = spec.split_seed, o.get("val_fraction", 0.1), o.get("test_fraction", 0.1)
    src_rows = split_rows(n_source, val_f, test_f, seed, files[0])
    tgt_rows = split_rows(n_target, val_f, test_f, seed + 1, files[1])
    return fitted, y_src, y_tgt, classes, src_rows, tgt_rows


def domain_splits(
    name: str, inputs: torch.Tensor, labels: torch.Tensor, rows: tuple[torch.Tensor, ...]
) -> DomainData:
    train, val, test = (Split(inputs[i], labels[i]) for i in rows)
    return DomainData(name, train, val, test)
