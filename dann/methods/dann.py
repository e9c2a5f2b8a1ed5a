"""DANN (Ganin et al., JMLR 2016): a domain classifier behind the gradient reversal layer.

The domain classifier learns at full strength to tell source (0) from target (1); the GRL hands
the features -lambda times its gradient, so they learn to fool it. lambda lives only in the GRL.

`loss`: `bce` (one logit, binary cross-entropy; the default) or `softmax` (two logits, log-softmax
+ NLL, as fungtion/DANN's head; the same loss of the logit difference, another parameterisation).
`weight` multiplies the domain loss (fungtion/DANN adds the source and target halves' mean
losses: weight 2). `norm` is the discriminator's own normalisation (`backbone.domain_head.norm`:
`none` or `batch`, one BatchNorm over the mixed batch; see `discriminator_head`), untouched by
the `norm=` group, as are DAAN's and CDAN's discriminators.
"""

import torch
import torch.nn.functional as F

from dann.errors import ConfigError
from dann.grl import GradientReversal
from dann.methods.base import AdaptationMethod, AdaptationOutput, domain_targets
from dann.models.heads import discriminator_head

DOMAIN_LOSSES = ("bce", "softmax")


class DANN(AdaptationMethod):
    reverses_gradient = True
    uses_target_logits = False  # the domain classifier sees features only

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden: list[int] = (100,),
        dropout: float = 0.0,
        norm: str | None = None,
        loss: str = "bce",
        weight: float = 1.0,
        batch_norm: bool | None = None,
    ):
        super().__init__()
        if loss not in DOMAIN_LOSSES:
            raise ConfigError(f"method.loss={loss!r}: choose one of {', '.join(DOMAIN_LOSSES)}")
        self.loss, self.weight = loss, float(weight)
        self.grl = GradientReversal()
        outputs = 2 if loss == "softmax" else 1
        self.discriminator = discriminator_head(
            in_features, hidden, outputs, dropout, norm, batch_norm
        )

    def reverse(self, features: torch.Tensor, lambda_: float) -> torch.Tensor:
        self.grl.lambda_ = lambda_
        return self.grl(features)

    @staticmethod
    def target_logit(out: torch.Tensor) -> torch.Tensor:
        """(N,) log-odds of "is target" from a discriminator's 1 or 2 outputs."""
        return out[:, 1] - out[:, 0] if out.shape[1] == 2 else out[:, 0]

    def forward(self, features, logits, num_source, lambda_) -> AdaptationOutput:
        d = self.target_logit(self.discriminator(self.reverse(features, lambda_)))
        t = domain_targets(num_source, len(features), features.device)
        # softmax's NLL of the right class is exactly the BCE of the log-odds
        loss = self.weight * F.binary_cross_entropy_with_logits(d, t)
        return AdaptationOutput({"domain_loss": loss}, d, t)

    def domain_logits(self, features: torch.Tensor, logits=None) -> torch.Tensor:
        return self.target_logit(self.discriminator(features))
