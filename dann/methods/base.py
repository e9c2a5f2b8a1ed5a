"""The interface every method implements (DomainBed's `update()` idea, made Lightning-friendly).

The LightningModule runs the shared feature extractor and label classifier on the concatenated
source+target batch, computes the source label loss, and hands the rest to the method:

    out = method(features, logits, num_source, lambda_)

`features` hold the source rows first, then the target rows; so do `logits`, unless the method
says it does not read the target rows' logits (`uses_target_logits = False`, DANN) and nothing
else needs them: then `logits` hold the source rows only. The method owns its own
heads (domain discriminators), returns named losses that are added to the total loss, and
optionally domain logits/targets for the domain-accuracy metric.
"""

from dataclasses import dataclass, field

import torch
from torch import nn

from dann.data.label_sets import SETTINGS


@dataclass
class AdaptationOutput:
    losses: dict[str, torch.Tensor] = field(default_factory=dict)  # logged as train/<name>
    domain_logits: torch.Tensor | None = None  # (N,) logits of "is target"
    domain_targets: torch.Tensor | None = None  # (N,) 0 = source, 1 = target


def domain_targets(num_source: int, num_total: int, device: torch.device) -> torch.Tensor:
    """0 for the first `num_source` rows (source), 1 for the rest (target)."""
    t = torch.ones(num_total, device=device)
    t[:num_source] = 0
    return t


class AdaptationMethod(nn.Module):
    reverses_gradient = False  # True when lambda_ scales a gradient that reaches the features
    # True when lambda_ instead weights the method's own alignment loss (DAN, CORAL, MCC, ...):
    # logged as train/lambda like the GRL's, and lambda = 0 is again the method switched off
    weights_by_lambda = False
    trains_on_target_labels = False  # only the target oracle (an upper bound)
    # False for baselines that must not train on target images (source-only, the oracle): the
    # module then forwards the target rows in eval mode, without gradient (see module.py)
    forwards_target = True
    # False when forward() never reads logits[num_source:]: the module then skips classifying
    # the target rows in training, unless the classifier has BatchNorm (its statistics see
    # both domains) or the target entropy term needs them
    uses_target_logits = True
    # False for a refinement stage that trains on the target alone (DIRT-T): the module then
    # forwards the source rows in eval mode, without gradient (their label loss is logged only)
    forwards_source = True
    # True for a refinement stage that needs a trained start (DIRT-T): init_from=<checkpoint>
    refines = False
    # True when the label classifier has an extra output for "unknown" (OSBP): K + 1 logits
    unknown_output = False
    # the label-set settings (dann/data/label_sets.py) the method is meant for
    settings = SETTINGS
    # True when `unknown()` decides "unknown" from the features (OVANet), not from the logits
    own_unknown_rule = False
    # True when forward() takes the source rows' labels (`source_labels=`, PADA's class weights)
    uses_source_labels = False

    def forward(
        self, features: torch.Tensor, logits: torch.Tensor, num_source: int, lambda_: float
    ) -> AdaptationOutput:
        raise NotImplementedError

    def attach(self, classifier: nn.Module) -> None:
        """Called once with the module's label classifier, for a method whose loss classifies
        features of its own (OSBP: reversed target features); kept as a reference, never a
        submodule (its weights are the module's)."""

    def unknown(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor | None:
        """Where the method says "unknown" by a rule of its own (`own_unknown_rule`; OVANet's
        one-vs-all classifiers): a bool per row; None for the default rule (dann/open_set.py)."""
        return None

    def label_class_weights(self) -> torch.Tensor | None:
        """Per-class weights of the source label loss (PADA's), or None for a plain mean."""
        return None

    def loss_terms(self) -> dict[str, float]:
        """Weights of the shared loss terms this method brings (`dann.losses.TERMS`, e.g.
        VADA's target entropy and VAT); `loss.<term>=...` in the config overrides each."""
        return {}

    def on_train_epoch_end(self) -> dict[str, float]:
        """Called once per training epoch; returns scalars to log as train/<name> (e.g. DAAN's
        omega). Statistics gathered over the epoch must be reduced across processes here."""
        return {}

    def domain_logits(
        self, features: torch.Tensor, logits: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """Evaluation-time domain logits (for val/domain_acc), or None if the method has none.
        `logits` are the label classifier's logits (CDAN's discriminator is conditioned on them)."""
        return None
