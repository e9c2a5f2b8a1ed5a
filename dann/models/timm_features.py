"""Feature extractors from any timm model (`backbone=timm`): the timm trunk with its classifier
removed (`num_classes=0`: pooled features), then a new bottleneck Linear(-> 256), BatchNorm1d,
ReLU, Dropout(0.5), as `ResNetFeatures` builds on a torchvision ResNet.

This module owns how the trunk's weights are found. `pretrained=true` reads the local caches
only and never downloads (the Hugging Face hub is put in offline mode while the model is built;
timm's few url-only weights must already be in the torch hub cache); `pretrained=download` may
download; a path loads that file; `false` is a random init. It also splits timm's fused
BatchNorm + activation layers (`BatchNormAct2d`) into a plain BatchNorm2d followed by the
activation, so that dann's per-domain normalisation (`norm=separate|domain_specific|adabn`,
dann/models/norm.py), which swaps every BatchNorm2d, keeps the activation.

timm is optional (`pip install -e ".[timm]"`) and imported only when a `TimmFeatures` is built.
"""

import contextlib
import difflib
import logging
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from dann.errors import CheckpointError, ConfigError, DataError
from dann.models.resnet import BottleneckFeatures, hub_checkpoint

log = logging.getLogger(__name__)

DOWNLOAD = "download"
ORIGINAL_LOADER = "timm.models._builder"  # timm's logger that reports the keys a load missed


def import_timm():
    try:
        import timm
    except ImportError as e:
        raise ConfigError(
            f'backbone=timm needs the timm package ({e}): pip install -e ".[timm]"'
        ) from None
    return timm


def check_model_name(timm, name: str) -> None:
    """A ConfigError naming close timm model names when `name` is not one."""
    arch, _, tag = name.partition(".")
    if timm.is_model(name):
        if tag:
            try:
                timm.models.get_pretrained_cfg(name)
            except RuntimeError:  # is_model checks the architecture only
                tags = ", ".join(timm.list_pretrained(f"{arch}.*")) or "none"
                raise ConfigError(
                    f"backbone.features.name={name!r}: timm has no weights tagged {tag!r} for "
                    f"{arch}; its tagged weights: {tags}"
                ) from None
        return
    names = timm.list_models()
    close = difflib.get_close_matches(arch, names, n=6, cutoff=0.6)
    close += [n for n in timm.list_models(f"*{arch}*") if n not in close]
    hint = f"close names: {', '.join(close[:10])}" if close else "no close name"
    raise ConfigError(
        f"backbone.features.name={name!r} is not a timm model ({hint}); list the names with a "
        f"given part: python -c \"import timm; print(timm.list_models('*{arch[:4]}*'))\""
    )


def hf_cache() -> str:
    from huggingface_hub import constants

    return f"the Hugging Face hub cache {constants.HF_HUB_CACHE} (HF_HUB_CACHE, or HF_HOME/hub)"


def fixes(name: str) -> str:
    return (
        f"download them once with backbone.features.pretrained={DOWNLOAD}, pass a weights file of "
        f"timm's {name} with backbone.features.pretrained=/path/to/weights.safetensors (or .pth), "
        "or train from random init with backbone.features.pretrained=false"
    )


@contextlib.contextmanager
def hub_offline():
    """The Hugging Face hub refuses every request inside the block, so hf_hub_download answers
    from the local cache or raises. huggingface_hub reads HF_HUB_OFFLINE from the environment
    once, when it is imported: setting the variable now would change nothing (tried: it went on
    to the network), so the module's constant is set instead, and restored after."""
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


@contextlib.contextmanager
def missing_keys_reported(path: Path, name: str):
    """Around timm's loading of a weights file: a CheckpointError if the file does not fit the
    model. timm loads with strict=False (the classifier's keys are dropped) and only logs the
    keys the file lacks, at INFO; those records are read here."""
    logger = logging.getLogger(ORIGINAL_LOADER)
    missing: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = record.getMessage()
            if message.startswith("Missing keys"):
                missing.append(message)

    handler, level = Collect(logging.INFO), logger.level
    logger.addHandler(handler)
    if not logger.isEnabledFor(logging.INFO):
        logger.setLevel(logging.INFO)
    try:
        yield
    except RuntimeError as e:  # shape mismatches
        first = str(e).strip().splitlines()
        raise CheckpointError(
            f"backbone.features.pretrained={path} does not fit timm's {name}: "
            f"{' '.join(line.strip() for line in first[:4])}"
        ) from e
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    if missing:
        raise CheckpointError(
            f"backbone.features.pretrained={path} does not fit timm's {name}: {missing[0][:500]}; "
            f"save the weights of timm's {name} itself (torch.save(model.state_dict(), path))"
        )


def split_norm_act(module: nn.Module) -> nn.Module:
    """Every timm BatchNormAct2d (a BatchNorm2d subclass that also applies its dropout and
    activation) in `module` replaced, in place, by Sequential(bn=BatchNorm2d, drop, act) holding
    the same parameters and statistics: the same function, with a plain BatchNorm2d that
    dann's per-domain normalisation (and torch's SyncBatchNorm conversion) can swap without
    losing the activation."""
    from timm.layers import BatchNormAct2d

    for child_name, child in module.named_children():
        if isinstance(child, BatchNormAct2d):
            bn = nn.BatchNorm2d(
                child.num_features,
                eps=child.eps,
                momentum=child.momentum,
                affine=child.affine,
                track_running_stats=child.track_running_stats,
            )
            own = {k: v for k, v in child.state_dict().items() if "." not in k}
            bn.load_state_dict(own)
            split = nn.Sequential(OrderedDict(bn=bn, drop=child.drop, act=child.act))
            setattr(module, child_name, split.train(child.training))
        else:
            split_norm_act(child)
    return module


def timm_trunk(
    name: str,
    pretrained: bool | str | None,
    in_channels: int = 3,
    image_size: int | None = None,
) -> tuple[nn.Module, int]:
    """timm's `name` without its classifier (pooled features), and its output width.
    pretrained: True = weights from the local caches only (a DataError before any download if
    they are not there); "download" = downloaded if not cached; a path = that weights file;
    False/None = random init."""
    timm = import_timm()
    check_model_name(timm, name)
    if pretrained not in (True, False, None) and not isinstance(pretrained, str):
        raise ConfigError(
            f"backbone.features.pretrained={pretrained!r}: use true, {DOWNLOAD}, false or the "
            "path of a weights file"
        )
    kwargs: dict = {"num_classes": 0, "in_chans": in_channels}
    if image_size is not None:
        kwargs["img_size"] = image_size
    load = contextlib.nullcontext()
    if isinstance(pretrained, str) and pretrained != DOWNLOAD:
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise DataError(
                f"backbone.features.pretrained={pretrained}: no such file; expected the weights "
                f"of timm's {name} (.safetensors, or .pth saved with "
                "torch.save(model.state_dict(), path))"
            )
        kwargs["pretrained_cfg_overlay"] = {"file": str(path)}
        load = missing_keys_reported(path, name)
    elif pretrained is True or pretrained == DOWNLOAD:
        cfg = timm.models.get_pretrained_cfg(name)
        source = cfg and (cfg.hf_hub_id or cfg.url)
        if not source:
            raise ConfigError(
                f"backbone.features.pretrained={pretrained}: timm has no pretrained weights for "
                f"{name}; pass a weights file (backbone.features.pretrained=/path/to/weights"
                ".safetensors) or train from random init (backbone.features.pretrained=false)"
            )
        if cfg.hf_hub_id:
            where, cache = f"Hugging Face hub repo {cfg.hf_hub_id}", hf_cache()
        else:
            where = cfg.url
            cache = f"the torch hub cache {torch.hub.get_dir()}/checkpoints (TORCH_HOME/hub)"
        if pretrained == DOWNLOAD:
            log.info(
                "backbone.features.pretrained=download: timm's %s weights from %s into %s "
                "(downloaded unless already there)",
                name,
                where,
                cache,
            )
        elif cfg.hf_hub_id:
            load = hub_offline()
        else:  # timm reads a url's weights from the torch hub cache, else downloads them
            cached = hub_checkpoint(cfg.url)
            if not cached.is_file():
                raise DataError(
                    f"backbone.features.pretrained=true needs timm's {name} weights in the torch "
                    f"hub cache and they are not there (nothing is downloaded): put {cfg.url} at "
                    f"{cached} (the cache follows TORCH_HOME), or {fixes(name)}"
                )
    try:
        with load:
            trunk = timm.create_model(name, pretrained=pretrained not in (False, None), **kwargs)
    except TypeError as e:
        if "img_size" not in str(e):
            raise
        raise ConfigError(
            f"backbone.features.image_size={image_size}: timm's {name} takes no img_size (it "
            "takes any input size); set backbone.features.image_size=null"
        ) from None
    except OSError as e:  # the hub's "not in the cache" (offline) or a failed download
        if pretrained is True:
            raise DataError(
                f"backbone.features.pretrained=true needs timm's {name} weights ({where}) in "
                f"{cache} and they are not there (nothing is downloaded): {fixes(name)}"
            ) from e
        if pretrained == DOWNLOAD:
            raise DataError(
                f"backbone.features.pretrained=download: could not download timm's {name} "
                f"weights from {where} ({type(e).__name__}: {str(e)[:300]}); check the network, "
                f"or pass a weights file with backbone.features.pretrained=/path/to/weights"
                ".safetensors, or train from random init with backbone.features.pretrained=false"
            ) from e
        raise
    width = getattr(trunk, "head_hidden_size", None) or trunk.num_features
    return split_norm_act(trunk), width


class TimmFeatures(BottleneckFeatures):
    """A timm trunk + bottleneck (Linear, BatchNorm1d, ReLU, Dropout) -> `bottleneck_dim`
    features. `name` is any timm model (timm.list_models()), e.g. resnet50, convnext_tiny,
    vit_base_patch16_224 (a tag picks other weights: vit_base_patch16_224.augreg_in21k).
    `image_size` is passed as timm's img_size (ViTs and other fixed-size models; null keeps the
    model's own). `pretrained_parameters()` names the loaded trunk's parameters, which the
    optimiser fine-tunes at lr * backbone.lr_mult; the bottleneck trains at the full rate."""

    def __init__(
        self,
        name: str,
        pretrained: bool | str | None = True,
        bottleneck_dim: int = 256,
        dropout: float = 0.5,
        in_channels: int = 3,
        image_size: int | None = None,
    ):
        super().__init__()
        self.model_name = name
        trunk, width = timm_trunk(name, pretrained, in_channels, image_size)
        self.attach(trunk, width, pretrained, bottleneck_dim, dropout)
