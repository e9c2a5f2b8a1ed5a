"""Evaluation when the target holds classes the source lacks (open-set and universal adaptation,
`dann.data.label_sets`): the target's labels run 0..K-1 for the K source classes and K for
"unknown", and a prediction says one of them.

How a network says "unknown": a method with a rule of its own (OVANet: its one-vs-all
classifiers) by that rule; a method with an unknown output (OSBP: K + 1 logits) by its argmax;
any other (source-only, DANN, ...) when its largest softmax probability is below
`unknown_threshold` (0.5 by default), the confidence rule the open-set literature gives these
baselines.

Metrics, per the literature (Saito et al., ECCV 2018; Fu et al., ECCV 2020), from the
confusion counts of the K + 1 classes over the evaluated set (classes with no example left out
of the means):
- `acc`: the fraction of examples classified right (unknown counts as a class);
- `os`: the mean per-class accuracy over the K + 1 classes; `os_star`: over the K known ones;
- `unknown_recall`: the accuracy on the unknown class;
- `h_score`: the harmonic mean of `os_star` and `unknown_recall` (0 when either is 0).
"""

import torch
from torch import nn
from torchmetrics.classification import MulticlassConfusionMatrix


def open_set_prediction(logits: torch.Tensor, known: int, threshold: float) -> torch.Tensor:
    """Class indices 0..known (known = "unknown") for logits over `known` classes (the
    confidence rule) or `known + 1` (an unknown output: the argmax)."""
    if logits.shape[1] == known + 1:
        return logits.argmax(dim=1)
    probs = torch.softmax(logits.float(), dim=1)
    confidence, classes = probs.max(dim=1)
    return torch.where(confidence < threshold, torch.full_like(classes, known), classes)


def open_set_scores(confusion: torch.Tensor) -> dict[str, float]:
    """The metrics above from a (K + 1) x (K + 1) confusion matrix (rows: true classes)."""
    confusion = confusion.double()
    support = confusion.sum(dim=1)
    recall = confusion.diagonal() / support.clamp_min(1)
    present = support > 0
    known_present = present.clone()
    known_present[-1] = False
    os_star = float(recall[known_present].mean()) if known_present.any() else 0.0
    unknown = float(recall[-1]) if present[-1] else 0.0
    h = 2 * os_star * unknown / (os_star + unknown) if os_star + unknown > 0 else 0.0
    return {
        "acc": float(confusion.diagonal().sum() / support.sum().clamp_min(1)),
        "os": float(recall[present].mean()) if present.any() else 0.0,
        "os_star": os_star,
        "unknown_recall": unknown,
        "h_score": h,
    }


class OpenSetEvaluation(nn.Module):
    """Accumulates one evaluation's target predictions (reduced across processes by
    torchmetrics) and scores them."""

    def __init__(self, known: int, threshold: float = 0.5):
        super().__init__()
        self.known, self.threshold = known, float(threshold)
        self.confusion = MulticlassConfusionMatrix(known + 1)

    def update(
        self, logits: torch.Tensor, labels: torch.Tensor, unknown: torch.Tensor | None = None
    ) -> None:
        """`unknown`: the method's own rule (OVANet), where it has one."""
        self.confusion.update(self.predict(logits, unknown), labels)

    def predict(self, logits: torch.Tensor, unknown: torch.Tensor | None = None) -> torch.Tensor:
        if unknown is None:
            return open_set_prediction(logits, self.known, self.threshold)
        classes = logits[:, : self.known].argmax(dim=1)
        return torch.where(unknown, torch.full_like(classes, self.known), classes)

    def compute(self) -> dict[str, float] | None:
        if not self.confusion.update_called:
            return None
        scores = open_set_scores(self.confusion.compute())
        self.confusion.reset()
        return scores
