"""Fully connected feature extractor for vector inputs (toy problems, tabular data)."""

import torch
from torch import nn

from dann.models.heads import mlp_blocks

# the hidden layers' nonlinearity; sigmoid is the paper's shallow sentiment network (sec. 5.2)
ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


class MLP(nn.Module):
    """Linear-ReLU blocks on flattened inputs. The paper's moons network is MLP(2, [15]) with
    linear label and domain heads. `in_features` defaults to in_channels * image_size**2, so the
    same config also runs on image pairs."""

    def __init__(
        self,
        in_features: int | None = None,
        hidden: list[int] = (15,),
        dropout: float = 0.0,
        in_channels: int | None = None,
        image_size: int | None = None,
        activation: str = "relu",
    ):
        super().__init__()
        if in_features is None:
            if not (in_channels and image_size):
                raise ValueError("MLP needs in_features, or in_channels and image_size")
            in_features = in_channels * image_size**2
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r}: choose one of {', '.join(ACTIVATIONS)}")
        layers, self.out_features = mlp_blocks(
            in_features, hidden, dropout, activation=ACTIVATIONS[activation]
        )
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))
