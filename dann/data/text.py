"""`text`: a pair of text files (CSV or JSONL), one example per row / line, as bag-of-words
(`dataset.representation=bow`, for the MLP) or token ids (`tokens`, for backbone=gru_tokens).

    python train.py dataset=text dataset.source=books.csv dataset.target=kitchen.csv \
        dataset.text_column=review dataset.label=sentiment

- bow: counts of unigrams and bigrams (scikit-learn's CountVectorizer, `ngram_max`), the
  `max_features` most frequent in the source + target TRAINING texts (val / test texts never
  shape the vocabulary); `binary=true` counts presence only. Inputs (N, V) floats.
- tokens: the `max_features` most frequent words (CountVectorizer's lowercasing and word
  pattern) of the same training texts get ids 2, 3, ... (0 = padding, 1 = unknown: any other
  word); each text is its first `max_length` word ids, padded with 0. Inputs (N, max_length)
  int64; a text's length is its number of non-zero ids. `input_size` = the number of ids
  (vocabulary + 2), which backbone=gru_tokens embeds.
- The vocabulary (and the classes) are the pair's `preprocessing`: saved in checkpoints, so
  scripts/evaluate.py encodes new texts with the training run's vocabulary.
- Labels, splits, the unlabelled target and the errors as `table` (dann/data/userfiles.py).
"""

import difflib
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
    pandas,
    unlabelled,
)
from dann.errors import ConfigError, InvalidDataError

log = logging.getLogger(__name__)

FORMATS = (".csv", ".jsonl", ".json")


def _records(file: Path):
    """The rows of a CSV or JSONL file as a pandas DataFrame."""
    pd = pandas()

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
            close = difflib.get_close_matches(label, [str(c) for c in frame.columns], n=1)
            hint = f" (did you mean dataset.label={close[0]}?)" if close else ""
            raise InvalidDataError(
                f"dataset.label={label}: {file} has no such column{hint}; its columns: "
                f"{columns}. Set dataset.label=<the label column>"
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


def fit_bag_of_words(train: list[str], o: dict) -> dict:
    ngram_max, binary = int(o.get("ngram_max", 2)), bool(o.get("binary", False))
    v = vectorizer(ngram_max, binary, max_features=int(o.get("max_features", 5000)))
    v.fit(train)  # ValueError: no token at all
    vocabulary = v.get_feature_names_out().tolist()
    return {"vocabulary": vocabulary, "ngram_max": ngram_max, "binary": binary}


PAD, UNKNOWN = 0, 1  # token ids; the vocabulary's words are 2, 3, ...


def word_splitter():
    """text -> its words, as the bag of words counts them (lowercased, 2+ word characters)."""
    return vectorizer(1, False).build_analyzer()


def fit_tokens(train: list[str], o: dict) -> dict:
    """The `max_features` most frequent words of the training texts, most frequent first."""
    from collections import Counter

    words = word_splitter()
    counts = Counter(w for text in train for w in words(text))
    if not counts:
        raise ValueError("empty vocabulary")
    vocabulary = sorted(counts, key=lambda w: (-counts[w], w))[: int(o.get("max_features", 5000))]
    return {"vocabulary": vocabulary, "representation": "tokens", "max_length": max_length(o)}


def max_length(o: dict) -> int:
    steps = int(o.get("max_length") or 0)
    if steps < 1:
        raise ConfigError(
            f"dataset.max_length={o.get('max_length')}: the words kept per text must be a "
            "positive number, e.g. dataset.max_length=200"
        )
    return steps


def token_ids(texts: list[str], fitted: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (N, max_length) int64: each text's first max_length words, UNKNOWN for words not in
    the vocabulary, PAD after its end; lengths (N,): its number of ids)."""
    index = {w: i for i, w in enumerate(fitted["vocabulary"], start=UNKNOWN + 1)}
    steps = int(fitted["max_length"])
    ids = np.full((len(texts), steps), PAD, dtype=np.int64)
    lengths, words = np.zeros(len(texts), dtype=np.int64), word_splitter()
    for row, text in enumerate(texts):
        seq = [index.get(w, UNKNOWN) for w in words(text)[:steps]]
        ids[row, : len(seq)], lengths[row] = seq, len(seq)
    return torch.from_numpy(ids), torch.from_numpy(lengths)


def is_tokens(fitted: dict) -> bool:
    return fitted.get("representation", "bow") == "tokens"


def encode(texts: list[str], fitted: dict) -> torch.Tensor:
    """Texts as the fitted representation: bags of words (N, V) or token ids (N, max_length)."""
    return token_ids(texts, fitted)[0] if is_tokens(fitted) else bag_of_words(texts, fitted)


def encode_file(file: Path, fitted: dict, options: dict) -> tuple[torch.Tensor, np.ndarray | None]:
    """One CSV / JSONL file's texts over a checkpoint's vocabulary (scripts/predict.py):
    (bags of words (N, V) or token ids (N, max_length), the label column's values or None)."""
    text_column = str(options.get("text_column") or "text")
    texts, labels = read_texts(file, text_column, str(options.get("label") or "label"), "target")
    return encode(texts, fitted), labels


FIT = {"bow": fit_bag_of_words, "tokens": fit_tokens}


@register_pair("text")
def load_text(spec: PairSpec) -> PairData:
    o = spec.options
    representation = str(o.get("representation") or "bow")
    if representation not in FIT:
        raise ConfigError(
            f"dataset.representation={representation}: choose one of {', '.join(FIT)} (bow: "
            "unigram + bigram counts for the MLP; tokens: word ids for backbone=gru_tokens)"
        )
    if representation == "tokens":
        max_length(o)  # checked before the files are read
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
        try:
            fitted = {**FIT[representation](train, o), "classes": classes}
        except ValueError as e:  # no token at all
            raise InvalidDataError(
                f"no words in the training texts of {files[0]} and {files[1]} ({e})"
            ) from e
        log.info(
            "text: vocabulary of %d %s (of up to %d) fitted on %d source + %d target training "
            "texts",
            len(fitted["vocabulary"]),
            "words" if is_tokens(fitted) else "unigrams/bigrams",
            int(o.get("max_features", 5000)),
            len(src_rows[0]),
            len(tgt_rows[0]),
        )
    if y_tgt is None:
        log.info("text: %s has no %r column: the target is unlabelled", files[1], label)
        y_tgt = unlabelled(len(tgt))
    x_src, x_tgt = encode(src, fitted), encode(tgt, fitted)
    return PairData(
        source=domain_splits(files[0].stem, x_src, y_src, src_rows),
        target=domain_splits(files[1].stem, x_tgt, y_tgt, tgt_rows),
        num_classes=len(fitted["classes"]),
        # token ids: the backbone's input_size is the number of ids, not the steps per text
        input_size=len(fitted["vocabulary"]) + 2 if is_tokens(fitted) else None,
        preprocessing=fitted,
    )
