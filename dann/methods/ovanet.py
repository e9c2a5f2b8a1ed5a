"""OVANet (Saito & Saenko, ICCV 2021, "OVANet: One-vs-All Network for Universal Domain
Adaptation"): beside the label classifier, one binary "is it class k?" classifier per source
class (one-vs-all). On the source each learns its class against the hardest other class (hard
negative classifier mining); on the target the entropy of every one-vs-all classifier is
minimised (open-set entropy minimisation), which pushes each target example to be clearly
inside or clearly outside the class it is nearest to. A target example is "unknown" when the
one-vs-all classifier of its predicted class says "not this class" with probability > 0.5: the
threshold is learned from the source, none is tuned.

Why OVANet and not UAN (You et al., CVPR 2019) for the universal setting: UAN's unknown rule is a
threshold w0 on its transferability score, set per benchmark in its reference code, and its
results proved hard to reproduce in later comparisons (OVANet's paper, and DANCE, Saito et al.
NeurIPS 2020, re-ran it); OVANet needs no threshold and reports better H-scores than UAN on
Office-31, Office-Home, VisDA and DomainNet's universal splits.

Reference code: VisionLearningGroup/OVANet (`train.py`, `utils/loss.py`, `eval.py`): source loss
0.5 * (mean -log p_pos(y) + mean max_{k != y} -log p_neg(k)); target loss `multi` (0.1) * the
mean binary entropy over the one-vs-all classifiers; unknown where p_neg(predicted class) > 0.5.
Departures:
- lambda (the `schedule` group) weights the target entropy term (`weights_by_lambda`): lambda = 0
  is the reference's `--no_adapt`; the sigmoid warm-up by default, where the reference's weight
  is constant (`schedule=constant schedule.value=1` for that);
- the one-vs-all head is one linear layer on the features, without the reference's per-step
  weight normalisation.
"""

import torch
import torch.nn.functional as F
from torch import nn

from dann.methods.base import AdaptationMethod, AdaptationOutput

EPS = 1e-8  # the reference's guard inside the logarithms


def one_vs_all_probabilities(ova_logits: torch.Tensor) -> torch.Tensor:
    """(N, 2, K): per class k, [p(not k), p(k)] (softmax over each pair of logits)."""
    return F.softmax(ova_logits.float().view(len(ova_logits), 2, -1), dim=1)


def hard_negative_loss(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """0.5 * (mean -log p(y is y) + mean over rows of max over k != y of -log p(k is not k))."""
    positive = F.one_hot(labels, probs.shape[2]).bool()
    pos = -torch.log(probs[:, 1, :] + EPS)[positive].mean()
    neg = (-torch.log(probs[:, 0, :] + EPS)).masked_fill(positive, 0.0).max(dim=1).values.mean()
    return 0.5 * (pos + neg)


def open_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Mean over rows and classes of each one-vs-all classifier's binary entropy."""
    return (-(probs * torch.log(probs + EPS)).sum(dim=1)).mean()


class OVANet(AdaptationMethod):
    weights_by_lambda = True  # lambda weights the target's open entropy (0: no adaptation)
    uses_target_logits = True  # the unknown rule reads the predicted class
    uses_source_labels = True
    own_unknown_rule = True
    settings = ("partial", "open_set", "universal")

    def __init__(self, in_features: int, num_classes: int, entropy_weight: float = 0.1):
        super().__init__()
        self.entropy_weight = float(entropy_weight)
        self.one_vs_all = nn.Linear(in_features, 2 * num_classes)

    def forward(self, features, logits, num_source, lambda_, source_labels=None):
        probs = one_vs_all_probabilities(self.one_vs_all(features))
        losses = {"ova_loss": hard_negative_loss(probs[:num_source], source_labels)}
        losses["open_entropy"] = lambda_ * self.entropy_weight * open_entropy(probs[num_source:])
        return AdaptationOutput(losses)

    def unknown(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        probs = one_vs_all_probabilities(self.one_vs_all(features))
        predicted = logits[:, : probs.shape[2]].argmax(dim=1)
        return probs[torch.arange(len(probs)), 0, predicted] > 0.5
