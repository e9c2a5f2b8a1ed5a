"""Schedules as pure functions of training progress p in [0, 1].

p = global_step / trainer.estimated_stepping_batches (see `DALightningModule.progress`), so every
schedule here is correct under resume, gradient accumulation and multiple devices.
Configs select one with `_partial_: true`, which yields a function of p alone.
"""

import math


def _check_progress(p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"training progress p must be in [0, 1], got {p}")
    return p


def grl_sigmoid(p: float, gamma: float = 10.0, lambda_max: float = 1.0) -> float:
    """The paper's GRL warm-up: lambda_p = lambda_max * (2 / (1 + exp(-gamma p)) - 1)."""
    _check_progress(p)
    return lambda_max * (2.0 / (1.0 + math.exp(-gamma * p)) - 1.0)


def warm_start(p: float, alpha: float = 10.0, lo: float = 0.0, hi: float = 1.0) -> float:
    """TLlib's WarmStartGradientReverseLayer coefficient as a function of progress:
    lambda_p = 2 (hi - lo) / (1 + exp(-alpha p)) - (hi - lo) + lo, rising from lo at p = 0
    towards hi. TLlib counts alpha * iterations / max_iters; here p replaces the ratio (TLlib's
    defaults alpha=1, max_iters=1000 over a 1000-step run are alpha=1 here). With lo = 0 it is
    `grl_sigmoid` with gamma = alpha, lambda_max = hi."""
    _check_progress(p)
    return 2.0 * (hi - lo) / (1.0 + math.exp(-alpha * p)) - (hi - lo) + lo


def constant(p: float, value: float = 1.0) -> float:
    """lambda_p = value for every p (value=0 turns the reversal off)."""
    _check_progress(p)
    return value


def linear(p: float, lambda_max: float = 1.0, ramp_until: float = 1.0) -> float:
    """lambda_p rises linearly from 0 to lambda_max at p = ramp_until, then stays there."""
    _check_progress(p)
    if ramp_until <= 0:
        return lambda_max
    return lambda_max * min(p / ramp_until, 1.0)


def lr_annealing(p: float, alpha: float = 10.0, beta: float = 0.75) -> float:
    """The paper's learning-rate factor: mu_p / mu_0 = 1 / (1 + alpha p)^beta."""
    _check_progress(p)
    return 1.0 / (1.0 + alpha * p) ** beta
