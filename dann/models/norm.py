"""Batch normalisation across two domains: the one place that decides how a training batch of
source rows followed by target rows is normalised, and which running statistics evaluation uses.

`norm.mode` (training batches):
- `joint`: the concatenated source+target batch is normalised with its mixed statistics
  (plain BatchNorm; the default, and what a single forward of cat([x_s, x_t]) gives).
- `separate`: source rows and target rows are normalised each with their own batch statistics,
  as the per-domain forward passes of fungtion/DANN, wogong/pytorch-dann and DIRT-T do; the
  affine parameters are shared. Still one forward of the concatenated batch.
- `domain_specific`: DSBN (Chang et al., CVPR 2019): `separate`, plus each domain has its own
  affine parameters and running statistics.

`norm.eval_stats` (the running statistics evaluation uses):
- `shared`: one set, updated by every training normalisation (in `separate` mode: the source
  rows', then the target rows', as two forward passes would).
- `per_domain`: each domain has its own set, updated only by its own rows; source evaluation
  uses the source set, target evaluation (and prediction) the target set. Needs a mode other
  than `joint`, whose batches mix the domains.
- `adabn`: AdaBN (Li et al., 2016): before every evaluation each domain's statistics are
  recomputed from that domain's (unlabelled) training inputs with the current weights
  (`recompute_statistics`), and each domain is evaluated with its own.

Every `nn.BatchNorm1d/2d` of the prediction path (feature extractor and label classifier, a
pretrained backbone's too) is swapped for a `DomainBatchNorm` by `convert_batchnorm`; the
LightningModule says which rows are which with `set_domains`. With mode=joint and
eval_stats=shared nothing is swapped (plain BatchNorm).

The domain discriminators are not converted: their normalisation is their own choice,
`backbone.domain_head.norm` (`dann.models.heads.discriminator_head`): `none` (no layer), or
`batch` (plain BatchNorm1d over the mixed source+target batch it is given: one set of
statistics, one set of affine parameters, its own running statistics for evaluation, which
AdaBN leaves alone). Never per domain: per-domain affine parameters (`domain_specific`) would
let the discriminator tell the domains apart by its own bias, and per-domain whitening
(`separate`) would hide the domains' mean and variance shifts from it; either way its reversed
gradient would stop saying how the features differ.
"""

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from dann.errors import ConfigError

MODES = ("joint", "separate", "domain_specific")
EVAL_STATS = ("shared", "per_domain", "adabn")
SOURCE, TARGET = 0, 1


def check_norm(mode: str, eval_stats: str) -> None:
    if mode not in MODES:
        raise ConfigError(f"norm.mode={mode!r}: choose one of {', '.join(MODES)}")
    if eval_stats not in EVAL_STATS:
        raise ConfigError(f"norm.eval_stats={eval_stats!r}: choose one of {', '.join(EVAL_STATS)}")
    if mode == "joint" and eval_stats == "per_domain":
        raise ConfigError(
            "norm.eval_stats=per_domain needs per-domain batches: norm.mode=separate or "
            "domain_specific (joint batches mix the domains), or eval_stats=adabn"
        )
    if mode == "domain_specific" and eval_stats == "shared":
        raise ConfigError(
            "norm.mode=domain_specific keeps statistics per domain: use eval_stats=per_domain "
            "or adabn"
        )


class DomainBatchNorm(nn.Module):
    """BatchNorm over (N, C) or (N, C, ...) inputs whose first `split` rows are source and the
    rest target (in training), or that all come from `domain` (in evaluation)."""

    def __init__(
        self,
        num_features: int,
        mode: str = "separate",
        eval_stats: str = "per_domain",
        eps: float = 1e-5,
        momentum: float | None = 0.1,
    ):
        super().__init__()
        check_norm(mode, eval_stats)
        self.mode, self.eval_stats, self.eps, self.momentum = mode, eval_stats, eps, momentum
        params = 2 if mode == "domain_specific" else 1
        stats = 1 if eval_stats == "shared" else 2
        self.weight = nn.Parameter(torch.ones(params, num_features))
        self.bias = nn.Parameter(torch.zeros(params, num_features))
        self.register_buffer("running_mean", torch.zeros(stats, num_features))
        self.register_buffer("running_var", torch.ones(stats, num_features))
        self.split: int | None = None  # training: rows [:split] source, [split:] target
        self.domain = TARGET  # evaluation and unsplit batches: whose parameters and statistics
        self.batches_seen = 0  # batches averaged since a recomputation began (momentum=None)

    @classmethod
    def from_batchnorm(cls, bn: nn.modules.batchnorm._BatchNorm, **kwargs) -> "DomainBatchNorm":
        """A copy of `bn` (its affine parameters and running statistics in every domain's slot,
        e.g. a pretrained ResNet's)."""
        new = cls(bn.num_features, eps=bn.eps, momentum=bn.momentum, **kwargs)
        with torch.no_grad():
            if bn.affine:
                new.weight.copy_(bn.weight.expand_as(new.weight))
                new.bias.copy_(bn.bias.expand_as(new.bias))
            if bn.running_mean is not None:
                new.running_mean.copy_(bn.running_mean.expand_as(new.running_mean))
                new.running_var.copy_(bn.running_var.expand_as(new.running_var))
        return new

    def _normalise(self, x: torch.Tensor, domain: int) -> torch.Tensor:
        p = domain if len(self.weight) > 1 else 0
        s = domain if len(self.running_mean) > 1 else 0
        momentum = self.momentum
        if self.training and momentum is None:  # AdaBN's recomputation: a cumulative average
            self.batches_seen += 1
            momentum = 1.0 / self.batches_seen
        return F.batch_norm(
            x,
            self.running_mean[s],  # views: batch_norm updates the running statistics in place
            self.running_var[s],
            self.weight[p],
            self.bias[p],
            self.training,
            momentum or 0.0,
            self.eps,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.split is None:  # evaluation, or one domain's batch
            return self._normalise(x, self.domain)
        if self.mode == "joint":  # a mixed batch: the source slot follows it (with adabn,
            return self._normalise(x, SOURCE)  # evaluation recomputes both slots first)
        n = self.split
        return torch.cat([self._normalise(x[:n], SOURCE), self._normalise(x[n:], TARGET)])

    def extra_repr(self) -> str:
        return (
            f"{self.weight.shape[1]}, mode={self.mode}, eval_stats={self.eval_stats}, "
            f"eps={self.eps}, momentum={self.momentum}"
        )


def convert_batchnorm(module: nn.Module, mode: str, eval_stats: str) -> nn.Module:
    """Swap every BatchNorm1d/2d in `module` for a DomainBatchNorm (in place; returns `module`).
    mode=joint with eval_stats=shared keeps plain BatchNorm: that is exactly what it does."""
    check_norm(mode, eval_stats)
    if mode == "joint" and eval_stats == "shared":
        return module
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm1d | nn.BatchNorm2d):
            setattr(
                module,
                name,
                DomainBatchNorm.from_batchnorm(child, mode=mode, eval_stats=eval_stats),
            )
        else:
            convert_batchnorm(child, mode, eval_stats)
    return module


def domain_norms(module: nn.Module) -> list[DomainBatchNorm]:
    return [m for m in module.modules() if isinstance(m, DomainBatchNorm)]


def set_domains(norms: list[DomainBatchNorm], split: int | None = None, domain: int = TARGET):
    """Training: rows [:split] are source, the rest target. Evaluation: every row is `domain`."""
    for m in norms:
        m.split, m.domain = split, domain


@contextlib.contextmanager
def eval_mode(*modules: nn.Module):
    """The modules in eval mode inside the block; every submodule's own mode restored after."""
    modes = [(m, m.training) for module in modules for m in module.modules()]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


@torch.no_grad()
def recompute_statistics(
    model: nn.Module, norms: list[DomainBatchNorm], batches, domain: int, run=None
) -> None:
    """AdaBN: replace `domain`'s running statistics of exactly the layers `norms` with their
    average over `batches` (inputs of that domain) run through `run` (default: `model`), every
    other layer of `model` in eval mode (no dropout); no other layer's statistics change. The
    first batch replaces the old statistics (a cumulative average: momentum 1, 1/2, 1/3, ...),
    so without batches nothing changes; a layer of `norms` that `run` never reaches is an
    error, not a layer left reset. The model's train/eval modes are restored after."""
    run = run or model
    momenta = {m: m.momentum for m in norms}
    with eval_mode(model):
        for m in norms:
            m.momentum, m.batches_seen = None, 0
            m.train()
        set_domains(norms, None, domain)
        ran = 0
        try:
            for x in batches:
                run(x)
                ran += 1
        finally:
            for m, momentum in momenta.items():
                m.momentum = momentum
    missed = [m for m in norms if m.batches_seen == 0]
    if ran and missed:
        raise ValueError(
            f"AdaBN: {len(missed)} of {len(norms)} DomainBatchNorm layers were not reached by "
            "`run`; their statistics would not be re-estimated"
        )
