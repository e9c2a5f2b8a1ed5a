"""Sharpness-aware minimisation of the label loss (SDAT: Rangwani, Aithal, Mishra, Jain, Babu,
ICML 2022, "A Closer Look at Smoothness in Domain Adversarial Training"; SAM: Foret et al.,
ICLR 2021), set with `optimizer.sam_rho` (0.02-0.05 in SDAT's runs); composes with any method.

A step with SAM: the label loss's gradient g at the weights w of the prediction path (feature
extractor and label classifier) gives the ascent e = rho * g / ||g|| (one norm over all those
weights); the step's full loss (label loss + the method's losses) is computed and
back-propagated at w + e; the weights go back to w (the saved copy, exactly) and the optimiser
steps with those gradients. The discriminators and other method heads are not perturbed and
get their ordinary gradient at the perturbed features, as in SDAT's code
(val-iisc/SDAT, `examples/cdan_mcc_sdat.py`, `common/utils/sam.py`), which this follows.
Departure: one optimiser for all parameters (SDAT steps the discriminator with a separate
optimiser at the same point of the step: the same update for SGD/Adam).
The ascent's forward updates BatchNorm running statistics a second time per step, as SDAT's
code does. Gradient scaling (16-mixed) cancels in g / ||g||.
"""

import torch
from torch import nn


def ascend(params: list[nn.Parameter], rho: float) -> list[tuple[nn.Parameter, torch.Tensor]]:
    """Move each parameter with a gradient by rho * grad / ||all grads||; returns the
    parameters with their weights before the move, for `restore`."""
    with torch.no_grad():
        moved = [p for p in params if p.grad is not None]
        if not moved:
            return []
        norm = torch.linalg.vector_norm(torch.stack([p.grad.float().norm() for p in moved]))
        scale = rho / (norm + 1e-12)
        saved = []
        for p in moved:
            saved.append((p, p.detach().clone()))
            p.add_(p.grad * scale.to(p.dtype))
    return saved


def restore(saved: list[tuple[nn.Parameter, torch.Tensor]]) -> None:
    """Put back the weights `ascend` saved (bit-exactly)."""
    with torch.no_grad():
        for p, weights in saved:
            p.copy_(weights)
