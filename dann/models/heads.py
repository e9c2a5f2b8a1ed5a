"""MLP heads: the label classifier and the domain classifier(s) put on a backbone's features."""

from collections.abc import Callable, Sequence

from torch import nn

from dann.errors import ConfigError
from dann.models.norm import convert_batchnorm


def mlp_blocks(
    in_features: int,
    hidden: Sequence[int],
    dropout: float | Sequence[float] = 0.0,
    batch_norm: bool = False,
    activation: Callable[[], nn.Module] | None = None,
) -> tuple[list[nn.Module], int]:
    """Linear(-BatchNorm1d)-ReLU(-Dropout) blocks of the given widths; returns the layers and
    the last width. `dropout` is one rate for every block or a list, one rate per block
    (fungtion/DANN's label head: [0.5, 0.0]); `activation` makes each block's nonlinearity in
    place of ReLU (e.g. nn.Tanh)."""
    rates = [dropout] * len(hidden) if isinstance(dropout, int | float) else list(dropout)
    if len(rates) != len(hidden):
        raise ConfigError(f"dropout={list(rates)} needs one rate per hidden layer {list(hidden)}")
    layers: list[nn.Module] = []
    width = in_features
    for h, rate in zip(hidden, rates, strict=True):
        layers.append(nn.Linear(width, h))
        if batch_norm:
            layers.append(nn.BatchNorm1d(h))
        layers.append(activation() if activation else nn.ReLU(inplace=True))
        if rate > 0:
            layers.append(nn.Dropout(rate))
        width = h
    return layers, width


def mlp_head(
    in_features: int,
    hidden: Sequence[int],
    out_features: int,
    dropout: float | Sequence[float] = 0.0,
    batch_norm: bool = False,
) -> nn.Sequential:
    """`mlp_blocks`, then a final Linear to `out_features`. The paper's MNIST label head is
    mlp_head(768, [100, 100], 10); its domain head mlp_head(768, [100], 1)."""
    layers, width = mlp_blocks(in_features, hidden, dropout, batch_norm)
    return nn.Sequential(*layers, nn.Linear(width, out_features))


def label_classifier(features: nn.Module, head: dict, out_features: int) -> nn.Sequential:
    """The label classifier on `features`: the layers the backbone keeps for the label path alone
    (`label_trunk`, e.g. DIRT-T's third block; none for most backbones), then `mlp_head` with
    the `head` config's hidden widths, dropout and BatchNorm."""
    trunk, width = [], features.out_features
    if hasattr(features, "label_trunk"):  # the image backbones (SequentialFeatures)
        trunk, width = features.label_trunk()
    dropout, batch_norm = head.get("dropout", 0.0), head.get("batch_norm", False)
    mlp = mlp_head(width, head["hidden"], out_features, dropout, batch_norm)
    return nn.Sequential(*trunk, *mlp)


DISCRIMINATOR_NORMS = ("none", "batch", "separate")


def discriminator_head(
    in_features: int,
    hidden: Sequence[int],
    out_features: int,
    dropout: float | Sequence[float] = 0.0,
    norm: str | None = None,
    batch_norm: bool | None = None,
) -> nn.Sequential:
    """A domain discriminator: `mlp_head` with its own normalisation choice
    (`backbone.domain_head.norm`), which the `norm=` group never touches (see dann/models/norm.py):

    - `none` (default): no normalisation layer.
    - `batch`: a plain BatchNorm1d after each hidden Linear. In training it normalises the whole
      batch it is given, the source and target rows together, with one set of statistics and one
      set of affine parameters, so a shift between the domains stays visible to it; evaluation
      uses its running statistics.
    - `separate`: the same layers, but in training the source rows and the target rows are each
      standardised with their own batch statistics before the shared affine parameters (one set
      of running statistics for evaluation). Each hidden unit's per-domain mean and variance are
      hidden from the discriminator: it has to tell the domains apart by what standardisation
      leaves (how the units co-vary, the shape of their distributions), so the reversed gradient
      aligns that. A trade-off, chosen by measurement (README, Results), not a default.

    Never per-domain parameters: a discriminator with its own bias per domain could tell the
    domains apart without reading the features, and the reversed gradient would mean nothing.
    `batch_norm` is the former boolean spelling
    (true = `batch`, false = `none`), still accepted for older checkpoints' hyper-parameters."""
    if batch_norm is not None:
        alias = "batch" if batch_norm else "none"
        if norm is not None and norm != alias:
            raise ConfigError(
                f"batch_norm={batch_norm} (the former spelling) and norm={norm!r} disagree: set "
                f"only backbone.domain_head.norm ({', '.join(DISCRIMINATOR_NORMS)})"
            )
        norm = alias
    norm = "none" if norm is None else norm
    if norm not in DISCRIMINATOR_NORMS:
        raise ConfigError(
            f"backbone.domain_head.norm={norm!r} (the discriminator's normalisation): choose one "
            f"of {', '.join(DISCRIMINATOR_NORMS)}; the discriminator never normalises per domain"
        )
    head = mlp_head(in_features, hidden, out_features, dropout, batch_norm=norm != "none")
    if norm == "separate":  # rows marked source / target by the module (set_domains)
        convert_batchnorm(head, "separate", "shared")
    return head
