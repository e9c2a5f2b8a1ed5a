"""DAN (Long, Cao, Wang, Jordan, ICML 2015, "Learning Transferable Features with Deep Adaptation
Networks"): the multi-kernel MMD (MK-MMD) between the source and the target features, added to
the source label loss:

    mmd_loss = lambda * weight * MMD^2_k(features_s, features_t),   k = sum_u k_u

k_u Gaussian with sigma_u^2 = alpha_u * the batch's mean squared pairwise distance (see
dann/methods/mmd.py for the kernels and the estimate). No gradient reversal and no discriminator:
the features descend the MMD directly. lambda (the `schedule`) weights the loss, so lambda = 0
(`schedule=constant schedule.value=0`) is the method switched off, and `schedule=grl_sigmoid`
warms the loss up as the DANN paper warms up its reversed gradient.

Follows thuml/Transfer-Learning-Library (`tllib/alignment/dan.py`
MultipleKernelMaximumMeanDiscrepancy, `examples/domain_adaptation/image_classification/dan.py`):
alphas 2^k, k = -3..1, the kernel matrices summed, trade-off (`weight`) 1.0.

Departures from the paper and tllib:

- One adapted layer: the feature extractor's output (the features the label classifier reads).
  The paper adapts fc6-fc8 of AlexNet; tllib adapts the bottleneck features only, as here.
- The kernel weights beta are fixed, every kernel counting 1 (tllib), not learned by the paper's
  quadratic program, whose beta also sum to 1: with 5 kernels the loss is 5 times an
  equal-beta paper loss. The paper's bandwidth family (2^-8 .. 2^8 gamma in steps of 2^1/2)
  is replaced by tllib's five multiples of the mean squared distance.
- The biased quadratic-time MMD^2 estimate, not the paper's (and tllib's DAN example's default)
  linear-time one; no constant 2 / (n - 1) added (see dann/methods/mmd.py).
"""

from collections.abc import Sequence

from dann.losses import at_least_float32
from dann.methods.base import AdaptationMethod, AdaptationOutput
from dann.methods.mmd import (
    check_alphas,
    float32_autocast_off,
    mmd2,
    multi_gaussian_kernel,
)

TLLIB_ALPHAS = (0.125, 0.25, 0.5, 1.0, 2.0)  # 2^k, k = -3..1


class DAN(AdaptationMethod):
    weights_by_lambda = True
    uses_target_logits = False  # the MMD is of the features only

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        weight: float = 1.0,
        alphas: Sequence[float] = TLLIB_ALPHAS,
    ):
        super().__init__()
        self.weight = float(weight)
        self.alphas = check_alphas(alphas)

    def feature_kernel(self, features):
        """The multi-kernel Gaussian kernel matrix of the feature rows (in float32 or wider; call
        with autocast off)."""
        return multi_gaussian_kernel(at_least_float32(features).flatten(1), self.alphas)

    def discrepancy(self, features, num_source):
        """MK-MMD^2 between the source rows and the target rows of `features`."""
        with float32_autocast_off(features.device):
            return mmd2(self.feature_kernel(features), num_source)

    def forward(self, features, logits, num_source, lambda_) -> AdaptationOutput:
        loss = lambda_ * self.weight * self.discrepancy(features, num_source)
        return AdaptationOutput({"mmd_loss": loss})
