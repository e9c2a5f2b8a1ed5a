"""Which classes each domain holds: closed-set adaptation (the default: both domains hold every
class), partial (the target holds some of the source's classes), open-set (the target also holds
classes the source lacks) and universal (both at once), from `dataset.source_classes` and
`dataset.target_classes` (lists of the pair's class indices; null: all).

Applied once, by the datamodule, to the training, validation and test sets of both domains, for
every kind of pair (in-memory tensors: images, tables, text, sequences; image files). The model
classifies the source classes: its class i is the i-th smallest of `source_classes`. Target
examples of a class the source lacks get the label `unknown` (= the number of source classes),
for evaluation only (the target training labels never reach the model).
"""

from dataclasses import dataclass, replace

import torch

from dann.data.registry import UNLABELLED, DomainData, PairData, Split
from dann.errors import ConfigError

SETTINGS = ("closed", "partial", "open_set", "universal")
DROPPED = -2  # the new label of a class a domain does not keep


@dataclass(frozen=True)
class LabelSets:
    source: tuple[int, ...]  # the pair's class indices kept in the source, sorted
    target: tuple[int, ...]  # ... in the target
    num_classes: int  # the pair's

    @classmethod
    def from_config(cls, source_classes, target_classes, num_classes: int) -> "LabelSets":
        everything = list(range(num_classes))
        source = _checked("source_classes", source_classes, num_classes) or everything
        target = _checked("target_classes", target_classes, num_classes) or everything
        if not set(source) & set(target):
            raise ConfigError(
                f"dataset.source_classes={source} and dataset.target_classes={target} share no "
                "class: nothing could transfer. Give the target at least one source class"
            )
        return cls(tuple(sorted(source)), tuple(sorted(target)), num_classes)

    @property
    def known(self) -> int:
        """How many classes the model tells apart (the source's); also the unknown label."""
        return len(self.source)

    @property
    def unknown_in_target(self) -> bool:
        return not set(self.target) <= set(self.source)

    @property
    def setting(self) -> str:
        partial = not set(self.source) <= set(self.target)
        if self.unknown_in_target:
            return "universal" if partial else "open_set"
        return "partial" if partial else "closed"

    def as_dict(self) -> dict:
        """Plain types, for the module's hyper-parameters (and so checkpoints)."""
        return {"source": list(self.source), "target": list(self.target), "setting": self.setting}

    def apply(self, pair: PairData) -> PairData:
        """The pair with each domain's splits cut to its classes and relabelled."""
        if self.setting == "closed" and self.known == self.num_classes:
            return pair
        source_map = self._lookup(self.source, unknown=DROPPED)
        target_map = self._lookup(self.target, unknown=self.known)
        return replace(
            pair,
            source=_relabel_domain(pair.source, source_map),
            target=_relabel_domain(pair.target, target_map),
        )

    def _lookup(self, kept: tuple[int, ...], unknown: int) -> torch.Tensor:
        """The pair's label -> this setting's label (DROPPED for a class the domain lacks)."""
        lookup = torch.full((self.num_classes,), DROPPED, dtype=torch.int64)
        for c in kept:
            lookup[c] = self.source.index(c) if c in self.source else unknown
        return lookup


def _checked(key: str, classes, num_classes: int) -> list[int] | None:
    if classes is None:
        return None
    classes = list(classes)
    bad = [c for c in classes if not isinstance(c, int) or not 0 <= c < num_classes]
    if bad or not classes or len(set(classes)) != len(classes):
        problem = (
            f"{bad} not among the pair's classes 0-{num_classes - 1}"
            if bad
            else ("empty" if not classes else "a class listed twice")
        )
        raise ConfigError(
            f"dataset.{key}={classes}: {problem}. Give class indices in 0-{num_classes - 1}, each "
            f"once (e.g. dataset.{key}=[0,1,2]), or null for all"
        )
    return classes


def _relabel_domain(domain: DomainData, lookup: torch.Tensor) -> DomainData:
    splits = {}
    for k in ("train", "val", "test"):
        splits[k] = _relabel(getattr(domain, k), lookup, f"{domain.name} {k}")
        if len(splits[k]) == 0:
            kept = sorted(int(c) for c in (lookup != DROPPED).nonzero().flatten())
            raise ConfigError(
                f"dataset.source_classes / target_classes: the {domain.name} {k} set holds no "
                f"example of the classes kept ({kept}); keep classes that domain has"
            )
    return DomainData(domain.name, **splits)


def _relabel(split, lookup: torch.Tensor, where: str):
    if isinstance(split, Split):
        labels = split.labels
        known = labels != UNLABELLED  # a file without labels: its rows cannot be sorted by class
        new = torch.where(known, lookup[labels.clamp_min(0)], labels)
        keep = new != DROPPED
        return Split(split.inputs[keep], new[keep])
    samples = getattr(split, "samples", None)  # image files: (path, label) pairs
    if samples is None:
        raise ConfigError(
            f"dataset.source_classes / target_classes: the {where} set is a "
            f"{type(split).__name__}, whose labels cannot be read without decoding every "
            "example; label sets work on in-memory pairs and image folders"
        )
    relabelled = [(path, int(lookup[label])) for path, label in samples]
    kept = [(path, label) for path, label in relabelled if label != DROPPED]
    return replace_samples(split, kept)


def replace_samples(dataset, samples: list[tuple[str, int]]):
    """A copy of an image-file dataset holding `samples` instead."""
    import copy

    new = copy.copy(dataset)
    new.samples = samples
    return new
