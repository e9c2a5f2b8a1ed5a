"""A checkpoint's label classifier with the input preprocessing it was trained with, for
scripts/predict.py and scripts/export.py.

`load_predictor(ckpt)` rebuilds the module from the checkpoint's hyper-parameters (as
scripts/evaluate.py does) and a `DomainAdaptationDataModule` from its saved dataset
hyper-parameters and preprocessing state (per-channel mean / std), without loading any data.
The model's input then comes from the same code paths as in training:

- images of in-memory pairs (digits, MNIST-M, ...): decoded to uint8 (C, H, W), converted to the
  model's channels and size by `adapt_images`, normalised by the datamodule
  (`on_after_batch_transfer`: / 255, minus the training mean, or standardised per domain);
- images of folder pairs (office31, folder): the pair's evaluation transform
  (`folder_transforms`: Resize + CenterCrop, then ToTensor + Normalize); their checkpoints
  save the class names (the class folders), `Predictor.classes`;
- feature checkpoints (moons, sines_shift): float arrays, passed through the datamodule as
  training batches are;
- checkpoints of file pairs (table, sequences, text, amazon_reviews): a file in the pair's own
  format, encoded by `Predictor.encode_file` with the preprocessing fitted on the training data
  and saved in the checkpoint (statistics, categories, vocabulary, classes; each pair
  module's `encode_file`).

Every image becomes `pixels` first: uint8 (C, S, S) at the model's channels and size. The
exported model takes these pixel values (as float) and applies the normalisation itself.
"""

import functools
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dann.checkpoints import load_checkpoint, load_state_checked
from dann.data import DomainAdaptationDataModule
from dann.data.datamodule import DOMAINS, adapt_images
from dann.data.folders import folder_transforms
from dann.data.registry import Split, available_pairs, get_pair
from dann.errors import ConfigError, DannError, InvalidDataError
from dann.module import DALightningModule

log = logging.getLogger(__name__)

# pairs whose images reach the model through a torchvision transform (Dataset splits, see
# dann/data/folders.py) instead of as uint8 tensors normalised by the datamodule
TRANSFORM_PAIRS = {
    name: folder_transforms
    for name in ("office31", "office_home", "visda2017", "domainnet", "folder")
}
UNKNOWN = "unknown"  # the prediction for a class the source lacks (open-set checkpoints)
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def _file_pair(name: str):
    """(formats, encode_file(file, fitted, options) -> (inputs, labels or None)) of a pair
    whose checkpoints hold fitted preprocessing (its module, where it registers, defines
    `encode_file`), or None."""
    if name not in available_pairs():
        return None
    module = sys.modules[get_pair(name).__module__]
    encode_file = getattr(module, "encode_file", None)
    return (module.FORMATS, encode_file) if encode_file else None


class ParityError(DannError):
    """An exported model whose outputs differ from the checkpoint's."""


def publish(tmp: str | Path, path: Path) -> None:
    """Rename a finished temporary file (mkstemp's, mode 0600) into place with the permissions
    a new file would get (the umask's)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def resolve_device(name: str) -> torch.device:
    """`auto` (a GPU when there is one), `cpu`, `cuda` or `cuda:N`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device={name!r}: choose auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name}: no CUDA device here; use device=cpu or device=auto")
    return device


def domain_index(domain: str) -> int:
    if domain not in DOMAINS:
        raise ConfigError(
            f"domain={domain!r}: choose {' or '.join(DOMAINS)} (whose normalisation statistics "
            "the inputs get; target is what the model was adapted to)"
        )
    return DOMAINS.index(domain)


@dataclass
class Predictor:
    """A checkpoint's model (eval mode) and its input preprocessing, for one domain."""

    module: DALightningModule
    datamodule: DomainAdaptationDataModule  # holds the preprocessing state only; no data
    domain: int  # 0 source, 1 target: whose normalisation (and BatchNorm statistics)
    device: torch.device
    # what the pair's loader fitted on the training data and applies to raw files (table
    # standardisation, categories, vocabulary): inputs here are taken as already preprocessed
    fitted: dict | None = None

    @property
    def hparams(self):
        return self.datamodule.hparams

    @property
    def num_classes(self) -> int:
        """How many logits the model gives: the source's classes (+ OSBP's "unknown")."""
        return len(self.class_ids) + int(self.module.method.unknown_output)

    @property
    def class_ids(self) -> list[int]:
        """The pair's class index of each of the model's classes (all of them, unless the run
        kept fewer source classes: dataset.source_classes)."""
        return self.module.class_ids

    @property
    def open_set(self) -> bool:
        """Whether the model may answer "unknown" (trained for an open-set or universal target)."""
        return self.module.open_set is not None

    def decide(self, logits: torch.Tensor, x: torch.Tensor) -> list:
        """The predicted class of each row of inputs `x` (their `logits`): the pair's class
        index, or "unknown" (open-set: the method's own rule, OSBP's unknown output, or a
        confidence below the run's unknown_threshold)."""
        if not self.open_set:
            return [self.class_ids[k] for k in logits.argmax(dim=1).tolist()]
        rule, method = self.module.open_set, self.module.method
        unknown = None
        if method.own_unknown_rule:  # OVANet: from the features
            unknown = method.unknown(self.module.features(self.prepare(x), self.domain), logits)
        picks = rule.predict(logits, unknown).tolist()
        return [self.class_ids[k] if k < rule.known else UNKNOWN for k in picks]

    @property
    def output_names(self) -> list[str]:
        """What each logit scores: the pair's class index, then "unknown" for OSBP's output."""
        names = [str(c) for c in self.class_ids]
        return names + [UNKNOWN] * int(self.module.method.unknown_output)

    @property
    def is_image(self) -> bool:
        return self.hparams.get("image_size") is not None

    @property
    def classes(self) -> list | None:
        """The original class labels (index k is class k) of file pairs, the class folder
        names of folder pairs (office31, folder), else None (older checkpoints too)."""
        return list(self.fitted["classes"]) if self.fitted and "classes" in self.fitted else None

    @property
    def reads_files(self) -> bool:
        """Whether the inputs are files in the pair's own format, encoded with the fitted
        preprocessing (tables, sequences, text, amazon_reviews), not images or arrays."""
        return bool(self.fitted) and _file_pair(self.hparams.name) is not None

    @property
    def masked(self) -> bool:
        """Sequence inputs (N, T, F + 1) whose last channel marks the valid steps."""
        return bool(self.datamodule.spec.options.get("masked"))

    def encode_file(self, path: str | Path) -> tuple[torch.Tensor, np.ndarray | None]:
        """A file in the pair's own format as model inputs, with the checkpoint's fitted
        preprocessing: (inputs (N, ...), the file's labels or None; labels are not used)."""
        path, pair = Path(path), _file_pair(self.hparams.name)
        if pair is None or not self.fitted:
            raise InvalidDataError(
                f"{self.hparams.name} checkpoints hold no fitted preprocessing to encode {path} "
                "with: pass an .npz holding the model's inputs x"
            )
        formats, encode = pair
        if path.suffix.lower() not in formats:
            raise InvalidDataError(
                f"input={path}: a {self.hparams.name} checkpoint reads {', '.join(formats)} "
                "files (the format it was trained on)"
            )
        return encode(path, self.fitted, self.datamodule.spec.options)

    @functools.cached_property
    def transform(self):
        """The folder pair's evaluation transform, or None for in-memory pairs."""
        make = TRANSFORM_PAIRS.get(self.hparams.name)
        return make(self.datamodule.spec)[1] if make else None

    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input: (C, S, S) pixels, or the feature shape from the dataset
        config ((input_size,), or (length, input_size) for sequences; dataset=sequences:
        (T, F + 1), T the training length saved with the preprocessing)."""
        hp = self.hparams
        if self.is_image:
            return hp.get("channels") or 3, hp.image_size, hp.image_size
        if hp.get("input_size") is None:
            raise ConfigError(
                f"cannot tell the input shape of a {hp.name} checkpoint: pass input_shape=[...]"
            )
        if self.masked:
            steps = (self.fitted or {}).get("steps")
            if not steps:
                raise ConfigError(
                    f"this {hp.name} checkpoint does not record its sequence length T: pass "
                    f"input_shape=[T,{hp.input_size + 1}] (T steps of {hp.input_size} "
                    "feature(s) + the validity channel)"
                )
            return int(steps), hp.input_size + 1
        return (hp.length, hp.input_size) if hp.get("length") else (hp.input_size,)

    # ---- images -> pixels (uint8 (C, S, S)) -------------------------------------------------

    def pixels(self, image) -> torch.Tensor:
        """A PIL image as uint8 (C, S, S) at the model's channels and size, the way the
        training data was made."""
        from torchvision import transforms as T

        if self.transform is not None:  # folder pairs: Resize + CenterCrop, RGB
            resize = [
                t for t in self.transform.transforms if isinstance(t, T.Resize | T.CenterCrop)
            ]
            image = T.Compose(resize)(image.convert("RGB"))
            return torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous()
        grey = image.mode in GREY_MODES
        array = np.array(image.convert("L" if grey else "RGB"))
        x = torch.from_numpy(array)
        x = x[None] if grey else x.permute(2, 0, 1)
        split = Split(x[None], torch.zeros(1, dtype=torch.long))
        return adapt_images(split, self.hparams.get("channels"), self.hparams.image_size).inputs[0]

    # ---- pixels or features -> model input -> logits -----------------------------------------

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The model's input for a batch of pixels (uint8 (N, C, S, S)) or features (float)."""
        x = x.to(self.device)
        if self.transform is not None and x.dtype == torch.uint8:
            from torchvision import transforms as T

            (normalize,) = [t for t in self.transform.transforms if isinstance(t, T.Normalize)]
            return normalize(x.float().div(255))  # ToTensor, then the pair's Normalize
        return self.datamodule.on_after_batch_transfer(x, self.domain)

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(self.prepare(x), self.domain).float()

    # ---- the normalisation as one per-channel affine map (for export) -----------------------

    def pixel_affine(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(scale, shift), each (1, C, 1, 1), with prepare(pixels) == pixels * scale + shift,
        measured on black and white images; None for feature checkpoints."""
        if not self.is_image:
            return None
        c = self.input_shape()[0]
        black = self.prepare(torch.zeros(1, c, 1, 1, dtype=torch.uint8)).cpu()
        white = self.prepare(torch.full((1, c, 1, 1), 255, dtype=torch.uint8)).cpu()
        return (white - black) / 255, black


def module_from_checkpoint(ckpt: dict, path: str | Path) -> DALightningModule:
    """The model a loaded checkpoint holds, rebuilt from its hyper-parameters with its weights
    checked (scripts/evaluate.py, predict.py, export.py); no torch.compile for these passes, and
    no pretrained weights read: the checkpoint holds every weight (the training run's cache or
    weights file need not be on this machine)."""
    hp = dict(ckpt["hyper_parameters"])
    hp["backbone"] = {**hp["backbone"], "compile": False}
    features = hp["backbone"].get("features") or {}
    if features.get("pretrained") not in (None, False):
        hp["backbone"]["features"] = {**features, "pretrained": False}
    module = DALightningModule(**hp)
    load_state_checked(module, ckpt["state_dict"], str(path))
    return module


def load_predictor(path: str | Path, domain: str = "target", device: str = "cpu") -> Predictor:
    """The checkpoint's model and preprocessing (a CheckpointError for a bad file)."""
    ckpt = load_checkpoint(path)
    module = module_from_checkpoint(ckpt, path)
    dm_hp = dict(ckpt.get("datamodule_hyper_parameters") or {})
    if not dm_hp:
        raise InvalidDataError(
            f"{path} has no dataset hyper-parameters (datamodule_hyper_parameters): it was not "
            "written by train.py, so its input preprocessing is unknown"
        )
    dm_hp.update(dm_hp.pop("options", None) or {})
    dm_hp["download"] = False
    datamodule = DomainAdaptationDataModule(**dm_hp)
    state = ckpt.get(type(datamodule).__qualname__) or {}
    datamodule.load_state_dict(state)  # the training run's per-channel mean / std
    if dm_hp.get("image_size") and dm_hp.get("name") not in TRANSFORM_PAIRS:
        if state.get("mean") is None and state.get("scale") is None:
            log.warning(
                "%s holds no normalisation statistics: images are only scaled to [0, 1]", path
            )
    device_ = resolve_device(device)
    module.to(device_).eval()
    fitted = state.get("preprocessing")
    return Predictor(module, datamodule, domain_index(domain), device_, fitted)


def images_from_array(x: np.ndarray, where: str) -> np.ndarray:
    """The images of an .npz array `x` as uint8 (N, H, W, C). Accepted: (N, H, W) grey,
    (N, H, W, C) or (N, C, H, W) with C = 1 or 3 (channels last when the last axis has 1 or 3
    entries); uint8 in [0, 255] or float in [0, 1]."""
    if x.ndim == 3:
        x = x[..., None]
    elif x.ndim == 4 and x.shape[-1] not in (1, 3) and x.shape[1] in (1, 3):
        x = np.moveaxis(x, 1, -1)
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise InvalidDataError(
            f"{where}: x has shape {x.shape}; images must be (N, H, W), (N, H, W, C) or "
            "(N, C, H, W) with C = 1 or 3"
        )
    if x.dtype == np.uint8:
        return x
    if not np.issubdtype(x.dtype, np.floating):
        raise InvalidDataError(f"{where}: x has dtype {x.dtype}; images must be uint8 or float")
    if x.size and not (np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1):
        raise InvalidDataError(
            f"{where}: float images must hold values in [0, 1] (pass uint8 for 0..255); "
            f"x holds [{np.nanmin(x):g}, {np.nanmax(x):g}]"
        )
    return np.rint(x * 255).astype(np.uint8)


class ExportedClassifier(nn.Module):
    """Features + label classifier (no domain head), with the input normalisation of image
    checkpoints built in: input pixel values in [0, 255] (float, N x C x S x S), output logits."""

    def __init__(self, predictor: Predictor, shape: tuple[int, ...] | None = None):
        super().__init__()
        module = predictor.module
        # one prediction-path forward sets each domain-aware BatchNorm to the predictor's
        # domain (DALightningModule.features); tracing then keeps that choice
        dtype = torch.uint8 if predictor.is_image else torch.float32
        example = torch.zeros(1, *(shape or predictor.input_shape()), dtype=dtype)
        module.features(predictor.prepare(example), predictor.domain)
        self.features, self.classifier = module.feature_extractor, module.classifier
        affine = predictor.pixel_affine()
        self.normalises = affine is not None
        if affine is not None:
            self.register_buffer("scale", affine[0].to(predictor.device))
            self.register_buffer("shift", affine[1].to(predictor.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalises:
            x = x * self.scale + self.shift
        return self.classifier(self.features(x))
