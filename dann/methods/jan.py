"""JAN (Long, Zhu, Wang, Jordan, ICML 2017, "Deep Transfer Learning with Joint Adaptation
Networks"): the joint MMD (JMMD) between the source and the target joint distributions of the
features and the class predictions, added to the source label loss:

    jmmd_loss = lambda * weight * MMD^2_K,   K = K_features (*) K_softmax (elementwise product)

K_features is the multi-kernel sum of DAN (sigma_u^2 = alpha_u * the batch's mean squared
distance, dann/methods/mmd.py); K_softmax is one Gaussian kernel of fixed bandwidth
`softmax_sigma` on softmax(logits). The predictions are not detached: the JMMD's gradient
reaches the classifier through them, as in the paper and tllib. No discriminator, no gradient
reversal; lambda (the `schedule`) weights the loss, so lambda = 0 switches the method off.

Follows thuml/Transfer-Learning-Library (`tllib/alignment/jan.py`
JointMultipleKernelMaximumMeanDiscrepancy, `examples/domain_adaptation/image_classification/
jan.py`): layers (features, softmax(logits)), feature alphas 2^k for k = -3..1 summed, softmax
sigma 0.92 (not tracked), trade-off (`weight`) 1.0, the quadratic-time estimate (tllib's JAN
example default).

Departures from the paper and tllib:

- Two layers, the feature extractor's output and the softmax (tllib); the paper's AlexNet JAN
  uses fc6, fc7 and fc8.
- JAN-A, the adversarial variant (tllib's `Theta` layers behind GRLs), is not implemented.
- The biased V-statistic over every pair of rows, without tllib's diagonal-free within-domain
  sums and constant 2 / (n - 1) (see dann/methods/mmd.py); the paper's linear-time estimate is
  not implemented.
"""

from collections.abc import Sequence

from dann.errors import ConfigError
from dann.losses import at_least_float32
from dann.methods.base import AdaptationOutput
from dann.methods.dan import DAN, TLLIB_ALPHAS
from dann.methods.mmd import (
    float32_autocast_off,
    gaussian_kernel,
    mmd2,
)


class JAN(DAN):
    """DAN's feature kernel times a Gaussian kernel on the predictions."""

    uses_target_logits = True  # the target predictions are half of the joint distribution

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        weight: float = 1.0,
        alphas: Sequence[float] = TLLIB_ALPHAS,
        softmax_sigma: float = 0.92,
    ):
        super().__init__(in_features, num_classes, weight, alphas)
        if not softmax_sigma > 0:
            raise ConfigError(
                f"method.softmax_sigma={softmax_sigma}: the softmax kernel's bandwidth must be "
                "positive (tllib: 0.92)"
            )
        self.softmax_sigma = float(softmax_sigma)

    def discrepancy(self, features, logits, num_source):
        """JMMD^2 between the source rows and the target rows of (features, softmax(logits))."""
        with float32_autocast_off(features.device):
            kernel = self.feature_kernel(features)
            probs = at_least_float32(logits).softmax(dim=1)
            kernel = kernel * gaussian_kernel(probs, self.softmax_sigma)
            return mmd2(kernel, num_source)

    def forward(self, features, logits, num_source, lambda_) -> AdaptationOutput:
        loss = lambda_ * self.weight * self.discrepancy(features, logits, num_source)
        return AdaptationOutput({"jmmd_loss": loss})
