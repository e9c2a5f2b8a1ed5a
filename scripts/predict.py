"""Predict classes with a checkpoint: one CSV row per image (or per row of an .npz array or
of a table / text / sequences file).

    python scripts/predict.py ckpt=outputs/runs/<run>/checkpoints/last.ckpt input=photos/
    python scripts/predict.py ckpt=... input=digit.png output=pred.csv batch_size=512 device=cpu
    python scripts/predict.py ckpt=... input=arrays.npz
    python scripts/predict.py ckpt=<table / text / sequences checkpoint> input=new_patients.csv

`input`: an image file, a folder (its image files, recursively, sorted) or an .npz holding an
array `x`: images (N, H, W), (N, H, W, C) or (N, C, H, W) with C = 1 or 3, uint8 in [0, 255] or
float in [0, 1]; for feature checkpoints (e.g. moons) float features (N, F). Checkpoints of
file pairs take one file in the pair's format: table (CSV / Parquet / NPZ), text (CSV /
JSONL), sequences (NPZ), amazon_reviews (a processed_acl .review file). Inputs get the
checkpoint's own preprocessing (dann/inference.py: its channels, image size and normalisation;
the statistics, categories and vocabulary fitted on the training data); a label column in
the file is not used (logged).

The CSV (default: <input>_predictions.csv next to the input) has the columns path, predicted
(class index; `unknown` from checkpoints trained for an open-set target: OSBP's unknown
output, or a confidence below the run's unknown_threshold), predicted_label (the original class
label of file pairs, the class folder name of office31 / folder checkpoints) and prob_<k> for
each class the model tells apart (softmax probabilities; prob_unknown for OSBP's output); array
and file rows are named
`<file>[i]` (i from 0, in file order). Image files that cannot be read are skipped and listed
at the end (and in the log in the run dir, outputs/predict/<date>_<time>/predict.log); the CSV
is written to a temporary file and renamed into place at the end, so a run stopped half-way
leaves no partial CSV. A missing or bad checkpoint
or input is an error message and exit status 2.
"""

from __future__ import annotations

import csv
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
import numpy as np
from omegaconf import DictConfig
from tqdm import tqdm

from dann.config_check import check_command_line, check_required
from dann.errors import DannError, DataError, InvalidDataError, reported_as_exit
from dann.run_dir import discard_refused_launch

if TYPE_CHECKING:
    import torch

    from dann.inference import Predictor

# torch, Lightning and the model code are imported where they are used: `--help` stays fast

log = logging.getLogger("predict")
USAGE = "python scripts/predict.py ckpt=outputs/runs/<run>/checkpoints/last.ckpt input=photos/"

READ_ERRORS = (OSError, ValueError, SyntaxError)  # what PIL raises for unreadable images


@hydra.main(version_base="1.3", config_path="../configs", config_name="predict")
def main(cfg: DictConfig) -> None:
    with reported_as_exit(on_error=discard_refused_launch):  # no run dir left behind
        predict(cfg)


def predict(cfg: DictConfig) -> None:
    check_required(cfg, USAGE)
    from dann.data.folders import IMG_EXTENSIONS, _image_files
    from dann.inference import load_predictor

    if int(cfg.batch_size) < 1:
        raise InvalidDataError(f"batch_size={cfg.batch_size}: must be 1 or more")
    source = Path(str(cfg.input))
    if not source.exists():
        raise DataError(f"input={source} does not exist: give an image, a folder or a data file")
    predictor = load_predictor(cfg.ckpt, cfg.domain, cfg.device)
    output = Path(str(cfg.output)) if cfg.output else default_output(source)
    skipped: list[tuple[str, str]] = []
    if predictor.reads_files:
        if source.is_dir():
            raise InvalidDataError(
                f"input={source} is a folder; a {predictor.hparams.name} checkpoint reads one "
                "file in its training format"
            )
        batches, total = file_batches(predictor, source, int(cfg.batch_size))
    elif source.suffix == ".npz":
        batches, total = npz_batches(predictor, source, int(cfg.batch_size))
    else:
        files = _image_files(source) if source.is_dir() else [source]
        if not files:
            raise DataError(f"no image files in {source} (looked for *.png, *.jpg, ... inside)")
        if not predictor.is_image:
            raise InvalidDataError(
                f"{cfg.ckpt} takes feature vectors ({predictor.hparams.name}), not images: "
                "pass input=<file>.npz holding an array x of shape (N, F)"
            )
        if source.is_file() and source.suffix.lower() not in IMG_EXTENSIONS:
            raise InvalidDataError(
                f"{cfg.ckpt} takes images ({predictor.hparams.name}) and input={source} is not "
                "an image file: pass an image, a folder of images or an .npz holding an array x "
                "of images"
            )
        batches, total = image_batches(predictor, files, int(cfg.batch_size), skipped), len(files)
    n = write_csv(output, predictor, batches, total)
    for path, reason in skipped:
        log.warning("skipped %s: %s", path, reason)
    if not n:
        raise InvalidDataError(f"none of the {total} inputs could be read; no CSV written")
    log.info(
        "wrote %d predictions to %s%s",
        n,
        output,
        f" ({len(skipped)} unreadable file(s) skipped, listed above)" if skipped else "",
    )


def default_output(source: Path) -> Path:
    """<input>_predictions.csv next to the input (a folder's: beside it, not inside)."""
    source = source.resolve() if source.name in ("", ".", "..") else source
    return source.with_name(f"{source.stem if source.is_file() else source.name}_predictions.csv")


def image_batches(
    predictor: Predictor, files: list[Path], batch_size: int, skipped: list
) -> Iterator[tuple[list[str], torch.Tensor | None, int]]:
    """(names, pixels, inputs consumed) per batch of files; unreadable files go to `skipped`."""
    import torch
    from PIL import Image

    for i in range(0, len(files), batch_size):
        names, pixels = [], []
        for path in files[i : i + batch_size]:
            try:
                with Image.open(path) as image:
                    image.load()
                    pixels.append(predictor.pixels(image))
            except (*READ_ERRORS, Image.DecompressionBombError) as e:
                skipped.append((str(path), f"{type(e).__name__}: {e}"))
                continue
            names.append(str(path))
        yield names, torch.stack(pixels) if pixels else None, len(files[i : i + batch_size])


def file_batches(predictor: Predictor, source: Path, batch_size: int):
    """Batches of a file pair's input file, encoded with the checkpoint's preprocessing."""
    x, labels = predictor.encode_file(source)
    if labels is not None:
        log.info("%s: its labels (%d) are not used to predict", source, len(labels))
    return rows_batches(x, source, batch_size, lambda rows: rows), len(x)


def rows_batches(x, source: Path, batch_size: int, prepare):
    """(names `<file>[i]`, prepared rows, rows consumed) per batch of `x`."""
    for i in range(0, len(x), batch_size):
        rows = x[i : i + batch_size]
        yield [f"{source}[{j}]" for j in range(i, i + len(rows))], prepare(rows), len(rows)


def npz_batches(predictor: Predictor, source: Path, batch_size: int):
    """Batches of the .npz array `x` (checked whole first), and its length."""
    import torch

    from dann.data.userfiles import npz_with_x
    from dann.inference import images_from_array

    x = npz_with_x(source, "predict.py reads the inputs from its array x")["x"]
    if predictor.is_image:
        images = images_from_array(x, str(source))

        def prepare(rows: np.ndarray) -> torch.Tensor:
            from PIL import Image

            grey = rows.shape[-1] == 1
            return torch.stack(
                [predictor.pixels(Image.fromarray(r[..., 0] if grey else r)) for r in rows]
            )

    else:
        if x.ndim < 2 or not (np.issubdtype(x.dtype, np.floating) or x.dtype.kind in "iu"):
            raise InvalidDataError(
                f"{source}: x has shape {x.shape} and dtype {x.dtype}; this checkpoint "
                f"({predictor.hparams.name}) takes float features (N, F)"
            )
        images = x

        def prepare(rows: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))

    return rows_batches(images, source, batch_size, prepare), len(images)


def write_csv(output: Path, predictor: Predictor, batches, total: int) -> int:
    """Predict every batch into a temporary CSV, renamed to `output` once complete (none is
    left if nothing was predicted); returns the number of rows."""
    from dann.inference import UNKNOWN, publish

    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    rows = 0
    try:
        with (
            os.fdopen(fd, "w", newline="") as f,
            tqdm(total=total, unit="input", disable=None) as bar,
        ):
            writer = csv.writer(f)
            classes = predictor.classes
            label = ["predicted_label"] if classes else []
            probs_ = [f"prob_{k}" for k in predictor.output_names]
            writer.writerow(["path", "predicted", *label, *probs_])
            for names, x, consumed in batches:
                if names:
                    logits = run_model(predictor, x)
                    probs, best = logits.softmax(dim=1).tolist(), predictor.decide(logits, x)
                    for name, k, p in zip(names, best, probs, strict=True):
                        original = [classes[k] if k != UNKNOWN else k] if classes else []
                        writer.writerow([name, k, *original, *(f"{v:.8g}" for v in p)])
                    rows += len(names)
                bar.update(consumed)
        if rows:
            publish(tmp, output)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return rows


def run_model(predictor: Predictor, x: torch.Tensor) -> torch.Tensor:
    """Logits; a shape the model cannot take is the user's error, with the shape it expects."""
    try:
        return predictor.logits(x)
    except RuntimeError as e:
        if "shape" not in str(e) and "size" not in str(e):
            raise
        try:
            expected = f" (N, {', '.join(map(str, predictor.input_shape()))})"
        except DannError:
            expected = ""
        raise InvalidDataError(
            f"inputs of shape {tuple(x.shape)} do not fit this {predictor.hparams.name} model"
            f"{expected}: {str(e).splitlines()[0]}"
        ) from None


if __name__ == "__main__":
    with reported_as_exit():
        check_command_line("predict", sys.argv[1:])  # a misspelt key, before Hydra's advice
    main()
