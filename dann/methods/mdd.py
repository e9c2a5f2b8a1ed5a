"""MDD (Zhang, Liu, Long, Jordan, ICML 2019, "Bridging Theory and Algorithm for Domain
Adaptation"): the margin disparity discrepancy, estimated by an adversarial copy of the label
classifier and minimised by the features through the gradient reversal layer.

Follows the official code (thuml/MDD, `model/MDD.py`, `MDD.get_loss`) and tllib
(thuml/Transfer-Learning-Library, `tllib/alignment/mdd.py`,
`ClassificationMarginDisparityDiscrepancy`; `examples/.../image_classification/mdd.py`).

With k_i = argmax of the label classifier's logits on row i (a pseudo-label: no gradient),
p_i = softmax(adversary(GRL(features_i))) and gamma the margin, the loss is

    weight * ( gamma * mean_{i in source} -log p_i[k_i]  +  mean_{i in target} -log(1 - p_i[k_i]) )

logged as train/mdd_loss. It is -D, the negated MDD estimate (tllib's `transfer_loss = -mdd(...)`).
Who minimises what:

- the adversary (its parameters receive the plain gradient of the loss) minimises it: it learns
  to agree with the classifier on the source (cross-entropy towards k, times gamma) and to
  disagree with it on the target; that is, it maximises the discrepancy D;
- the features receive, through the GRL, -lambda times that gradient: they maximise the loss
  (minimise D), moving source and target so that the adversary cannot both agree on one and
  disagree on the other;
- the label classifier gets no gradient from this loss (k is an argmax).

lambda lives only in the GRL (`reverses_gradient`): at lambda = 0 the adversary still trains,
and no gradient of this loss reaches the features. `weight` is tllib's `trade_off`.

A domain read-out: the adversary's loss is exactly a binary cross-entropy of "is target" with
probability q_i = 1 - p_i[k_i] (source rows weighted gamma): "the adversary disagrees with the
classifier" is its guess "target". `domain_logits` returns that log-odds,
log(1 - p[k]) - log p[k], for train/domain_acc and val/domain_acc (near 0.5 when the adversary
cannot tell the domains apart; it needs the classifier's logits, as CDAN's does).

Departures from the official code and tllib:
- The adversary has the label classifier's architecture as configured here
  (`backbone.classifier`: hidden widths, dropout, batch_norm), not their fixed
  Linear(1024)-ReLU-Dropout(0.5)-Linear head; their bottleneck (Linear-BN-ReLU-Dropout on the
  backbone) is not added: the adversary reads the feature extractor's output `features`. Its
  BatchNorm (if any) is plain BatchNorm1d over the mixed batch: the `norm=` group converts the
  prediction path only. Weights initialised by `backbone.init` (theirs: N(0, 0.01), zero bias).
- log(1 - p[k]) is computed exactly and stably as logsumexp_{j != k} z_j - logsumexp_j z_j of
  the adversary's logits z (in float32), not through tllib's `shift_log` (log(min(1 - p + 1e-6,
  1))) or the official code's plain log(1 - p) (-inf once 1 - p[k] underflows).
- The two halves are averaged separately (gamma * source mean + target mean): the same as theirs
  for equal batch sizes; tllib adds the rows pairwise and needs them equal.
- The GRL coefficient is lambda from `schedule=` (default grl_sigmoid, rising to 1). Theirs is a
  warm-start GRL rising to 0.1 (alpha = 1 per 1000 iterations: over tllib's 20 x 1000 steps,
  `schedule=warm_start schedule.alpha=20 schedule.hi=0.1`). The cap matters: on the two-moons
  toy (experiment=moons, seeds 1-3) lambda rising to 1 put every target point in one class
  (target accuracy 0.5; source-only 0.70-0.72); rising to 0.1 (`schedule=warm_start
  schedule.hi=0.1`) it gave 0.72-0.88.
- Defaults: margin 4 (tllib's default; official Office-31, Office-Home 2), weight 1 (tllib's
  trade_off; the official code adds the loss unweighted).
"""

import torch
import torch.nn.functional as F

from dann.errors import ConfigError
from dann.grl import GradientReversal
from dann.methods.base import AdaptationMethod, AdaptationOutput, domain_targets
from dann.models.heads import mlp_head


def disagreement_logits(adversary_logits: torch.Tensor, pseudo_labels: torch.Tensor):
    """(N,) log-odds log(1 - p[k]) - log p[k] that the adversary disagrees with pseudo-label k,
    p = softmax(adversary_logits) (computed in float32, exactly: no clamp, no offset)."""
    z = adversary_logits.float()
    picked = F.one_hot(pseudo_labels, z.shape[1]).bool()
    others = torch.logsumexp(z.masked_fill(picked, float("-inf")), dim=1)
    return others - z.gather(1, pseudo_labels[:, None]).squeeze(1)


class MDD(AdaptationMethod):
    reverses_gradient = True
    uses_target_logits = True  # the target rows' pseudo-labels

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden: list[int] = (100,),
        dropout: float | list[float] = 0.0,
        batch_norm: bool = False,
        margin: float = 4.0,
        weight: float = 1.0,
    ):
        super().__init__()
        if num_classes < 2:
            raise ConfigError(f"MDD needs at least 2 classes to disagree on, got {num_classes}")
        if not margin > 0:
            raise ConfigError(f"method.margin={margin}: choose a number > 0 (tllib: 4)")
        self.margin, self.weight = float(margin), float(weight)
        self.grl = GradientReversal()
        self.adversary = mlp_head(in_features, hidden, num_classes, dropout, batch_norm)

    def forward(self, features, logits, num_source, lambda_) -> AdaptationOutput:
        self.grl.lambda_ = lambda_
        pseudo_labels = logits.detach().argmax(dim=1)
        d = disagreement_logits(self.adversary(self.grl(features)), pseudo_labels)
        t = domain_targets(num_source, len(features), features.device)
        # binary cross-entropy of "disagrees": -log p[k] on source, -log(1 - p[k]) on target
        source_loss = F.softplus(d[:num_source]).mean()
        target_loss = F.softplus(-d[num_source:]).mean()
        loss = self.weight * (self.margin * source_loss + target_loss)
        return AdaptationOutput({"mdd_loss": loss}, d, t)

    def domain_logits(
        self, features: torch.Tensor, logits: torch.Tensor | None = None
    ) -> torch.Tensor:
        if logits is None:
            raise ValueError(
                "MDD's domain read-out is the adversary's disagreement with the classifier: call "
                "domain_logits(features, logits=classifier(features))"
            )
        return disagreement_logits(self.adversary(features), logits.argmax(dim=1))
