"""AFN (Xu, Li, Yang, Lin, ICCV 2019, "Larger Norm More Transferable: An Adaptive Feature Norm
Approach for Unsupervised Domain Adaptation"), its stepwise variant SAFN: each step asks every
feature vector's L2 norm to grow by delta_r beyond its current value.

Follows the official code (jihanyang/AFN, `vanilla/Office31/SAFN/code/train.py`,
`get_L2norm_loss_self_driven`) and tllib (thuml/Transfer-Learning-Library,
`tllib/normalization/afn.py`, `AdaptiveFeatureNorm`; `examples/.../image_classification/afn.py`).
For the source rows and the target rows each,

    L = weight * mean_i (||h_i||_2 - (||h_i||_2.detach() + delta_r))^2

and the loss (train/afn_loss) is L_source + L_target. Its value is always
2 * weight * delta_r^2; its gradient on each ||h_i|| is -2 * weight * delta_r / n (n rows of that
domain), so gradient descent lengthens every feature vector, both domains alike. No
discriminator, no gradient reversal: `domain_logits` returns None (nothing tells the domains
apart, and val/domain_acc is not logged).

lambda weights the loss (`weights_by_lambda`): the loss is lambda * (L_source + L_target). AFN has
no GRL for lambda to scale, and weighting its one loss term keeps lambda the framework's single
adaptation knob: lambda = 0 switches the method off (its control, the source-only network with
the target rows in the batch), and `schedule=constant` (value 1) is the official constant weight.

Departures from the official code and tllib:
- The norm is taken on the feature extractor's output `features` (what the label classifier
  reads). The paper and both codes take it on the bottleneck embedding inside their classifier
  (Linear-BN-ReLU-Dropout, after the dropout), which this framework does not have.
- The paper's L2-preserving dropout (scaled by 1/sqrt(1 - p) instead of 1/(1 - p), so that
  dropout does not change the expected norm) is not used: the backbone's dropout is the plain one.
- With the default `schedule=grl_sigmoid` (lambda_max 1) the weight ramps from 0 up to `weight`;
  theirs is constant from the first step (`schedule=constant`).
- Defaults: delta_r = 1.0 and weight = 0.05, those of the official code (`--weight_L2norm 0.05`,
  radius + 1.0) and of tllib's example (`--trade-off-norm 0.05`, `--delta 1`), one setting for
  every benchmark; the paper has no digit experiments, so there is no digits-specific value.
"""

import torch

from dann.errors import ConfigError
from dann.methods.base import AdaptationMethod, AdaptationOutput


def stepwise_norm_loss(features: torch.Tensor, delta_r: float) -> torch.Tensor:
    """mean_i (||h_i|| - (||h_i||.detach() + delta_r))^2 over the rows h_i of `features`."""
    norms = features.float().norm(p=2, dim=1)
    return (norms - (norms.detach() + delta_r)).pow(2).mean()


class AFN(AdaptationMethod):
    weights_by_lambda = True  # lambda weights the norm loss; lambda = 0 turns it off
    uses_target_logits = False  # reads the features only

    def __init__(
        self, in_features: int, num_classes: int, delta_r: float = 1.0, weight: float = 0.05
    ):
        super().__init__()
        if not delta_r > 0:
            raise ConfigError(
                f"method.delta_r={delta_r}: choose a number > 0, the step by which each feature "
                "norm is asked to grow (official code and tllib: 1.0)"
            )
        self.delta_r, self.weight = float(delta_r), float(weight)

    def forward(self, features, logits, num_source, lambda_) -> AdaptationOutput:
        source = stepwise_norm_loss(features[:num_source], self.delta_r)
        target = stepwise_norm_loss(features[num_source:], self.delta_r)
        return AdaptationOutput({"afn_loss": lambda_ * self.weight * (source + target)})
