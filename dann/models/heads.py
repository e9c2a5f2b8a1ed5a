"""MLP heads: the label classifier and the domain classifier(s) put on a backbone's features."""

from collections.abc import Sequence

from torch import nn


def mlp_blocks(
    in_features: int, hidden: Sequence[int], dropout: float = 0.0
) -> tuple[list[nn.Module], int]:
    """Linear-ReLU(-Dropout) blocks of the given widths; returns the layers and the last width."""
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = h
    return layers, width


def mlp_head(
    in_features: int, hidden: Sequence[int], out_features: int, dropout: float = 0.0
) -> nn.Sequential:
    """`mlp_blocks`, then a final Linear to `out_features`. The paper's MNIST label head is
    mlp_head(768, [100, 100], 10); its domain head mlp_head(768, [100], 1)."""
    layers, width = mlp_blocks(in_features, hidden, dropout)
    return nn.Sequential(*layers, nn.Linear(width, out_features))
