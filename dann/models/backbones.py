"""Feature extractors. Each exposes `out_features`, so heads can be sized without knowing the
backbone. Image backbones (one nn.Sequential each: SequentialFeatures) take `in_channels` and
`image_size`; the sequence backbone (GRUFeatures) takes `input_size`. The ResNets (pretrained
trunks) live in dann/models/resnet.py."""

import math

import torch
from torch import nn

from dann.models.sequence import split_mask

PADDINGS = ("same", "valid")


def _infer_out_features(features: nn.Module, in_channels: int, image_size: int, name: str) -> int:
    """Width of `features`' output on one zero image. Runs in eval mode, so BatchNorm running
    statistics stay untouched; an image too small for the network is a clear error."""
    was_training = features.training
    features.eval()
    try:
        with torch.no_grad():
            return int(features(torch.zeros(1, in_channels, image_size, image_size)).shape[1])
    except RuntimeError as e:
        raise ValueError(
            f"{image_size}x{image_size} images are too small for {name} ({e}); "
            "use a larger dataset.image_size"
        ) from e
    finally:
        features.train(was_training)


class SequentialFeatures(nn.Module):
    """An image feature extractor that is one nn.Sequential, `net`, ending in a flat vector; its
    `out_features` measured on one zero image (`_infer_out_features`: a clear error where the
    images are too small for it)."""

    def __init__(self, layers: list[nn.Module], in_channels: int, image_size: int, name: str):
        super().__init__()
        self.net = nn.Sequential(*layers)
        self.out_features = _infer_out_features(self.net, in_channels, image_size, name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def label_trunk(self) -> tuple[list[nn.Module], int]:
        """Layers only the label classifier runs on these features (none here), and their width."""
        return [], self.out_features


INPUT_NORMS = ("none", "instance")


def input_norm_layers(input_norm: str, in_channels: int) -> list[nn.Module]:
    """What runs on the image before the first conv. "instance" standardises each image's channels
    to zero mean and unit variance over its own pixels (InstanceNorm2d without parameters), as
    DIRT-T's digit networks do (Shu et al., ICLR 2018; RuiShu/dirt-t, `--inorm 1`): an image's
    overall brightness and contrast, much of what separates MNIST-M from MNIST, no longer reach
    the features."""
    if input_norm not in INPUT_NORMS:
        raise ValueError(f"input_norm={input_norm!r}: choose one of {INPUT_NORMS}")
    return [nn.InstanceNorm2d(in_channels)] if input_norm == "instance" else []


class LeNetDANN(SequentialFeatures):
    """The DANN paper's MNIST feature extractor (JMLR 2016, Fig. 4 / ICML 2015 appendix):
    conv5x5-32, ReLU, maxpool 2x2; conv5x5-48, ReLU, maxpool 2x2; flatten (768 for 28x28).
    `input_norm="instance"` standardises each image first (input_norm_layers)."""

    def __init__(self, in_channels: int = 3, image_size: int = 28, input_norm: str = "none"):
        layers = [
            *input_norm_layers(input_norm, in_channels),
            nn.Conv2d(in_channels, 32, kernel_size=5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 48, kernel_size=5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Flatten(),
        ]
        super().__init__(layers, in_channels, image_size, "lenet_dann")


class LeNetDANNBN(SequentialFeatures):
    """The batch-norm MNIST net most public PyTorch DANN code trains with Adam (e.g.
    fungtion/DANN): conv5x5-64, BN, maxpool 2x2, ReLU; conv5x5-50, BN, Dropout2d(0.5), maxpool
    2x2, ReLU; flatten (50x4x4 = 800 for 28x28). `input_norm="instance"` standardises each image
    first (input_norm_layers)."""

    def __init__(self, in_channels: int = 3, image_size: int = 28, input_norm: str = "none"):
        layers = [
            *input_norm_layers(input_norm, in_channels),
            nn.Conv2d(in_channels, 64, kernel_size=5),
            nn.BatchNorm2d(64),
            nn.MaxPool2d(2),
            nn.ReLU(inplace=True),
            nn.Conv2d(64, 50, kernel_size=5),
            nn.BatchNorm2d(50),
            nn.Dropout2d(0.5),
            nn.MaxPool2d(2),
            nn.ReLU(inplace=True),
            nn.Flatten(),
        ]
        super().__init__(layers, in_channels, image_size, "lenet_dann_bn")


class GaussianNoise(nn.Module):
    """Adds N(0, std^2) noise to every activation in training; the identity in eval mode."""

    def __init__(self, std: float = 1.0):
        super().__init__()
        self.std = std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.std * torch.randn_like(x) if self.training and self.std > 0 else x


class DIRTTNet(SequentialFeatures):
    """The digit network of VADA / DIRT-T (Shu et al., ICLR 2018; RuiShu/dirt-t,
    codebase/models/nns/small.py, `width=64`; large.py is `width=192`): each image standardised
    (input_norm); three blocks of three conv3x3-`width` + BatchNorm + LeakyReLU(0.1), the first two
    followed by maxpool 2x2, dropout 0.5 and Gaussian noise (std 1), the last by global average
    pooling and the label head (one Linear in the reference).

    `shared_blocks` is where the network splits into the shared features (what the domain
    discriminators read) and the label path alone. 2, the reference's default (`--trim 5`): the
    features are the second block's output map, flattened (width x 7 x 7 at 28x28); the third
    block and the pooling belong to the label classifier (`label_trunk`). 3: every block is shared
    and the features are the pooled `width` vector. Both compute the same function of the image
    for the same weights; they differ in what the discriminators (and feature-level losses) see.
    A method that builds its own copy of the label head (MDD's adversary) builds it on the
    features, without the third block."""

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 32,
        width: int = 64,
        input_norm: str = "instance",
        dropout: float = 0.5,
        noise: float = 1.0,
        shared_blocks: int = 2,
    ):
        if shared_blocks not in (2, 3):
            raise ValueError(f"shared_blocks={shared_blocks}: choose 2 (the reference's) or 3")
        layers = input_norm_layers(input_norm, in_channels)
        for block in range(shared_blocks):
            layers += conv_bn_leaky_block(in_channels if block == 0 else width, width)
            if block < 2:
                layers += [nn.MaxPool2d(2), nn.Dropout(dropout), GaussianNoise(noise)]
        if shared_blocks == 3:
            layers += [nn.AdaptiveAvgPool2d(1)]
        super().__init__([*layers, nn.Flatten()], in_channels, image_size, "dirt_t")
        self.width, self.shared_blocks = width, shared_blocks

    def label_trunk(self) -> tuple[list[nn.Module], int]:
        """New layers that only the label classifier runs, between these features and its Linear
        layers, and their output width: with shared_blocks=2, the third block and the pooling."""
        if self.shared_blocks == 3:
            return super().label_trunk()
        side = math.isqrt(self.out_features // self.width)
        layers = [nn.Unflatten(1, (self.width, side, side))]
        layers += conv_bn_leaky_block(self.width, self.width)
        return [*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten()], self.width


def conv_bn_leaky_block(in_channels: int, width: int) -> list[nn.Module]:
    """DIRT-T's block: three conv3x3-`width` (padding 1) + BatchNorm + LeakyReLU(0.1)."""
    layers: list[nn.Module] = []
    for i in range(3):
        layers += [
            nn.Conv2d(in_channels if i == 0 else width, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.LeakyReLU(0.1),
        ]
    return layers


def conv_relu_pool(
    in_channels: int, layers: list[tuple[int, int, tuple[int, int] | None]], padding: str
) -> list[nn.Module]:
    """Conv-ReLU(-MaxPool) blocks from (out_channels, kernel, (pool kernel, pool stride) or None).
    padding="same" pads each conv by kernel // 2 (size kept; pooling rounds down, PyTorch's
    default); "valid" pads nothing and pools rounding up, as Caffe (the paper's framework) does."""
    if padding not in PADDINGS:
        raise ValueError(f"padding={padding!r}: choose one of {PADDINGS}")
    blocks: list[nn.Module] = []
    width = in_channels
    for out_channels, kernel, pool in layers:
        pad = kernel // 2 if padding == "same" else 0
        blocks += [nn.Conv2d(width, out_channels, kernel, padding=pad), nn.ReLU(inplace=True)]
        if pool is not None:
            blocks.append(nn.MaxPool2d(*pool, ceil_mode=padding == "valid"))
        width = out_channels
    return blocks


class SVHNDANN(SequentialFeatures):
    """The paper's SVHN / Syn Numbers feature extractor (JMLR 2016 Fig. 4 / ICML 2015 appendix):
    conv5x5-64, ReLU, maxpool 3x3 stride 2; conv5x5-64, ReLU, maxpool 3x3 stride 2; conv5x5-128,
    ReLU; flatten. The paper's heads: label FC3072-FC2048, domain FC1024-FC1024.

    The paper gives no padding. padding="same" (default) pads every conv by 2, so any input from
    MNIST's 28x28 up runs: 128x7x7 = 6272 features at 32x32, 128x6x6 = 4608 at 28x28.
    padding="valid" is the Caffe arithmetic (no padding, pooling rounded up): 128x1x1 = 128
    features at 32x32; it needs images of at least 32x32."""

    def __init__(self, in_channels: int = 3, image_size: int = 32, padding: str = "same"):
        layers = [(64, 5, (3, 2)), (64, 5, (3, 2)), (128, 5, None)]
        features = [*conv_relu_pool(in_channels, layers, padding), nn.Flatten()]
        super().__init__(features, in_channels, image_size, "svhn_dann")


class GTSRBDANN(SequentialFeatures):
    """The paper's Syn Signs / GTSRB feature extractor (JMLR 2016 Fig. 4, 40x40 inputs):
    conv5x5-96, ReLU, maxpool 2x2; conv3x3-144, ReLU, maxpool 2x2; conv5x5-256, ReLU, maxpool
    2x2; flatten. The paper's heads: label FC512, domain FC1024-FC1024.

    The paper gives no padding. padding="same" (default) pads each conv by kernel // 2:
    256x5x5 = 6400 features at 40x40, 256x3x3 = 2304 at 28x28. padding="valid" (Caffe
    arithmetic) gives 256x2x2 = 1024 features at 40x40."""

    def __init__(self, in_channels: int = 3, image_size: int = 40, padding: str = "same"):
        layers = [(96, 5, (2, 2)), (144, 3, (2, 2)), (256, 5, (2, 2))]
        features = [*conv_relu_pool(in_channels, layers, padding), nn.Flatten()]
        super().__init__(features, in_channels, image_size, "gtsrb_dann")


class GRUFeatures(nn.Module):
    """A small recurrent feature extractor for sequences (N, T, input_size): a batch-first GRU;
    the features are the last layer's final hidden state (forward and backward concatenated when
    bidirectional), so they depend on the whole sequence.

    Any other input shape (N, ...) is read, row-major, as a sequence of `input_size`-wide steps:
    an image (N, C, H, W) is read pixel by pixel with input_size=1, row by row with input_size=W.
    `masked=True`: (N, T, input_size + 1) inputs whose last channel marks the valid steps
    (dataset=sequences); each sequence is read up to its own length (packed).
    `vocab_size=V`: (N, T) token ids in [0, V), 0 = padding after each sequence's end
    (dataset=text representation=tokens); each id is embedded as an `input_size`-wide learned
    vector and each sequence read up to its last non-padding id (packed).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int = 64,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        masked: bool = False,
        vocab_size: int | None = None,
    ):
        super().__init__()
        self.input_size, self.masked = input_size, masked
        self.embed = None if vocab_size is None else nn.Embedding(vocab_size, input_size, 0)
        self.directions = 2 if bidirectional else 1
        self.gru = nn.GRU(
            input_size,
            hidden_size,
            num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
            bidirectional=bidirectional,
        )
        self.out_features = hidden_size * self.directions

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.dtype == torch.int64
        if tokens != (self.embed is not None):
            raise ValueError(
                "GRUFeatures got token ids (int64): use backbone=gru_tokens, which embeds them"
                if tokens
                else f"GRUFeatures(vocab_size=...) reads token ids (int64), got {x.dtype} inputs: "
                "use backbone=gru_tokens only with dataset.representation=tokens"
            )
        if tokens:
            if x.dim() != 2:
                raise ValueError(f"token ids are (N, T), got {tuple(x.shape)}")
            lengths = (x != 0).sum(1).clamp(min=1).cpu()
            x = nn.utils.rnn.pack_padded_sequence(
                self.embed(x), lengths, batch_first=True, enforce_sorted=False
            )
        elif self.masked:  # variable lengths: packed, so padding never enters the recurrence
            x, mask = split_mask(x)
            lengths = mask.sum(1).long().clamp(min=1).cpu()
            x = nn.utils.rnn.pack_padded_sequence(
                x, lengths, batch_first=True, enforce_sorted=False
            )
        elif x.dim() != 3:
            if x[0].numel() % self.input_size:
                raise ValueError(
                    f"GRUFeatures cannot read inputs of shape {tuple(x.shape)} as steps of "
                    f"input_size={self.input_size}; set backbone.features.input_size"
                )
            x = x.reshape(len(x), -1, self.input_size)
        _, hidden = self.gru(x)  # (num_layers * directions, N, hidden_size)
        return torch.cat(tuple(hidden[-self.directions :]), dim=1)
