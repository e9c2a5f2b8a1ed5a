"""DANN (Ganin et al., JMLR 2016): a domain classifier behind the gradient reversal layer.

The domain classifier learns at full strength to tell source (0) from target (1); the GRL hands
the features -lambda times its gradient, so they learn to fool it. lambda lives only in the GRL.
"""

import torch
import torch.nn.functional as F

from dann.grl import GradientReversal
from dann.methods.base import AdaptationMethod, AdaptationOutput, domain_targets
from dann.models.heads import mlp_head


class DANN(AdaptationMethod):
    reverses_gradient = True

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden: list[int] = (100,),
        dropout: float = 0.0,
    ):
        super().__init__()
        self.grl = GradientReversal()
        self.discriminator = mlp_head(in_features, hidden, 1, dropout)

    def reverse(self, features: torch.Tensor, lambda_: float) -> torch.Tensor:
        self.grl.lambda_ = lambda_
        return self.grl(features)

    def forward(self, features, logits, num_source, lambda_) -> AdaptationOutput:
        d = self.discriminator(self.reverse(features, lambda_)).squeeze(1)
        t = domain_targets(num_source, len(features), features.device)
        loss = F.binary_cross_entropy_with_logits(d, t)
        return AdaptationOutput({"domain_loss": loss}, d, t)

    def domain_logits(self, features: torch.Tensor, logits=None) -> torch.Tensor:
        return self.discriminator(features).squeeze(1)
