"""MCC (Jin, Wang, Long, Wang, ECCV 2020, "Minimum Class Confusion for Versatile Domain
Adaptation") on its own: the source label loss plus the minimum class confusion of the target
predictions, no discriminator. The loss is `dann.losses.minimum_class_confusion` (the same one
`loss.mcc=<weight>` adds to any other method).

Reference code: thuml/Versatile-Domain-Adaptation and tllib
`tllib/self_training/mcc.py` / `examples/domain_adaptation/image_classification/mcc.py`
(temperature 2.5, trade-off 1.0). Departures:
- lambda (the `schedule` group, the paper's sigmoid warm-up by default) multiplies the loss, where
  the reference keeps the trade-off constant: lambda = 0 is then the method switched off (its
  control), and `schedule=constant schedule.value=1` is the reference's constant weight;
- the class correlation matrix is normalised by each row's own sum, as the paper's equation
  says (see `dann/losses.py` for the reference code's broadcasting);
- it acts on the label classifier's logits of the feature extractor's output; the reference's
  ResNet runs put a bottleneck layer before the classifier (here part of `backbone`).
"""

from dann.losses import minimum_class_confusion
from dann.methods.base import AdaptationMethod, AdaptationOutput


class MCC(AdaptationMethod):
    weights_by_lambda = True

    def __init__(
        self, in_features: int, num_classes: int, weight: float = 1.0, temperature: float = 2.5
    ):
        super().__init__()
        self.weight, self.temperature = float(weight), float(temperature)

    def forward(self, features, logits, num_source, lambda_) -> AdaptationOutput:
        mcc = minimum_class_confusion(logits[num_source:], self.temperature)
        return AdaptationOutput({"mcc": lambda_ * self.weight * mcc})
