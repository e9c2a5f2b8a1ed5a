"""`amazon_reviews`: the paper's sentiment benchmark (JMLR 2016 section 5.2): the Amazon reviews
of Blitzer et al. (2007) in Chen et al.'s (2012, mSDA) setting: domains books, dvd, electronics,
kitchen; 5,000 unigram + bigram count features; labels negative (0) / positive (1).

No data ships with it; `dataset.download=true` fetches processed_acl.tar.gz into `dataset.root`
(dann.data.sources), which holds either
- the processed release (processed_acl.tar.gz of the Multi-Domain Sentiment Dataset, unpacked):
  ROOT/{amazon,processed_acl}/DOMAIN/{positive,negative,unlabeled}.review, one review per
  line as `term:count term_bigram:count ... #label#:positive|negative`. The 5,000 features are
  the terms most frequent (total count) in the source and target labelled files (the training
  texts); the vocabulary is saved with the checkpoint; or
- the paper authors' feature files (GRAAL-Research/domain_adversarial_neural_network, data/):
  ROOT/DOMAIN_train.svmlight and ROOT/DOMAIN_test.svmlight (5,000 features, labels -1 / 1).
Protocol (the paper's): source = its 2,000 labelled reviews, 10% held out (`split_seed`) as
source val (= source test); target = its 2,000 labelled reviews WITHOUT labels as the training
set (the same reviews with labels are target val, for reporting only), and its unlabeled.review
(3,586 to 5,945 reviews, labelled in the release) as the target test set.
"""

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from dann.data.registry import DomainData, PairData, PairSpec, Split, register_pair, split_indices
from dann.errors import ConfigError, DataError, InvalidDataError

log = logging.getLogger(__name__)

DOMAINS = ("books", "dvd", "electronics", "kitchen")
FILES = ("positive.review", "negative.review", "unlabeled.review")
FORMATS = (".review",)  # what scripts/predict.py reads for an amazon_reviews checkpoint
LABELS = {"negative": 0, "positive": 1}
LAYOUT = (
    "ROOT/amazon/DOMAIN/{positive,negative,unlabeled}.review (the processed_acl release of the "
    "Multi-Domain Sentiment Dataset, Blitzer et al. 2007, "
    "https://www.cs.jhu.edu/~mdredze/datasets/sentiment/processed_acl.tar.gz, unpacked; "
    "ROOT/processed_acl/DOMAIN/ works too), or the DANN authors' ROOT/DOMAIN_train.svmlight and "
    "ROOT/DOMAIN_test.svmlight (github.com/GRAAL-Research/domain_adversarial_neural_network, data/)"
)
SOURCE_VAL_FRACTION = 0.1


def parse_review_line(line: str, file: Path, number: int) -> tuple[dict[str, int], int]:
    """`term:count ... #label#:positive` -> ({term: count}, label)."""
    counts, label = {}, None
    for token in line.split():
        term, _, count = token.rpartition(":")
        if term == "#label#":
            label = LABELS.get(count)
            if label is None:
                raise InvalidDataError(f"{file}, line {number}: unknown label {count!r}")
            continue
        try:
            counts[term] = counts.get(term, 0) + int(count)
        except ValueError as e:
            raise InvalidDataError(
                f"{file}, line {number}: {token!r} is not term:count (the processed_acl format)"
            ) from e
    if label is None:
        raise InvalidDataError(f"{file}, line {number}: no #label#:positive|negative at its end")
    return counts, label


def read_reviews(file: Path) -> tuple[list[dict[str, int]], list[int]]:
    docs, labels = [], []
    with open(file, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                counts, label = parse_review_line(line, file, number)
                docs.append(counts)
                labels.append(label)
    if not docs:
        raise InvalidDataError(f"{file} holds no review")
    return docs, labels


def processed_dir(root: Path, domain: str) -> Path | None:
    for base in (root / "amazon" / domain, root / "processed_acl" / domain, root / domain):
        if all((base / f).is_file() for f in FILES):
            return base
    return None


def svmlight_files(root: Path, domain: str) -> tuple[Path, Path] | None:
    for base in (root, root / "amazon"):
        files = (base / f"{domain}_train.svmlight", base / f"{domain}_test.svmlight")
        if all(f.is_file() for f in files):
            return files
    return None


def count_matrix(docs: list[dict[str, int]], vocabulary: list[str]) -> torch.Tensor:
    index = {t: i for i, t in enumerate(vocabulary)}
    x = np.zeros((len(docs), len(vocabulary)), dtype=np.float32)
    for row, counts in enumerate(docs):
        for term, count in counts.items():
            column = index.get(term)
            if column is not None:
                x[row, column] = count
    return torch.from_numpy(x)


def encode_file(file: Path, fitted: dict, options: dict) -> tuple[torch.Tensor, np.ndarray]:
    """One processed_acl file (`term:count ... #label#:...`) over a checkpoint's vocabulary
    (scripts/predict.py): (counts (N, V), labels)."""
    docs, labels = read_reviews(file)
    return count_matrix(docs, fitted["vocabulary"]), np.array(labels)


def most_frequent(docs: list[dict[str, int]], k: int) -> list[str]:
    total: Counter = Counter()
    for counts in docs:
        total.update(counts)
    return [t for t, _ in sorted(total.items(), key=lambda tc: (-tc[1], tc[0]))[:k]]


def _labelled(split: tuple, fitted: dict) -> tuple[torch.Tensor, torch.Tensor]:
    docs, labels = split
    return count_matrix(docs, fitted["vocabulary"]), torch.tensor(labels, dtype=torch.long)


def load_processed(dirs: tuple[Path, Path], spec: PairSpec) -> tuple[tuple, tuple, tuple, dict]:
    """(source, target train, target test) as (x, y), and the fitted vocabulary."""
    read = {}
    for role, base in zip(("source", "target"), dirs, strict=True):
        pos, neg = read_reviews(base / FILES[0]), read_reviews(base / FILES[1])
        read[role] = (pos[0] + neg[0], pos[1] + neg[1])
    test = read_reviews(dirs[1] / FILES[2])
    fitted = spec.options.get("preprocessing")
    if fitted is None:
        k = int(spec.options.get("max_features", 5000))
        vocabulary = most_frequent(read["source"][0] + read["target"][0], k)
        fitted = {"vocabulary": vocabulary, "classes": [0, 1]}
        log.info(
            "amazon_reviews: the %d most frequent unigrams/bigrams of the source + target "
            "labelled (training) reviews",
            len(vocabulary),
        )
    return (
        _labelled(read["source"], fitted),
        _labelled(read["target"], fitted),
        _labelled(test, fitted),
        fitted,
    )


def load_svmlight(files: tuple[tuple[Path, Path], tuple[Path, Path]]):
    from sklearn.datasets import load_svmlight_files

    paths = [str(files[0][0]), str(files[1][0]), str(files[1][1])]
    try:
        loaded = load_svmlight_files(paths, dtype=np.float32)
    except ValueError as e:
        raise InvalidDataError(f"{', '.join(paths)}: not svmlight files ({e})") from e
    out = []
    for x, y in zip(loaded[::2], loaded[1::2], strict=True):
        labels = torch.from_numpy(((np.asarray(y) + 1) // 2).astype(np.int64))  # -1/1 -> 0/1
        out.append((torch.from_numpy(np.asarray(x.todense(), dtype=np.float32)), labels))
    return (*out, None)


@register_pair("amazon_reviews")
def load_amazon_reviews(spec: PairSpec) -> PairData:
    source, target = spec.options.get("source"), spec.options.get("target")
    for key, domain in (("source", source), ("target", target)):
        if domain not in DOMAINS:
            raise ConfigError(
                f"dataset.{key}={domain!r}: choose one of {', '.join(DOMAINS)} (the Amazon "
                "reviews domains)"
            )
    if source == target:
        raise ConfigError(f"dataset.source and dataset.target are both {source!r}: pick two")
    if spec.root is None:
        raise DataError(
            f"amazon_reviews has no embedded data: pass dataset.root=DIR holding "
            f"{LAYOUT.replace('ROOT', 'DIR')}, or dataset.root=DIR dataset.download=true to "
            "fetch processed_acl.tar.gz there"
        )
    root = Path(spec.root).expanduser()
    processed = (processed_dir(root, source), processed_dir(root, target))
    svmlight = (svmlight_files(root, source), svmlight_files(root, target))
    if all(processed):
        (xs, ys), (xt, yt), (x_test, y_test), fitted = load_processed(processed, spec)
    elif all(svmlight):
        (xs, ys), (xt, yt), (x_test, y_test), fitted = load_svmlight(svmlight)
    else:
        found = zip((source, target), processed, svmlight, strict=True)
        missing = [d for d, p, s in found if not (p or s)]
        raise DataError(
            f"the Amazon reviews of {' and '.join(missing)} are not under {root}: put them in "
            f"{LAYOUT.replace('ROOT', str(root))}, or add dataset.download=true to fetch "
            "processed_acl.tar.gz there"
        )
    width = spec.options.get("input_size")
    if width is not None and xs.shape[1] != width:
        raise InvalidDataError(
            f"the Amazon features under {root} are {xs.shape[1]} wide, not "
            f"dataset.input_size={width}: set dataset.input_size={xs.shape[1]}"
        )
    n_val = max(1, round(len(ys) * SOURCE_VAL_FRACTION))
    train, val, _ = split_indices(len(ys), (n_val, 0), spec.split_seed)
    source_val = Split(xs[val], ys[val])
    target_labelled = Split(xt, yt)
    return PairData(
        source=DomainData(source, Split(xs[train], ys[train]), source_val, source_val),
        target=DomainData(target, target_labelled, target_labelled, Split(x_test, y_test)),
        num_classes=2,
        preprocessing=fitted,
    )
