"""dann: config-driven domain adaptation around the gradient reversal layer.

The pieces also work as a library in your own model (plain PyTorch or your own
LightningModule; README, "Use the GRL in your own model"):

    from dann import GradientReversal, grad_reverse, grl_sigmoid, lr_annealing, DANN

- the GRL: `GradReverse` (the autograd function), `grad_reverse(x, lambda_)`, and
  `GradientReversal` (an nn.Module whose `.lambda_` you set each step) - torch only;
- schedules, pure functions of training progress p in [0, 1]: `grl_sigmoid` (the paper's
  lambda_p), `warm_start`, `linear`, `constant`, and `lr_annealing` (the paper's mu_p / mu_0);
- methods, nn.Modules that own their discriminators and return their losses:
  `method(features, logits, num_source, lambda_) -> AdaptationOutput` (`DANN`, `CDAN`,
  `DAAN`, `SourceOnly`, `TargetOracle`; the interface `AdaptationMethod`), and `mlp_head`.

Names are imported on first use (PEP 562), so `import dann` loads neither torch nor Lightning,
Hydra or torchvision; `from dann import GradientReversal` loads torch alone.
"""

from dann.lazy import lazy_exports

__version__ = "0.1.0"

_HOMES = {
    "dann.grl": ("GradReverse", "GradientReversal", "grad_reverse"),
    "dann.schedules": ("constant", "grl_sigmoid", "linear", "lr_annealing", "warm_start"),
    "dann.methods": (
        "CDAN",
        "DAAN",
        "DANN",
        "AdaptationMethod",
        "AdaptationOutput",
        "SourceOnly",
        "TargetOracle",
    ),
    "dann.models.heads": ("mlp_head",),
}
__all__, __getattr__, __dir__ = lazy_exports("dann", _HOMES, globals())
