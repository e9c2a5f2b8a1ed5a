"""`text`: a pair of text files (CSV or JSONL), one example per row / line, as bag-of-words.

    python train.py dataset=text dataset.source=books.csv dataset.target=kitchen.csv \
        dataset.text_column=review dataset.label=sentiment

- Features: counts of unigrams and bigrams (scikit-learn's CountVectorizer, `ngram_max`),
  the `max_features` most frequent in the source + target TRAINING texts (val / test texts
  never shape the vocabulary); `binary=true` counts presence only. For the MLP backbone.
- The vocabulary (and the classes) are the pair's `preprocessing`: saved in checkpoints, so
  scripts/evaluate.py encodes new texts with the training run's vocabulary.
- Labels, splits, the unlabelled target and the errors as `table` (dann/data/userfiles.py).
"""

import json
import logging
from pathlib import Path

import numpy as np
import torch

from dann.data.registry import PairData, PairSpec, register_pair
from dann.data.userfiles import (
    domain_splits,
    existing_file,
    labels_and_rows,
    unlabelled,
)
from dann.errors import InvalidDataError

log = logging.getLogger(__name__)

FORMATS = (".csv", ".jsonl", ".json")


def _records(file: Path):
    """The rows of a CSV or JSONL file as a pandas DataFrame."""
    import pandas as pd

    if file.suffix.lower() == ".csv":
        try:
            return pd.read_csv(file)
        except pd.errors.EmptyDataError as e:
            raise InvalidDataError(f"{file} is empty: give a file with a header and rows") from e
        except (ValueError, pd.errors.ParserError) as e:
            raise InvalidDataError(f"{file} is not a readable CSV file ({e})") from e
    rows = []
    with open(file, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InvalidDataError(
                    f"{file}, line {number}: not UTF-8 text ({e.reason} at byte {e.start}); "
                    "JSONL files must be UTF-8: re-save it as UTF-8 (e.g. iconv -t utf-8)"
                ) from e
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise InvalidDataError(
                        f"{file}, line {number}: not JSON ({e.msg}); JSONL holds one JSON "
                        'object per line, e.g. {"text": "...", "label": 1}'
                    ) from e
    return pd.DataFrame.from_records(rows)


def read_texts(file: Path, text_column: str, label: str, domain: str):
    """(texts, labels or None) of one file, checked."""
    frame = _records(file)
    if len(frame) == 0:
        raise InvalidDataError(f"{file} has no rows: give a file with examples")
    columns = ", ".join(map(str, frame.columns))
    if text_column not in frame.columns:
        raise InvalidDataError(
            f"dataset.text_column={text_column}: {file} has no such column; its columns: "
            f"{columns}. Set dataset.text_column=<the text column>"
        )
    texts = frame[text_column]
    missing = np.flatnonzero(texts.isna().to_numpy())
    if len(missing):
        raise InvalidDataError(
            f"{file}: {len(missing)} row(s) have no text in {text_column!r} (e.g. row "
            f"{missing[0]}); fill them (e.g. with an empty string) or drop them"
        )
    if label not in frame.columns:
        if domain == "source":
            raise InvalidDataError(
                f"dataset.label={label}: {file} has no such column; its columns: {columns}. "
                "Set dataset.label=<the label column>"
            )
        return texts.astype(str).tolist(), None
    labels = frame[label]
    missing = np.flatnonzero(labels.isna().to_numpy())
    if len(missing):
        raise InvalidDataError(
            f"{file}: {len(missing)} row(s) have no label in {label!r} (e.g. row {missing[0]}); "
            "fill or drop them"
            + ("" if domain == "source" else ", or drop the column to leave the target unlabelled")
        )
    return texts.astype(str).tolist(), labels.to_numpy()


def vectorizer(ngram_max: int, binary: bool, max_features: int | None = None, vocabulary=None):
    from sklearn.feature_extraction.text import CountVectorizer

    return CountVectorizer(
        ngram_range=(1, ngram_max),
        max_features=max_features,
        vocabulary=vocabulary,
        binary=binary,
        dtype=np.float32,
    )


def bag_of_words(texts: list[str], fitted: dict) -> torch.Tensor:
    v = vectorizer(fitted["ngram_max"], fitted["binary"], vocabulary=fitted["vocabulary"])
    return torch.from_numpy(v.transform(texts).toarray())


def encode_file(file: Path, fitted: dict, options: dict) -> tuple[torch.Tensor, np.ndarray | None]:
    """One CSV / JSONL file's texts as bags of words over a checkpoint's vocabulary
    (scripts/predict.py): (counts (N, V), the label column's values or None)."""
    text_column = str(options.get("text_column") or "text")
    texts, labels = read_texts(file, text_column, str(options.get("label") or "label"), "target")
    return bag_of_words(texts, fitted), labels


@register_pair("text")
def load_text(spec: PairSpec) -> PairData:
    o = spec.options
    text_column, label = str(o.get("text_column") or "text"), str(o.get("label") or "label")
    files = (
        existing_file(o.get("source"), "source", FORMATS, "books.csv"),
        existing_file(o.get("target"), "target", FORMATS, "kitchen.jsonl"),
    )
    src, ys = read_texts(files[0], text_column, label, "source")
    tgt, yt = read_texts(files[1], text_column, label, "target")
    fitted, y_src, y_tgt, classes, src_rows, tgt_rows = labels_and_rows(
        ys, yt, len(src), len(tgt), files, spec
    )
    if fitted is None:
        train = [src[i] for i in src_rows[0].tolist()] + [tgt[i] for i in tgt_rows[0].tolist()]
        ngram_max, binary = int(o.get("ngram_max", 2)), bool(o.get("binary", False))
        v = vectorizer(ngram_max, binary, max_features=int(o.get("max_features", 5000)))
        try:
            v.fit(train)
        except ValueError as e:  # no token at all
            raise InvalidDataError(
                f"no words in the training texts of {files[0]} and {files[1]} ({e})"
            ) from e
        vocabulary = v.get_feature_names_out().tolist()
        fitted = {
            "vocabulary": vocabulary,
            "ngram_max": ngram_max,
            "binary": binary,
            "classes": classes,
        }
        log.info(
            "text: vocabulary of %d unigrams/bigrams (of up to %d) fitted on %d source + %d "
            "target training texts",
            len(vocabulary),
            int(o.get("max_features", 5000)),
            len(src_rows[0]),
            len(tgt_rows[0]),
        )
    if y_tgt is None:
        log.info("text: %s has no %r column: the target is unlabelled", files[1], label)
        y_tgt = unlabelled(len(tgt))
    x_src, x_tgt = bag_of_words(src, fitted), bag_of_words(tgt, fitted)
    return PairData(
        source=domain_splits(files[0].stem, x_src, y_src, src_rows),
        target=domain_splits(files[1].stem, x_tgt, y_tgt, tgt_rows),
        num_classes=len(fitted["classes"]),
        preprocessing=fitted,
    )
