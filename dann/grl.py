"""The gradient reversal layer (Ganin & Lempitsky, ICML 2015): identity forward, -lambda * grad
backward. The only place in `dann` where gradients are reversed."""

import torch
from torch import nn


class GradReverse(torch.autograd.Function):
    """y = x forward; dL/dx = -lambda * dL/dy backward. lambda itself gets no gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, lambda_: float) -> torch.Tensor:
        ctx.lambda_ = float(lambda_)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        return grad_output.neg() * ctx.lambda_, None


def grad_reverse(x: torch.Tensor, lambda_: float = 1.0) -> torch.Tensor:
    return GradReverse.apply(x, lambda_)


class GradientReversal(nn.Module):
    """Module wrapper; set `.lambda_` each step (the training loop does, from the schedule)."""

    def __init__(self, lambda_: float = 1.0):
        super().__init__()
        self.lambda_ = float(lambda_)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grad_reverse(x, self.lambda_)

    def extra_repr(self) -> str:
        return f"lambda_={self.lambda_:g}"
