"""Export a checkpoint's label classifier (features + label classifier, no domain head) to
TorchScript or ONNX, checked against the checkpoint.

    python scripts/export.py ckpt=outputs/runs/<run>/checkpoints/last.ckpt format=torchscript
    python scripts/export.py ckpt=... format=onnx output=model.onnx

The exported model takes a float32 batch with a dynamic batch dimension and returns logits
(N, K):
- image checkpoints: pixels (N, C, S, S), values in [0, 255] (uint8 images cast to float, RGB
  channel order, already resized to the checkpoint's S x S; folder pairs such as office31:
  Resize + CenterCrop as in evaluation). The training run's normalisation (/ 255, minus its mean,
  or its mean / std) is built into the model.
- feature checkpoints (moons, ...): the features (N, ...) as in training, unchanged.
- file pairs (table, text, amazon_reviews: (N, D); sequences: (N, T, F + 1)): the PREPROCESSED
  feature vectors, as the model saw them in training; the preprocessing fitted on the training
  data (standardisation, one-hot categories, vocabulary; sequences: standardisation, padding
  and the validity channel) is not built in. `Predictor.encode_file` (dann/inference.py) makes
  them from a file: `load_predictor(ckpt).encode_file("new.csv")[0]`. Sequences: T is the
  training length saved in the checkpoint, or `input_shape=[T,F+1]`.
`<output>.json` says the same for the exported file: input shape, value range, normalisation,
number of classes, domain and the parity check.

Parity: the exported file is loaded back (torch.jit.load / onnxruntime) and run on a batch of
`parity_batch` random inputs (another batch size than the one it was traced with); the largest
absolute difference from the checkpoint's logits is printed, and above `tolerance` the export
fails (exit status 2; nothing is written). ONNX needs `pip install -e ".[export]"` (onnx,
onnxscript: torch.onnx's default dynamo exporter; onnxruntime: the check).
"""

import json
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from dann.config_check import check_command_line, check_required
from dann.errors import ConfigError, reported_as_exit
from dann.inference import ExportedClassifier, ParityError, Predictor, load_predictor, publish
from dann.run_dir import discard_refused_launch

log = logging.getLogger("export")

FORMATS = {"torchscript": ".torchscript.pt", "onnx": ".onnx"}  # default output: <ckpt stem><this>
TRACE_BATCH = 2  # the example batch the model is traced with (the batch dimension stays dynamic)


@hydra.main(version_base="1.3", config_path="../configs", config_name="export")
def main(cfg: DictConfig) -> None:
    with reported_as_exit(on_error=discard_refused_launch):  # no run dir left behind
        export(cfg)


def export(cfg: DictConfig) -> Path:
    check_required(cfg, "python scripts/export.py ckpt=outputs/runs/<run>/checkpoints/last.ckpt")
    fmt = str(cfg.format)
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt!r}: choose one of {', '.join(FORMATS)}")
    if fmt == "onnx":
        onnx_modules()  # before any work: a missing package is a clear error
    predictor = load_predictor(cfg.ckpt, cfg.domain, "cpu")
    if (predictor.fitted or {}).get("representation") == "tokens":
        raise ConfigError(
            "this text model reads word ids (dataset.representation=tokens), which export.py "
            "does not trace: predict with scripts/predict.py, or train with the bag of words "
            "(dataset.representation=bow) to export"
        )
    shape = tuple(int(n) for n in cfg.input_shape) if cfg.input_shape else predictor.input_shape()
    try:
        model = ExportedClassifier(predictor, shape).eval()
    except (ValueError, RuntimeError) as e:
        try:
            expected = f" (it takes {list(predictor.input_shape())})"
        except ConfigError:
            expected = ""
        raise ConfigError(
            f"input_shape={list(shape)} does not fit this {predictor.hparams.name} model"
            f"{expected}: {str(e).splitlines()[0]}"
        ) from None
    ckpt = Path(str(cfg.ckpt))
    output = Path(str(cfg.output)) if cfg.output else ckpt.with_name(ckpt.stem + FORMATS[fmt])
    output.parent.mkdir(parents=True, exist_ok=True)

    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    os.close(fd)
    try:
        example = example_inputs(predictor, shape, TRACE_BATCH, seed=0)
        (save_torchscript if fmt == "torchscript" else save_onnx)(model, example, Path(tmp))
        x = example_inputs(predictor, shape, int(cfg.parity_batch), seed=1)
        expected = predictor.logits(x)
        got = (run_torchscript if fmt == "torchscript" else run_onnx)(Path(tmp), x.float())
        diff = float((got - expected).abs().max())
        log.info(
            "parity on %d inputs: max |exported - checkpoint| = %.3g (tolerance %g)",
            len(x),
            diff,
            cfg.tolerance,
        )
        if not diff <= float(cfg.tolerance):
            raise ParityError(
                f"the exported model's logits differ from the checkpoint's by up to {diff:.3g} "
                f"(tolerance={cfg.tolerance}); nothing written"
            )
        publish(tmp, output)
    finally:
        Path(tmp).unlink(missing_ok=True)

    card = model_card(predictor, cfg, fmt, shape, diff)
    output.with_name(output.name + ".json").write_text(json.dumps(card, indent=2) + "\n")
    log.info("wrote %s (%s) and %s.json", output, fmt, output.name)
    log.info("input: %s; output: %s", card["input"]["description"], card["output"])
    return output


def example_inputs(predictor: Predictor, shape: tuple, n: int, seed: int) -> torch.Tensor:
    """Random pixels (uint8) for image checkpoints, standard normal features otherwise (masked
    sequences: random lengths, zero features past them and the validity channel last)."""
    g = torch.Generator().manual_seed(seed)
    if predictor.is_image:
        return torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)
    x = torch.randn(n, *shape, generator=g)
    if predictor.masked:
        steps = shape[0]
        lengths = torch.randint(1, steps + 1, (n,), generator=g)
        valid = (torch.arange(steps)[None, :] < lengths[:, None]).float()
        x = torch.cat([x[..., :-1] * valid[..., None], valid[..., None]], dim=-1)
    return x


def save_torchscript(model: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        quiet_jit()
        torch.jit.save(torch.jit.trace(model, example.float()), str(path))


def run_torchscript(path: Path, x: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings(), torch.no_grad():
        quiet_jit()
        return torch.jit.load(str(path), map_location="cpu")(x)


def quiet_jit() -> None:
    """TorchScript still works in torch 2.x but warns on every call that it is deprecated."""
    warnings.filterwarnings("ignore", ".*torch.jit.* is deprecated", FutureWarning)


def onnx_modules():
    try:
        import onnx  # noqa: F401
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ConfigError(
            f'format=onnx needs onnx, onnxscript and onnxruntime ({e}): pip install -e ".[export]"'
        ) from None
    return onnxruntime


def save_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    for name in ("onnx_ir", "onnxscript"):  # one INFO line per optimisation pass otherwise
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        torch.onnx.export(
            model,
            (example.float(),),
            str(path),
            dynamo=True,
            input_names=["input"],
            output_names=["logits"],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            external_data=False,
            verbose=False,
        )
    except Exception as e:  # torch.export cannot trace every model (e.g. packed GRU sequences)
        while e.__cause__ is not None:  # the root cause, not the exporter's advice
            e = e.__cause__
        reason = next((ln for ln in str(e).splitlines() if ln.strip()), "")
        raise ConfigError(
            f"torch.onnx could not export this model ({type(e).__name__}: {reason[:300]}); "
            "use format=torchscript"
        ) from None


def run_onnx(path: Path, x: torch.Tensor) -> torch.Tensor:
    ort = onnx_modules()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    return torch.from_numpy(np.asarray(logits))


def open_set_rule(predictor: Predictor) -> str | None:
    """How the checkpoint's predictions say "unknown" (None: it never does)."""
    if not predictor.open_set:
        return None
    rule = predictor.module.open_set
    if predictor.module.method.own_unknown_rule:
        name = type(predictor.module.method).__name__
        return f"by {name}'s own heads, which this exported model does not hold: use the checkpoint"
    if predictor.module.method.unknown_output:
        return "unknown where the last logit (unknown) is the largest"
    return f"unknown where the largest softmax probability is below {rule.threshold}"


def model_card(predictor: Predictor, cfg: DictConfig, fmt: str, shape: tuple, diff: float):
    """What the exported model takes and returns, for the .json next to it."""
    hp = predictor.hparams
    if predictor.is_image:
        scale, shift = predictor.pixel_affine()
        transform = f"resized to {hp.image_size}x{hp.image_size}"
        if predictor.transform is not None:
            transform = f"Resize({hp.get('resize')}) + CenterCrop({hp.image_size})"
        description = (
            f"float32 pixels (N, {', '.join(map(str, shape))}), values in [0, 255], RGB order "
            f"(grey for 1 channel), {transform}; normalisation built in"
        )
        normalisation = {"scale": scale.flatten().tolist(), "shift": shift.flatten().tolist()}
    else:
        description = f"float32 features (N, {', '.join(map(str, shape))}), as in training"
        if predictor.masked:
            description += (
                ": T steps of the standardised features, zero at padded steps, then a validity "
                "channel (1 valid, 0 padding)"
            )
        if predictor.fitted:
            description += (
                " (after the pair's preprocessing fitted on the training data, not built in: "
                f"{', '.join(map(str, predictor.fitted))}; from a file in the pair's format: "
                f"dann.inference.load_predictor({str(cfg.ckpt)!r}).encode_file(path)[0])"
            )
        normalisation = None
    return {
        "format": fmt,
        "checkpoint": str(cfg.ckpt),
        "dataset": hp.name,
        "domain": cfg.domain,
        "input": {
            "name": "input",
            "shape": ["N", *shape],
            "dtype": "float32",
            "description": description,
            "normalisation (inside the model: x * scale + shift)": normalisation,
        },
        "output": f"logits (N, {predictor.num_classes}); softmax gives class probabilities",
        "num_classes": predictor.num_classes,
        "classes": predictor.classes,
        # logit k scores the pair's class outputs[k] ("unknown": OSBP's unknown output)
        "outputs": predictor.output_names,
        "open_set": open_set_rule(predictor),
        "parity": {"max_abs_diff": diff, "tolerance": float(cfg.tolerance)},
    }


if __name__ == "__main__":
    with reported_as_exit():
        check_command_line("export", sys.argv[1:])  # a misspelt key, before Hydra's advice
    main()
