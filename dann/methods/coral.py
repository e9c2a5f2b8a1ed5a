"""Deep CORAL (Sun, Saenko, ECCV 2016 Workshops, "Deep CORAL: Correlation Alignment for Deep
Domain Adaptation"): the distance between the source and the target feature covariances, added
to the source label loss:

    coral_loss = lambda * weight * ||C_s - C_t||_F^2 / (4 d^2)

C = (X - mean(X))^T (X - mean(X)) / (n - 1) over one domain's n rows of the batch (the paper's
unbiased covariance), d the feature width. No discriminator, no gradient reversal; lambda (the
`schedule`) weights the loss, so lambda = 0 switches the method off.

The loss is the paper's eq. (1), with the covariances of its eqs. (2)-(3).
thuml/Transfer-Learning-Library's `tllib/alignment/coral.py` CorrelationAlignmentLoss differs:
it adds the mean difference mean_j (mu_s - mu_t)_j^2 and scales the covariance term by 1/d^2
instead of 1/(4 d^2). The paper's loss is kept because it is what "Deep CORAL" names: aligning
second-order statistics only (a shift of the features' means alone costs nothing), with its
scale. `mean_difference: true` adds tllib's mean term, ||mu_s - mu_t||^2 / d, to it (tllib's loss
is then this one with the covariance term 4 times larger).

Departures from the paper:

- The adapted layer is the feature extractor's output (the paper: AlexNet's fc8, the class
  scores); `weight` defaults to 1.0 (the paper sets it so that the two losses end up about
  equal).
- The covariances are computed in float32 with autocast off (under bf16/fp16 the centred
  products lose most of their digits).
"""

import torch

from dann.methods.base import AdaptationMethod, AdaptationOutput


def covariance(x: torch.Tensor) -> torch.Tensor:
    """(d, d) unbiased covariance of the rows of x (n, d), n >= 2."""
    if len(x) < 2:
        raise ValueError(
            f"CORAL's covariances need at least 2 rows per domain, got {len(x)}: raise "
            "dataset.batch_size"
        )
    centred = x - x.mean(dim=0, keepdim=True)
    return centred.T @ centred / (len(x) - 1)


class CORAL(AdaptationMethod):
    weights_by_lambda = True
    uses_target_logits = False  # the covariances are of the features only

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        weight: float = 1.0,
        mean_difference: bool = False,
    ):
        super().__init__()
        self.weight = float(weight)
        self.mean_difference = bool(mean_difference)

    def discrepancy(self, features, num_source):
        """||C_s - C_t||_F^2 / (4 d^2) (+ ||mu_s - mu_t||^2 / d with `mean_difference`)."""
        with torch.autocast(features.device.type, enabled=False):
            x = features.flatten(1)
            x = x.to(torch.promote_types(x.dtype, torch.float32))  # half/bf16 -> float32
            source, target = x[:num_source], x[num_source:]
            d = x.shape[1]
            loss = (covariance(source) - covariance(target)).pow(2).sum() / (4 * d * d)
            if self.mean_difference:
                loss = loss + (source.mean(dim=0) - target.mean(dim=0)).pow(2).sum() / d
            return loss

    def forward(self, features, logits, num_source, lambda_) -> AdaptationOutput:
        loss = lambda_ * self.weight * self.discrepancy(features, num_source)
        return AdaptationOutput({"coral_loss": loss})
