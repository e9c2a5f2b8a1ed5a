"""Weight initialisation of the trained-from-scratch networks (`backbone.init`).

- `pytorch`: PyTorch's layer defaults (weights uniform with variance 1 / (3 fan_in), i.e.
  kaiming_uniform with a = sqrt(5), inherited from Lua Torch). Behind each ReLU a layer's output
  has about 1/6 of its input's variance, and the backward pass shrinks the same way: in the
  paper's MNIST net (two convs, the label head's three Linears) the initial logits have a std
  of 0.04 for inputs of std 0.3, the loss sits at log(10), and the first ~100-150 steps of the
  paper's SGD (lr 0.01) go by at chance.
- `he`: He et al. 2015 (kaiming_normal, fan_in, ReLU gain: variance 2 / fan_in), zero biases:
  each layer keeps its input's scale (initial logits' std 0.7), and the paper recipe learns
  from its first steps (source val accuracy ~0.9 after 100 steps, against ~0.2). The
  DANN paper (Caffe) does not state its initialisation; PyTorch's default is not it (Caffe has
  no implicit one), and He is the standard for ReLU networks.

Applied to every Conv and Linear of the feature extractor, the label classifier and the
method's discriminators; never to a pretrained trunk (its backbone config leaves `pytorch`).
"""

from collections.abc import Iterable

from torch import nn

from dann.errors import ConfigError

INITS = ("pytorch", "he")


def init_weights(parts: Iterable[nn.Module], scheme: str | None) -> None:
    """Re-initialise the Conv/Linear layers of `parts` in place with `scheme` (see INITS)."""
    scheme = scheme or "pytorch"
    if scheme not in INITS:
        raise ConfigError(f"backbone.init={scheme!r}: choose one of {', '.join(INITS)}")
    if scheme == "pytorch":
        return
    for part in parts:
        for m in part.modules():
            if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
