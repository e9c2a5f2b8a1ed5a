"""ResNet feature extractors for the Office-style experiments (DANN / CDAN protocol): a
torchvision ResNet with its ImageNet classifier (`fc`) removed, then a new bottleneck
Linear(-> 256), BatchNorm1d, ReLU, Dropout(0.5). Loading the trunk's weights never downloads:
`pretrained=True` only reads the torch hub cache."""

from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision import models

from dann.errors import DataError

ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


def hub_checkpoint(url: str) -> Path:
    """Where torch.hub keeps the weights downloaded from `url`:
    torch.hub.get_dir()/checkpoints/<the basename of the url's path>."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def hub_weights_file(arch: str) -> Path:
    """Where torchvision's ImageNet weights (IMAGENET1K_V1) of `arch` sit in the torch hub
    cache."""
    return hub_checkpoint(models.get_model_weights(arch).IMAGENET1K_V1.url)


def _load_state_dict_file(trunk: nn.Module, arch: str, path: Path) -> None:
    """Strictly load a torchvision `arch` state dict (its `fc.*` keys, the ImageNet classifier,
    are dropped) into `trunk`, naming the missing and unexpected keys if it does not fit."""
    if not path.is_file():
        raise DataError(
            f"backbone.features.pretrained={path}: no such file; expected a state dict of "
            f"torchvision's {arch}, saved with torch.save(model.state_dict(), path)"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    try:
        missing, unexpected = trunk.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise ValueError(f"{path} does not fit torchvision's {arch}: {e}") from e
    if missing or unexpected:
        raise ValueError(
            f"{path} does not fit torchvision's {arch}: missing keys {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''}, unexpected keys {unexpected[:10]}"
            f"{' ...' if len(unexpected) > 10 else ''} ({len(missing)} missing, "
            f"{len(unexpected)} unexpected); save the torchvision model's state_dict() itself"
        )


def resnet_trunk(arch: str, pretrained: bool | str | None) -> tuple[nn.Module, int]:
    """torchvision `arch` with `fc` replaced by Identity, and its output width. pretrained:
    True = ImageNet weights from the torch hub cache (an error naming the file if it is not
    there, before any download); a path = that state dict; False/None = random init."""
    if arch not in ARCHS:
        raise ValueError(f"arch={arch!r}: choose one of {ARCHS}")
    if pretrained not in (True, False, None) and not isinstance(pretrained, str):
        raise ValueError(f"pretrained={pretrained!r}: use true, false or a state dict path")
    if pretrained is True:
        weights = models.get_model_weights(arch).IMAGENET1K_V1
        cached = hub_weights_file(arch)
        if not cached.is_file():
            raise DataError(
                f"backbone.features.pretrained=true needs {arch}'s ImageNet weights in the torch "
                f"hub cache and they are not there (nothing is downloaded): put {weights.url} "
                f"at {cached} (the cache follows TORCH_HOME), or pass a state dict with "
                f"backbone.features.pretrained=/path/to/{arch}.pth, or train from random init "
                "with backbone.features.pretrained=false"
            )
        trunk = models.get_model(arch, weights=weights)  # reads the cached file
    else:
        trunk = models.get_model(arch, weights=None)
    width = trunk.fc.in_features
    trunk.fc = nn.Identity()
    if isinstance(pretrained, str):
        _load_state_dict_file(trunk, arch, Path(pretrained).expanduser())
    return trunk, width


class BottleneckFeatures(nn.Module):
    """A trunk (pretrained or not) and a new bottleneck (Linear, BatchNorm1d, ReLU, Dropout) ->
    `bottleneck_dim` features. `pretrained_parameters()` names the loaded trunk's parameters,
    which the optimiser fine-tunes at lr * backbone.lr_mult; the new bottleneck trains at the
    full learning rate. Subclasses build the trunk and call `attach`."""

    def attach(
        self, trunk: nn.Module, width: int, pretrained, bottleneck_dim: int, dropout: float
    ) -> None:
        self.pretrained = pretrained not in (False, None)
        self.trunk = trunk
        layers: list[nn.Module] = [
            nn.Linear(width, bottleneck_dim),
            nn.BatchNorm1d(bottleneck_dim),
            nn.ReLU(inplace=True),
        ]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        self.bottleneck = nn.Sequential(*layers)
        self.out_features = bottleneck_dim

    def pretrained_parameters(self) -> list[nn.Parameter]:
        """The trunk's parameters when it was loaded with weights; none for a random init (then
        everything trains at the full learning rate)."""
        return list(self.trunk.parameters()) if self.pretrained else []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bottleneck(self.trunk(x))


class ResNetFeatures(BottleneckFeatures):
    """torchvision ResNet trunk + bottleneck -> `bottleneck_dim` features."""

    def __init__(
        self,
        arch: str = "resnet50",
        pretrained: bool | str | None = True,
        bottleneck_dim: int = 256,
        dropout: float = 0.5,
        in_channels: int = 3,
    ):
        super().__init__()
        if in_channels != 3:
            raise ValueError(
                f"ResNet trunks take RGB images, got in_channels={in_channels}: "
                "set dataset.channels=3"
            )
        trunk, width = resnet_trunk(arch, pretrained)
        self.attach(trunk, width, pretrained, bottleneck_dim, dropout)
