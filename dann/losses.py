"""Loss terms any method can add (`loss.*` in the config), and the functions methods build on.

Each term is a weight in the config (null or 0: off); a method may bring its own weights
(`AdaptationMethod.loss_terms`, e.g. VADA's entropy and VAT), which `loss.<term>=...` overrides
(`loss.vat_target=0` turns VADA's off). All act on the rows the module already computed (source
rows first, then target rows); VAT forwards the inputs twice more.

- `target_entropy`: mean Shannon entropy of the target predictions (entropy minimisation; Grandvalet
  & Bengio, NeurIPS 2004; as VADA's conditional entropy, Shu et al., ICLR 2018).
- `mcc`: minimum class confusion (Jin, Wang, Long, Wang, ECCV 2020, "Minimum Class Confusion for
  Versatile Domain Adaptation"; reference: thuml/Versatile-Domain-Adaptation and tllib
  `tllib/self_training/mcc.py`): temperature-scaled target probabilities (`mcc_temperature`,
  2.5), examples weighted by 1 + exp(-entropy) normalised to sum to the batch size, the class
  correlation matrix P^T W P normalised per row (each class's row sums to 1, the paper's
  "category normalisation"), loss = sum of its off-diagonal entries / classes. Departure: the
  reference code divides the matrix by its row sums through broadcasting, which scales column j
  by row j's sum; this follows the paper's equation (row j by row j's sum).
- `bsp`: batch spectral penalisation (Chen, Wang, Long, Wang, ICML 2019, "Transferability vs.
  Discriminability: Batch Spectral Penalization for Adversarial Domain Adaptation"; reference:
  thuml/Batch-Spectral-Penalization, tllib `tllib/alignment/bsp.py`): the sum of the squared
  `bsp_k` largest singular values of the source features and of the target features (k = 1,
  weight 1e-4 in the paper).
- `vat_source`, `vat_target`: virtual adversarial training (Miyato et al., TPAMI 2018), as VADA
  (Shu, Bui, Narui, Ermon, ICLR 2018, "A DIRT-T Approach to Unsupervised Domain Adaptation";
  reference: RuiShu/dirt-t `codebase/models/extra_layers.py`): one power iteration from a random
  direction of norm 1e-6 finds the input perturbation of L2 norm `vat_radius` (3.5) that changes
  the prediction most; the loss is the cross-entropy between the (detached) prediction and the
  prediction of the perturbed input, averaged over the domain's rows. Both forwards run the
  network in training mode, as the reference does (its BatchNorm statistics see the perturbed
  batches too); source and target rows are perturbed together, each row by its own vector.
- `teacher`: DIRT-T's refinement term (Shu et al., ICLR 2018; reference: RuiShu/dirt-t
  `codebase/models/dirtt.py`, `train.py`): KL(teacher || student) of the target predictions,
  where the teacher is a frozen copy of the network refreshed every `teacher_interval`
  optimiser steps (`dann.teacher.Teacher`, held by the module while the weight is not 0).
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

TERMS = ("target_entropy", "mcc", "bsp", "vat_source", "vat_target", "teacher")
DEFAULTS = {"mcc_temperature": 2.5, "bsp_k": 1, "vat_radius": 3.5, "teacher_interval": 5000}
# the terms that read the predictions of the target rows (the module then classifies them)
READ_LOGITS = ("target_entropy", "mcc", "vat_source", "vat_target", "teacher")
VAT_XI = 1e-6  # the random direction's norm before the power iteration (the reference's)


def at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """t in float32, or float64 if it is (half and bfloat16, e.g. under autocast, promoted)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Per-row Shannon entropy (nats) of probabilities (N, C)."""
    return -(probs * probs.clamp_min(1e-12).log()).sum(dim=1)


def mean_entropy(logits: torch.Tensor) -> torch.Tensor:
    log_p = F.log_softmax(at_least_float32(logits), dim=1)
    return -(log_p.exp() * log_p).sum(dim=1).mean()


def minimum_class_confusion(logits: torch.Tensor, temperature: float = 2.5) -> torch.Tensor:
    probs = F.softmax(at_least_float32(logits) / temperature, dim=1)
    weights = 1.0 + torch.exp(-entropy(probs).detach())
    weights = len(probs) * weights / weights.sum()
    confusion = (probs * weights[:, None]).T @ probs  # (C, C)
    confusion = confusion / confusion.sum(dim=1, keepdim=True)
    return (confusion.sum() - confusion.trace()) / probs.shape[1]


def batch_spectral_penalty(features: torch.Tensor, k: int = 1) -> torch.Tensor:
    singular = torch.linalg.svdvals(at_least_float32(features))  # descending
    return singular[:k].pow(2).sum()


def _unit(d: torch.Tensor) -> torch.Tensor:
    """Each row scaled to L2 norm 1 (over all its dimensions)."""
    norms = d.flatten(1).norm(dim=1).clamp_min(1e-12)
    return d / norms.view(-1, *([1] * (d.dim() - 1)))


def virtual_adversarial(
    predict: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    logits: torch.Tensor,
    radius: float = 3.5,
) -> torch.Tensor:
    """Per-row cross-entropy between softmax(logits) (detached) and the prediction of each
    row perturbed by its most sensitive direction of L2 norm `radius`."""
    target = F.softmax(at_least_float32(logits.detach()), dim=1)
    inputs = inputs.detach()
    probe = (VAT_XI * _unit(torch.randn_like(inputs))).requires_grad_()
    probe_loss = F.cross_entropy(at_least_float32(predict(inputs + probe)), target)
    (direction,) = torch.autograd.grad(probe_loss, probe)
    adversarial = inputs + radius * _unit(direction)
    return F.cross_entropy(at_least_float32(predict(adversarial)), target, reduction="none")


def teacher_divergence(teacher_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Mean over rows of KL(softmax(teacher_logits) || softmax(logits)); the teacher's side is
    a constant (no gradient reaches it)."""
    log_t = F.log_softmax(at_least_float32(teacher_logits.detach()), dim=1)
    log_s = F.log_softmax(at_least_float32(logits), dim=1)
    return (log_t.exp() * (log_t - log_s)).sum(dim=1).mean()


@dataclass
class TermInputs:
    """What the terms see of a training step: the rows' inputs, features and logits (source
    rows first), and the network's forward for VAT."""

    inputs: Callable[[], torch.Tensor]  # the concatenated inputs, built only if VAT asks
    features: torch.Tensor
    logits: torch.Tensor
    num_source: int
    # the network's training-mode logits for inputs whose first `num_source` rows are source
    predict: Callable[[torch.Tensor, int], torch.Tensor]
    teacher: Callable[[torch.Tensor], torch.Tensor] | None = None  # its logits, without gradient


def term_weights(loss: dict, method_terms: dict[str, float]) -> dict[str, float]:
    """The weight of each term: `loss.<term>` where the config sets it (not null), else the
    method's own, else 0."""
    weights = {}
    for term in TERMS:
        value = loss.get(term)
        weights[term] = float(method_terms.get(term, 0.0) if value is None else value)
    return weights


def shared_terms(weights: dict, options: dict, batch: TermInputs) -> dict[str, torch.Tensor]:
    """The weighted terms whose weight is not 0, by name (logged as train/<name>)."""
    n = batch.num_source
    terms = {}
    needs_inputs = weights["vat_source"] or weights["vat_target"] or weights["teacher"]
    inputs = batch.inputs() if needs_inputs else None
    if weights["target_entropy"]:
        terms["target_entropy"] = weights["target_entropy"] * mean_entropy(batch.logits[n:])
    if weights["mcc"]:
        mcc = minimum_class_confusion(batch.logits[n:], options["mcc_temperature"])
        terms["mcc"] = weights["mcc"] * mcc
    if weights["bsp"]:
        k, f = options["bsp_k"], batch.features
        penalty = batch_spectral_penalty(f[:n], k) + batch_spectral_penalty(f[n:], k)
        terms["bsp"] = weights["bsp"] * penalty
    if weights["vat_source"] or weights["vat_target"]:
        # only the rows of the domains whose weight is not 0 are perturbed
        lo = 0 if weights["vat_source"] else n
        hi = len(inputs) if weights["vat_target"] else n
        num_source = n - lo

        def predict(x: torch.Tensor) -> torch.Tensor:
            return batch.predict(x, num_source)

        logits = batch.logits[lo:hi]
        per_row = virtual_adversarial(predict, inputs[lo:hi], logits, options["vat_radius"])
        for name, rows in (
            ("vat_source", per_row[:num_source]),
            ("vat_target", per_row[num_source:]),
        ):
            if weights[name]:
                terms[name] = weights[name] * rows.mean()
    if weights["teacher"]:
        divergence = teacher_divergence(batch.teacher(inputs[n:]), batch.logits[n:])
        terms["teacher"] = weights["teacher"] * divergence
    return terms
