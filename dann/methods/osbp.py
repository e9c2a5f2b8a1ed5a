"""OSBP (Saito, Yamamoto, Ushiku, Harada, ECCV 2018, "Open Set Domain Adaptation by
Backpropagation"): open-set adaptation, where the target also holds classes the source lacks.
The label classifier gets a K + 1-th output, "unknown". On the target rows it is trained to put
probability t = 0.5 on "unknown" (binary cross-entropy against 0.5), while the feature
extractor, behind the gradient reversal layer, is pushed the other way: to make each target
example either clearly known (p_unknown -> 0) or clearly unknown (-> 1). The source rows learn
their K classes with the usual label loss over the K + 1 outputs. At evaluation "unknown" is the
argmax over the K + 1 outputs (dann/open_set.py).

Reference code: Mid-Night/open_set_domain_adaptation (the authors' PyTorch code, `trainer.py`:
`bce_loss(out_t[:, -1], 0.5)` with `-t log p - (1 - t) log(1 - p)`, the generator's input to
the classifier reversed with coefficient 1).
Departures:
- lambda follows the `schedule` group (the paper's sigmoid warm-up by default; the reference's
  constant 1 is `schedule=constant schedule.value=1`);
- the label classifier is the module's (its head, with the framework's options), applied a
  second time to the reversed target features for this loss; no separate generator/classifier
  optimisers: one joint step, as the GRL gives.
"""

import torch
import torch.nn.functional as F
from torch import nn

from dann.grl import GradientReversal
from dann.methods.base import AdaptationMethod, AdaptationOutput

BOUNDARY = 0.5  # t: the probability of "unknown" the classifier is trained towards


class OSBP(AdaptationMethod):
    reverses_gradient = True
    unknown_output = True
    settings = ("open_set", "universal")

    def __init__(self, in_features: int, num_classes: int, boundary: float = BOUNDARY):
        super().__init__()
        self.boundary = float(boundary)
        self.grl = GradientReversal()
        self._classifier: list[nn.Module] = []  # the module's: a reference, not a submodule

    def attach(self, classifier: nn.Module) -> None:
        self._classifier[:] = [classifier]

    def forward(self, features, logits, num_source, lambda_) -> AdaptationOutput:
        self.grl.lambda_ = lambda_
        reversed_logits = self._classifier[0](self.grl(features[num_source:]))
        p_unknown = F.softmax(reversed_logits.float(), dim=1)[:, -1]
        loss = unknown_boundary_loss(p_unknown, self.boundary)
        return AdaptationOutput({"unknown_loss": loss})


def unknown_boundary_loss(p_unknown: torch.Tensor, t: float) -> torch.Tensor:
    """Mean binary cross-entropy of p(unknown) against t (the reference's 1e-6 guard)."""
    return -(t * torch.log(p_unknown + 1e-6) + (1 - t) * torch.log(1 - p_unknown + 1e-6)).mean()
