"""`table`: a pair of tabular files, one row per example (CSV, Parquet or NPZ).

    python train.py dataset=table dataset.source=a.csv dataset.target=b.parquet dataset.label=y

- CSV / Parquet: every column except `dataset.label` is a feature. Numeric columns (bool
  included) are standardised with the mean and std of the SOURCE TRAINING rows (logged);
  the other columns are categorical, one-hot encoded over the union of the categories found in
  both files. NPZ: arrays `x` (N, F) numbers and `y` (N,) labels.
- The source needs the label column. The target may lack it: it is then unlabelled (target
  accuracy is not reported); with it, target labels serve reporting only (the datamodule
  drops the target training labels). Classes are the sorted source label values; a class
  only in the target is an error.
- Each file is split train / val / test (`val_fraction`, `test_fraction`, fixed by
  `split_seed`). What was fitted (columns, statistics, categories, classes) is the pair's
  `preprocessing`, saved in checkpoints and applied as is when given back.
Bad files (missing, empty, no such label column, NaN/inf, different feature columns) are
errors naming the file and the fix, raised before any training.
"""

import difflib
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
    pandas,
    unlabelled,
)
from dann.errors import DataError, InvalidDataError

log = logging.getLogger(__name__)

FORMATS = (".csv", ".parquet", ".pq", ".npz")
SHOWN = 12  # columns named in log lines and error messages


def _names(names, n: int = SHOWN) -> str:
    names = [str(c) for c in names]
    return ", ".join(names[:n]) + (f", ... ({len(names)} in all)" if len(names) > n else "")


def read_table(file: Path, label: str):
    """(feature DataFrame, labels or None) of one file."""
    pd = pandas()
    suffix = file.suffix.lower()
    if suffix == ".npz":
        arrays = npz_with_x(file, "a table NPZ holds x (N, F) features and y (N,) labels")
        x = arrays["x"]
        if x.ndim != 2:
            raise InvalidDataError(
                f"{file}: x has shape {x.shape}; a table needs (N, F) (for (N, T, F) "
                "sequences use dataset=sequences)"
            )
        if not np.issubdtype(x.dtype, np.number) and x.dtype != bool:
            raise InvalidDataError(f"{file}: x holds {x.dtype}, not numbers")
        frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(x.shape[1])])
        y = arrays.get("y")
        if y is not None and len(y) != len(x):
            raise InvalidDataError(f"{file}: x has {len(x)} rows but y has {len(y)}")
        return frame, (None if y is None else np.asarray(y).reshape(-1))
    try:
        if suffix == ".csv":
            frame = pd.read_csv(file)
        else:
            frame = pd.read_parquet(file)
    except ImportError as e:
        raise DataError(f"reading {file} needs pyarrow: pip install -e '.[tables]' ({e})") from e
    except pd.errors.EmptyDataError as e:
        raise InvalidDataError(f"{file} is empty: give a file with a header and rows") from e
    except (ValueError, OSError, pd.errors.ParserError) as e:
        raise InvalidDataError(f"{file} is not a readable {suffix[1:]} table ({e})") from e
    if label not in frame.columns:
        return frame, None
    return frame.drop(columns=[label]), frame[label].to_numpy()


def _did_you_mean(label: str, frame) -> str:
    close = difflib.get_close_matches(label, [str(c) for c in frame.columns], n=1, cutoff=0.6)
    return f" (did you mean dataset.label={close[0]}?)" if close else ""


def check_label_column(frame, labels, file: Path, label: str, domain: str) -> None:
    if labels is None:
        if domain == "source":
            is_npz = file.suffix.lower() == ".npz"
            raise InvalidDataError(
                f"{file} has no array 'y' (the labels)"
                if is_npz
                else f"dataset.label={label}: {file} has no such column"
                f"{_did_you_mean(label, frame)}; its columns: {_names(frame.columns, 50)}. "
                "Set dataset.label=<the label column>"
            )
        return
    missing = np.flatnonzero(pandas().isna(labels))
    if len(missing):
        raise InvalidDataError(
            f"{file}: {len(missing)} row(s) have no label in {label!r} (rows "
            f"{_names(missing.tolist(), 5)}); fill or drop them"
            + ("" if domain == "source" else ", or drop the column to leave the target unlabelled")
        )


def check_columns(source, target, files: tuple[Path, Path]):
    """The target's columns in the source's order; the same columns, of the same kind."""
    pd = pandas()
    only_s = [c for c in source.columns if c not in set(target.columns)]
    only_t = [c for c in target.columns if c not in set(source.columns)]
    if only_s or only_t:
        raise InvalidDataError(
            f"the source and target feature columns differ: only in the source ({files[0]}): "
            f"{_names(only_s) or 'none'}; only in the target ({files[1]}): "
            f"{_names(only_t) or 'none'}. Both files need the same feature columns "
            "(rename or drop columns so they match)"
        )
    target = target[list(source.columns)]
    for c in source.columns:
        kinds = [pd.api.types.is_numeric_dtype(f[c]) for f in (source, target)]
        if kinds[0] != kinds[1]:
            which = ("source", "target") if kinds[0] else ("target", "source")
            raise InvalidDataError(
                f"column {c!r} is numeric in the {which[0]} but holds text in the "
                f"{which[1]} ({files[0]}, {files[1]}): fix the stray values, or make it text "
                "in both to treat it as categorical"
            )
    return target


def check_finite(frame, numeric: list, file: Path) -> None:
    """No NaN, inf or empty cell in any feature column."""
    bad = {}
    for c in frame.columns:
        values = frame[c]
        broken = values.isna().to_numpy()
        if c in numeric:
            broken = broken | ~np.isfinite(values.to_numpy(dtype=float, na_value=np.nan))
        if broken.any():
            bad[c] = np.flatnonzero(broken)
    if bad:
        detail = "; ".join(
            f"{c!r}: {len(rows)} row(s), e.g. row {rows[0]}" for c, rows in list(bad.items())[:5]
        )
        raise InvalidDataError(
            f"{file} has NaN, inf or empty values in {len(bad)} feature column(s): {detail}. "
            "Impute or drop those rows (e.g. pandas fillna / dropna) before training"
        )


def fit_table(source, train_rows: np.ndarray, target) -> dict:
    """Columns, standardisation statistics (source training rows) and categories (both files)."""
    pd = pandas()
    numeric = [c for c in source.columns if pd.api.types.is_numeric_dtype(source[c])]
    stats = {}
    for c in numeric:
        values = source[c].iloc[train_rows].to_numpy(dtype=np.float64)
        std = float(values.std())
        stats[str(c)] = [float(values.mean()), std if std > 0 else 1.0]
    categories = {
        str(c): sorted(set(source[c].astype(str)) | set(target[c].astype(str)))
        for c in source.columns
        if c not in numeric
    }
    return {"columns": [str(c) for c in source.columns], "numeric": stats, "categories": categories}


def encode_table(frame, fitted: dict, file: Path) -> torch.Tensor:
    """Standardised numeric columns, then one-hot blocks, in column order: float32 (N, D)."""
    frame = frame.rename(columns=str)
    if list(frame.columns) != fitted["columns"]:
        raise InvalidDataError(
            f"{file}'s feature columns ({_names(frame.columns)}) are not the ones the checkpoint "
            f"was trained with ({_names(fitted['columns'])})"
        )
    blocks = []
    for c in fitted["columns"]:
        if c in fitted["numeric"]:
            mean, std = fitted["numeric"][c]
            blocks.append(((frame[c].to_numpy(dtype=np.float64) - mean) / std)[:, None])
        else:
            cats = fitted["categories"][c]
            index = {v: i for i, v in enumerate(cats)}
            codes = np.array([index.get(v, -1) for v in frame[c].astype(str)])
            if (codes < 0).any():
                log.warning(
                    "%s: %d value(s) of column %r not among its %d known categories: encoded as "
                    "all zeros",
                    file,
                    int((codes < 0).sum()),
                    c,
                    len(cats),
                )
            one_hot = np.zeros((len(frame), len(cats)))
            known = codes >= 0
            one_hot[np.flatnonzero(known), codes[known]] = 1.0
            blocks.append(one_hot)
    return torch.from_numpy(np.concatenate(blocks, axis=1)).float()


def encode_file(file: Path, fitted: dict, options: dict) -> tuple[torch.Tensor, np.ndarray | None]:
    """One file's rows encoded with a checkpoint's fitted preprocessing (scripts/predict.py):
    (features (N, D), the label column's values or None). Feature columns in any order."""
    frame, labels = read_table(file, str(fitted.get("label") or options.get("label") or "label"))
    frame = frame.rename(columns=str)
    if len(frame) == 0:
        raise InvalidDataError(f"{file} has a header but no rows: give a file with examples")
    if set(frame.columns) == set(fitted["columns"]):
        frame = frame[fitted["columns"]]
    numeric = [c for c in fitted["numeric"] if c in frame.columns]
    text = [c for c in numeric if not pandas().api.types.is_numeric_dtype(frame[c])]
    if text:
        raise InvalidDataError(
            f"{file}: column(s) {_names(text)} hold text, but were numeric in the training data"
        )
    check_finite(frame, numeric, file)
    return encode_table(frame, fitted, file), labels


def describe(fitted: dict, n_train: int) -> str:
    stats = fitted["numeric"]
    shown = [f"{c} {m:.4g}/{s:.4g}" for c, (m, s) in list(stats.items())[:SHOWN]]
    more = f", ... ({len(stats)} in all)" if len(stats) > SHOWN else ""
    cats = fitted["categories"]
    return (
        f"{len(stats)} numeric column(s) standardised with the source training rows' mean/std "
        f"({n_train} rows): {', '.join(shown) or 'none'}{more}; {len(cats)} categorical "
        f"column(s) one-hot over the union of both files' categories: "
        + (", ".join(f"{c} ({len(v)})" for c, v in list(cats.items())[:SHOWN]) or "none")
    )


@register_pair("table")
def load_table(spec: PairSpec) -> PairData:
    o = spec.options
    label = str(o.get("label") or "label")
    files = (
        existing_file(o.get("source"), "source", FORMATS, "hospital_a.csv"),
        existing_file(o.get("target"), "target", FORMATS, "hospital_b.parquet"),
    )
    (src, ys), (tgt, yt) = (read_table(f, label) for f in files)
    read = ((src, ys, files[0], "source"), (tgt, yt, files[1], "target"))
    for frame, labels, file, domain in read:
        if len(frame) == 0:
            raise InvalidDataError(f"{file} has a header but no rows: give a file with examples")
        if frame.shape[1] == 0:
            raise InvalidDataError(f"{file} has no feature columns besides the label {label!r}")
        check_label_column(frame, labels, file, label, domain)
    tgt = check_columns(src, tgt, files)
    pd = pandas()
    numeric = [c for c in src.columns if pd.api.types.is_numeric_dtype(src[c])]
    for frame, file in ((src, files[0]), (tgt, files[1])):
        check_finite(frame, numeric, file)

    fitted, y_src, y_tgt, classes, src_rows, tgt_rows = labels_and_rows(
        ys, yt, len(src), len(tgt), files, spec
    )
    if fitted is None:
        fitted = {**fit_table(src, src_rows[0].numpy(), tgt), "classes": classes, "label": label}
        log.info("table: %s", describe(fitted, len(src_rows[0])))
    if y_tgt is None:
        log.info("table: %s has no %r column: the target is unlabelled", files[1], label)
        y_tgt = unlabelled(len(tgt))
    x_src, x_tgt = encode_table(src, fitted, files[0]), encode_table(tgt, fitted, files[1])
    return PairData(
        source=domain_splits(files[0].stem, x_src, y_src, src_rows),
        target=domain_splits(files[1].stem, x_tgt, y_tgt, tgt_rows),
        num_classes=len(fitted["classes"]),
        preprocessing=fitted,
    )
