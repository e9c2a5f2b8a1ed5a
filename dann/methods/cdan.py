"""CDAN and CDAN+E (Long, Cao, Wang, Jordan, NeurIPS 2018, "Conditional Adversarial Domain
Adaptation"): the domain discriminator, behind the GRL, sees the features conditioned on the
classifier's predictions through the multilinear map f (x) g.

- g = softmax(logits), detached in the multilinear map (as tllib and the official code do): the
  features learn from the discriminator through the GRL.
- Multilinear map: the flattened outer product g f^T (num_classes * in_features values, g-major
  as in the official code). When that is larger than `max_multilinear_dim`, the randomized map
  T = (R_f f) * (R_g g) / sqrt(d) with fixed Gaussian R_f, R_g of output size d =
  `randomized_dim`, drawn once from `random_seed` and kept as buffers (saved in checkpoints).
- `entropy_conditioning` (CDAN+E): example i's BCE is weighted by w_i = 1 + exp(-H(g_i)), so
  confident (easy-to-transfer) examples count more. As in the official code (thuml/CDAN,
  `loss.CDAN`): H is computed from the *undetached* predictions behind a GRL of its own (the
  reversed gradient of the weighted loss reaches the classifier through the weights), and the
  weights are normalised within each domain by their detached sums, so source and target each
  contribute half of the loss.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from dann.grl import GradientReversal, grad_reverse
from dann.losses import entropy
from dann.methods.base import AdaptationMethod, AdaptationOutput, domain_targets
from dann.models.heads import discriminator_head


def entropy_weights(probs: torch.Tensor, lambda_: float | None = None) -> torch.Tensor:
    """CDAN+E's per-example weights 1 + exp(-H(p)): in (1, 2], larger for confident rows. With
    `lambda_`, H passes a gradient reversal layer first (the official code's grl_hook)."""
    h = entropy(probs)
    return 1.0 + torch.exp(-(h if lambda_ is None else grad_reverse(h, lambda_)))


class MultilinearMap(nn.Module):
    """f (x) g flattened: (N, in_features), (N, num_classes) -> (N, num_classes * in_features)."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.out_features = in_features * num_classes

    def forward(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return torch.bmm(g.unsqueeze(2), f.unsqueeze(1)).flatten(1)


class RandomizedMultilinearMap(nn.Module):
    """(R_f f) * (R_g g) / sqrt(d) with fixed random Gaussian matrices (not trained)."""

    def __init__(self, in_features: int, num_classes: int, out_features: int, seed: int):
        super().__init__()
        self.out_features = out_features
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("r_f", torch.randn(in_features, out_features, generator=gen))
        self.register_buffer("r_g", torch.randn(num_classes, out_features, generator=gen))

    def forward(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return (f @ self.r_f) * (g @ self.r_g) / math.sqrt(self.out_features)


class CDAN(AdaptationMethod):
    reverses_gradient = True

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden: list[int] = (100,),
        dropout: float = 0.0,
        norm: str | None = None,
        entropy_conditioning: bool = False,
        max_multilinear_dim: int = 4096,
        randomized_dim: int = 1024,
        random_seed: int = 0,
        batch_norm: bool | None = None,
    ):
        super().__init__()
        self.entropy_conditioning = entropy_conditioning
        self.grl = GradientReversal()
        if in_features * num_classes > max_multilinear_dim:
            self.map = RandomizedMultilinearMap(
                in_features, num_classes, randomized_dim, random_seed
            )
        else:
            self.map = MultilinearMap(in_features, num_classes)
        self.discriminator = discriminator_head(
            self.map.out_features, hidden, 1, dropout, norm, batch_norm
        )

    def reverse(self, features: torch.Tensor, lambda_: float) -> torch.Tensor:
        self.grl.lambda_ = lambda_
        return self.grl(features)

    def forward(self, features, logits, num_source, lambda_) -> AdaptationOutput:
        probs = logits.softmax(dim=1)
        g = probs.detach()
        d = self.discriminator(self.reverse(self.map(features, g), lambda_)).squeeze(1)
        t = domain_targets(num_source, len(features), features.device)
        if not self.entropy_conditioning:
            loss = F.binary_cross_entropy_with_logits(d, t)
            return AdaptationOutput({"domain_loss": loss}, d, t)
        # the weights carry a reversed gradient to the classifier, like the features do
        w = entropy_weights(probs, lambda_)
        w_source, w_target = w[:num_source], w[num_source:]
        w = torch.cat([w_source / w_source.sum().detach(), w_target / w_target.sum().detach()])
        w = w / 2  # the official code divides by the (detached) sum of the weights: 2
        loss = (w * F.binary_cross_entropy_with_logits(d, t, reduction="none")).sum()
        return AdaptationOutput({"domain_loss": loss}, d, t)

    def domain_logits(
        self, features: torch.Tensor, logits: torch.Tensor | None = None
    ) -> torch.Tensor:
        if logits is None:
            raise ValueError(
                "CDAN's discriminator is conditioned on the class predictions: call "
                "domain_logits(features, logits=classifier(features))"
            )
        return self.discriminator(self.map(features, logits.softmax(dim=1))).squeeze(1)
