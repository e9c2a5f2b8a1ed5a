"""DAAN (Yu, Wang, Chen, Huang, ICDM 2019, "Transfer Learning with Dynamic Adversarial Adaptation
Network"): a global domain discriminator on the features plus one local discriminator per class,
fed with the features weighted by that class's softmax probability, all behind the GRL:

    loss = (1 - omega) * L_global + omega * L_local,   L_local = sum over classes of L_c

L_global and each L_c are the mean domain BCE over the batch; L_local is the *sum* over classes,
as in the paper and the official code (jindongwang/transferlearning, code/deep/DAAN and
code/DeepDA/loss_funcs/daan.py), without the official code's extra constant factors.

omega, the dynamic adversarial factor, starts at 0.5 (official code) and is re-estimated at the
end of every training epoch from the proxy A-distances of the discriminators, as the paper
defines it: d_g = 2(1 - 2 eps_g), d_l = mean_c 2(1 - 2 eps_c), omega = d_g / (d_g + d_l), with
eps the discriminators' classification errors over the epoch. Local discriminator c sees
p_c * features, and a row with p_c ~ 0 gives it nothing to judge (its input is ~0, its answer
a coin flip): its errors are weighted by p_c, eps_c = sum_i p_ic [wrong_ic] / sum_i p_ic, so
such rows do not pull eps_c towards 0.5. (The official code instead uses
the BCE losses as a stand-in for eps, and sets omega to 1 minus this ratio.) A-distances are
clipped to [0, 2]; when both are 0 (no discriminator tells the domains apart) omega is 0.5, so
omega always lies in [0, 1].

The class probabilities are detached (as tllib does for CDAN's predictions): every gradient the
discriminators send into the network goes through the GRL into the features, reversed.
"""

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from dann.methods.base import AdaptationOutput, domain_targets
from dann.methods.dann import DANN
from dann.models.heads import discriminator_head


def a_distance(error: torch.Tensor) -> torch.Tensor:
    """Proxy A-distance 2(1 - 2 error) of a discriminator with the given error, clipped to [0, 2]
    (an error above chance says no more than chance)."""
    return (2 * (1 - 2 * error)).clamp(0.0, 2.0)


def dynamic_factor(global_error: torch.Tensor, local_errors: torch.Tensor) -> float:
    """omega = d_g / (d_g + mean_c d_c) in [0, 1]; 0.5 when both distances are 0."""
    d_global = a_distance(global_error)
    d_local = a_distance(local_errors).mean()
    total = float(d_global + d_local)
    return 0.5 if total <= 0.0 else float(d_global) / total


class DAAN(DANN):
    """`discriminator` (from DANN) is the global discriminator; `local_discriminators` holds one
    per class."""

    uses_target_logits = True  # the class probabilities weight the local discriminators' inputs

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden: list[int] = (100,),
        dropout: float = 0.0,
        norm: str | None = None,
        initial_omega: float = 0.5,
        batch_norm: bool | None = None,
    ):
        super().__init__(
            in_features, num_classes, hidden, dropout, norm=norm, batch_norm=batch_norm
        )
        if not 0.0 <= initial_omega <= 1.0:
            raise ValueError(f"initial_omega must lie in [0, 1], got {initial_omega}")
        self.local_discriminators = nn.ModuleList(
            discriminator_head(in_features, hidden, 1, dropout, norm, batch_norm)
            for _ in range(num_classes)
        )
        # saved in checkpoints, so a resumed run goes on with the same omega
        self.register_buffer("omega", torch.tensor(float(initial_omega)))
        # epoch statistics: [global errors, p-weighted local errors per class..., examples seen,
        # summed p per class...]. A plain
        # attribute, not a buffer, so DDP's buffer broadcast never overwrites a rank's counts
        self._epoch_errors: torch.Tensor | None = None

    def get_extra_state(self) -> dict:
        """The epoch's error counts so far, so a run resumed mid-epoch re-estimates the same
        omega (rank 0's counts under DDP)."""
        return {"epoch_errors": self._epoch_errors}

    def set_extra_state(self, state: dict) -> None:
        self._epoch_errors = state.get("epoch_errors")

    def forward(self, features, logits, num_source, lambda_) -> AdaptationOutput:
        reversed_features = self.reverse(features, lambda_)
        t = domain_targets(num_source, len(features), features.device)
        d_global = self.discriminator(reversed_features).squeeze(1)
        probs = logits.detach().softmax(dim=1)
        d_local = torch.stack(
            [
                disc(probs[:, c : c + 1] * reversed_features).squeeze(1)
                for c, disc in enumerate(self.local_discriminators)
            ],
            dim=1,
        )  # (N, num_classes)
        global_loss = F.binary_cross_entropy_with_logits(d_global, t)
        local_loss = (
            F.binary_cross_entropy_with_logits(
                d_local, t.unsqueeze(1).expand_as(d_local), reduction="none"
            )
            .mean(dim=0)
            .sum()
        )
        self._count_errors(d_global, d_local, t, probs)
        omega = self.omega
        losses = {
            "global_domain_loss": (1 - omega) * global_loss,
            "local_domain_loss": omega * local_loss,
        }
        return AdaptationOutput(losses, d_global, t)

    @torch.no_grad()
    def _count_errors(self, d_global, d_local, targets, probs) -> None:
        wrong_global = ((d_global > 0).float() != targets).float().sum().view(1)
        wrong_local = ((d_local > 0).float() != targets.unsqueeze(1)).float()  # (N, C)
        counts = torch.cat(
            [
                wrong_global,
                (probs * wrong_local).sum(dim=0),
                targets.new_full((1,), len(targets)),
                probs.sum(dim=0),
            ]
        )
        if self._epoch_errors is None:
            self._epoch_errors = torch.zeros_like(counts)
        self._epoch_errors += counts

    def on_train_epoch_end(self) -> dict[str, float]:
        """Re-estimate omega from this epoch's discriminator errors (all processes), then reset."""
        counts = self._epoch_errors
        classes = len(self.local_discriminators)
        if counts is None:  # this process saw no batch; still take part in the reduction
            counts = torch.zeros(2 * classes + 2, device=self.omega.device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(counts, op=dist.ReduceOp.SUM)
        self._epoch_errors = None
        seen, weight = counts[classes + 1], counts[classes + 2 :]
        if seen > 0:
            # a class no row was predicted as says nothing: chance (A-distance 0)
            local = torch.where(weight > 0, counts[1 : classes + 1] / weight.clamp_min(1e-12), 0.5)
            self.omega.fill_(dynamic_factor(counts[0] / seen, local))
        return {"omega": float(self.omega)}
