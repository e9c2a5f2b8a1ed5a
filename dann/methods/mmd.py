"""The kernel two-sample statistic DAN and JAN share: Gaussian kernel matrices over the mixed
batch, and the squared maximum mean discrepancy (MMD^2) a kernel matrix gives between its source
rows and its target rows.

Follows thuml/Transfer-Learning-Library (`tllib/modules/kernels.py` GaussianKernel,
`tllib/alignment/dan.py` MultipleKernelMaximumMeanDiscrepancy):

- Gaussian kernel k(a, b) = exp(-||a - b||^2 / (2 sigma^2)). With `alphas`, one kernel per alpha
  with sigma^2 = alpha * the mean squared distance between the rows of the batch (all
  (n_s + n_t)^2 ordered pairs, the zero diagonal included), detached: the bandwidths follow the
  features but are not trained. A multi-kernel matrix is the plain sum of its kernels.

Departures from tllib:

- The estimate is the biased quadratic-time one (the V-statistic, every pair of rows):
  MMD^2 = w^T K w with w = 1/n_s on the source rows and -1/n_t on the target rows, i.e.
  mean(K_ss) + mean(K_tt) - 2 mean(K_st). It is the squared RKHS distance between the two
  batches' mean embeddings: never negative, exactly 0 for identical batches, defined for
  n_s != n_t. tllib leaves the diagonal out of K_ss and K_tt (the unbiased U-statistic) and adds
  a constant 2 / (n - 1), and its DAN example defaults to the linear-time estimate of the DAN
  paper (Gretton et al. 2012), which DAN used to scale to large batches; at the batch sizes here
  (tens of rows per domain) the full estimate costs next to nothing and has the lower variance.
  The linear-time estimate is not implemented.
- The mean squared distance is floored at 1e-12, so a batch whose rows are all equal (dead
  features) gives kernels of 1, not 0/0.
- Distances and kernels are computed in float32 with autocast off (`float32_autocast_off`):
  under bf16/fp16 autocast the expansion ||a||^2 + ||b||^2 - 2 a.b cancels catastrophically.
"""

import contextlib
from collections.abc import Sequence

import torch

from dann.errors import ConfigError

MIN_MEAN_SQUARED_DISTANCE = 1e-12


def float32_autocast_off(device: torch.device) -> contextlib.AbstractContextManager:
    """A context in which the device's autocast is off (ops run in their inputs' dtype)."""
    return torch.autocast(device.type, enabled=False)


def check_alphas(alphas: Sequence[float]) -> tuple[float, ...]:
    alphas = tuple(float(a) for a in alphas)
    if not alphas or any(not a > 0 for a in alphas):
        raise ConfigError(
            f"method.alphas={list(alphas)}: give one or more positive bandwidth multipliers "
            "(tllib's DAN/JAN: [0.125, 0.25, 0.5, 1.0, 2.0], i.e. 2^-3 .. 2^1)"
        )
    return alphas


def squared_distances(z: torch.Tensor) -> torch.Tensor:
    """(N, N) squared Euclidean distances between the rows of z (N, d); exact zeros on the
    diagonal."""
    sq = (z * z).sum(dim=1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * (z @ z.T)).clamp_min(0.0)
    return d2 * (1.0 - torch.eye(len(z), device=z.device, dtype=z.dtype))


def multi_gaussian_kernel(z: torch.Tensor, alphas: Sequence[float]) -> torch.Tensor:
    """sum_u exp(-D / (2 alpha_u mean(D))), D the squared distances, mean(D) detached."""
    d2 = squared_distances(z)
    mean = d2.detach().mean().clamp_min(MIN_MEAN_SQUARED_DISTANCE)
    return sum(torch.exp(-d2 / (2.0 * alpha * mean)) for alpha in alphas)


def gaussian_kernel(z: torch.Tensor, sigma: float) -> torch.Tensor:
    """exp(-D / (2 sigma^2)) with a fixed bandwidth sigma."""
    return torch.exp(-squared_distances(z) / (2.0 * sigma * sigma))


def mmd2(kernel: torch.Tensor, num_source: int) -> torch.Tensor:
    """Biased MMD^2 of a kernel matrix over [source rows; target rows]: w^T K w."""
    num_target = len(kernel) - num_source
    if num_source < 1 or num_target < 1:
        raise ValueError(f"MMD needs source and target rows, got {num_source} and {num_target}")
    w = torch.full((len(kernel),), -1.0 / num_target, device=kernel.device, dtype=kernel.dtype)
    w[:num_source] = 1.0 / num_source
    return w @ kernel @ w
