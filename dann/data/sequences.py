"""`sequences`: a pair of NPZ files of sequences, arrays `x` (N, T, F), `y` (N,) and optionally
`lengths` (N,), the number of valid steps of each sequence (the rest is padding).

    python train.py dataset=sequences dataset.source=src.npz dataset.target=tgt.npz backbone=gru

- Each feature is standardised with the mean and std over the valid steps of the SOURCE
  TRAINING sequences (logged; saved as the pair's `preprocessing`, with the training length
  T, `steps`, which scripts/export.py uses).
- Both domains are padded to the longer T. The inputs the backbone gets are (N, T, F + 1): the
  standardised features, zero at padded steps, then a validity channel (1 valid, 0 padding).
  `gru` packs the sequences by those lengths; `conv1d` zeroes padded steps after each layer
  and mean-pools over valid steps only (dann/models/sequence.py).
- Labels, splits and errors as `table` (dann/data/userfiles.py); the target `y` is optional.
"""

import logging
from pathlib import Path

import numpy as np
import torch

from dann.data.registry import PairData, PairSpec, register_pair
from dann.data.userfiles import (
    domain_splits,
    existing_file,
    labels_and_rows,
    npz_with_x,
    unlabelled,
)
from dann.errors import InvalidDataError

log = logging.getLogger(__name__)

FORMATS = (".npz",)


def read_sequences(file: Path) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """(x (N, T, F) float, y or None, lengths (N,)) of one file, checked."""
    arrays = npz_with_x(
        file, "a sequence NPZ holds x (N, T, F), y (N,) and optionally lengths (N,)"
    )
    x = arrays["x"]
    if x.ndim == 2:
        raise InvalidDataError(
            f"{file}: x has shape {x.shape}; sequences need (N, T, F), e.g. x[..., None] for one "
            "feature per step (for (N, F) rows use dataset=table)"
        )
    if x.ndim != 3:
        raise InvalidDataError(f"{file}: x has shape {x.shape}; sequences need (N, T, F)")
    if len(x) == 0 or x.shape[1] == 0:
        raise InvalidDataError(f"{file}: x has shape {x.shape}, no sequences or no steps")
    if not np.issubdtype(x.dtype, np.number):
        raise InvalidDataError(f"{file}: x holds {x.dtype}, not numbers")
    n, t = x.shape[:2]
    y = arrays.get("y")
    if y is not None and len(y) != n:
        raise InvalidDataError(f"{file}: x has {n} sequences but y has {len(y)} labels")
    lengths = arrays.get("lengths")
    if lengths is None:
        lengths = np.full(n, t)
    elif lengths.shape != (n,) or not np.issubdtype(lengths.dtype, np.integer):
        raise InvalidDataError(f"{file}: lengths must be N={n} integers, got {lengths.shape}")
    elif lengths.min() < 1 or lengths.max() > t:
        raise InvalidDataError(
            f"{file}: lengths must lie in [1, T={t}], got [{lengths.min()}, {lengths.max()}]"
        )
    valid = np.arange(t)[None, :] < lengths[:, None]
    bad = ~np.isfinite(x.astype(np.float64)).all(axis=2) & valid
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise InvalidDataError(
            f"{file} has NaN or inf at {int(bad.sum())} valid step(s) of {len(rows)} "
            f"sequence(s), e.g. sequence {rows[0]}; impute them, or end those sequences "
            "earlier with the lengths array"
        )
    return x, (None if y is None else y.reshape(-1)), lengths


def fit_scale(x: np.ndarray, lengths: np.ndarray) -> dict:
    """Per-feature mean and std over the valid steps of the given (training) sequences."""
    valid = np.arange(x.shape[1])[None, :] < lengths[:, None]
    steps = x[valid].astype(np.float64)  # (valid steps, F)
    std = steps.std(axis=0)
    return {"mean": steps.mean(axis=0).tolist(), "std": np.where(std > 0, std, 1.0).tolist()}


def encode(x: np.ndarray, lengths: np.ndarray, scale: dict, steps: int) -> torch.Tensor:
    """Standardised, zero-padded to `steps`, validity channel appended: (N, steps, F + 1)."""
    n, t, f = x.shape
    out = np.zeros((n, steps, f + 1), dtype=np.float32)
    valid = np.arange(t)[None, :] < lengths[:, None]
    z = (x.astype(np.float64) - np.array(scale["mean"])) / np.array(scale["std"])
    out[:, :t, :f] = np.where(valid[..., None], z, 0.0)
    out[:, :t, f] = valid
    return torch.from_numpy(out)


def encode_file(file: Path, fitted: dict, options: dict) -> tuple[torch.Tensor, np.ndarray | None]:
    """One NPZ file's sequences encoded with a checkpoint's fitted standardisation
    (scripts/predict.py): (inputs (N, T, F + 1), padded to at least the training length; y or
    None)."""
    x, y, lengths = read_sequences(file)
    if x.shape[2] != len(fitted["mean"]):
        raise InvalidDataError(
            f"{file} has {x.shape[2]} features per step; the checkpoint was trained with "
            f"{len(fitted['mean'])}"
        )
    return encode(x, lengths, fitted, max(x.shape[1], int(fitted.get("steps") or 0))), y


@register_pair("sequences")
def load_sequences(spec: PairSpec) -> PairData:
    o = spec.options
    files = (
        existing_file(o.get("source"), "source", FORMATS, "src.npz"),
        existing_file(o.get("target"), "target", FORMATS, "tgt.npz"),
    )
    (xs, ys, ls), (xt, yt, lt) = (read_sequences(f) for f in files)
    if ys is None:
        raise InvalidDataError(f"{files[0]} has no array 'y': the source needs labels")
    if xs.shape[2] != xt.shape[2]:
        raise InvalidDataError(
            f"the source sequences have {xs.shape[2]} features per step ({files[0]}: x "
            f"{xs.shape}) but the target ones {xt.shape[2]} ({files[1]}: x {xt.shape}); both "
            "need the same features, in the same order"
        )
    fitted, y_src, y_tgt, classes, src_rows, tgt_rows = labels_and_rows(
        ys, yt, len(xs), len(xt), files, spec
    )
    if fitted is None:
        train = src_rows[0].numpy()
        steps = max(xs.shape[1], xt.shape[1])  # the training length, for export
        fitted = {**fit_scale(xs[train], ls[train]), "classes": classes, "steps": steps}
        log.info(
            "sequences: %d feature(s) standardised with the source training sequences' valid "
            "steps: mean %s, std %s",
            xs.shape[2],
            np.round(fitted["mean"][:12], 4).tolist(),
            np.round(fitted["std"][:12], 4).tolist(),
        )
    elif len(fitted["mean"]) != xs.shape[2]:
        raise InvalidDataError(
            f"{files[0]} has {xs.shape[2]} features per step; the checkpoint was trained with "
            f"{len(fitted['mean'])}"
        )
    if y_tgt is None:
        log.info("sequences: %s has no 'y': the target is unlabelled", files[1])
        y_tgt = unlabelled(len(xt))
    steps = max(xs.shape[1], xt.shape[1])
    x_src, x_tgt = encode(xs, ls, fitted, steps), encode(xt, lt, fitted, steps)
    return PairData(
        source=domain_splits(files[0].stem, x_src, y_src, src_rows),
        target=domain_splits(files[1].stem, x_tgt, y_tgt, tgt_rows),
        num_classes=len(fitted["classes"]),
        input_size=xs.shape[2],
        preprocessing=fitted,
    )
