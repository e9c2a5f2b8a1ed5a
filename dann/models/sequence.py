"""Sequence backbones' shared convention for variable lengths, and the 1-D convolutional one.

Inputs are (N, T, F). With `masked=True` the last channel is a validity mask (1 at a valid
step, 0 at padding; what dataset=sequences produces) and F - 1 channels are features:
`split_mask` takes it off. GRUFeatures (dann/models/backbones.py) packs by the lengths it
gives; Conv1DFeatures zeroes padded steps after every layer and mean-pools valid steps only.
"""

import torch
from torch import nn


def split_mask(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, T, F - 1), mask (N, T) in {0, 1}) of masked inputs (N, T, F)."""
    if x.dim() != 3 or x.shape[-1] < 2:
        raise ValueError(
            f"masked sequence inputs are (N, T, features + 1 mask channel), got {tuple(x.shape)}"
        )
    return x[..., :-1], x[..., -1]


class Conv1DFeatures(nn.Module):
    """Conv1d-ReLU blocks over time ('same' padding), then the mean over (valid) steps:
    `channels[-1]` features per sequence, whatever its length. Any other input shape (N, ...)
    is read, row-major, as steps of `input_size` (images row by row with input_size=W)."""

    def __init__(
        self,
        input_size: int,
        channels: list[int] = (32, 64),
        kernel_size: int = 5,
        dropout: float = 0.0,
        masked: bool = False,
    ):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size={kernel_size}: use an odd size ('same' padding)")
        self.input_size, self.masked = input_size, masked
        self.convs = nn.ModuleList()
        width = input_size
        for c in channels:
            self.convs.append(nn.Conv1d(width, c, kernel_size, padding=kernel_size // 2))
            width = c
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.out_features = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.masked:
            x, mask = split_mask(x)
        else:
            if x.dim() != 3:  # e.g. images (N, C, H, W): rows as steps, as GRUFeatures reads them
                if x[0].numel() % self.input_size:
                    raise ValueError(
                        f"Conv1DFeatures cannot read inputs of shape {tuple(x.shape)} as steps of "
                        f"input_size={self.input_size}; set backbone.features.input_size"
                    )
                x = x.reshape(len(x), -1, self.input_size)
            mask = x.new_ones(x.shape[:2])
        if x.shape[-1] != self.input_size:
            raise ValueError(
                f"Conv1DFeatures(input_size={self.input_size}) got {x.shape[-1]} features per "
                "step; set backbone.features.input_size"
            )
        m = mask.unsqueeze(1)  # (N, 1, T)
        h = x.transpose(1, 2) * m  # (N, F, T); whatever padded steps hold is never read
        for conv in self.convs:
            h = torch.relu(conv(h)) * m  # padded steps stay zero for the next layer
        pooled = h.sum(2) / m.sum(2).clamp(min=1.0)
        return self.dropout(pooled)
