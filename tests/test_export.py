"""scripts/export.py: the label classifier as TorchScript / ONNX, equal to the checkpoint."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from conftest import compose_config, fast_dev_checkpoint, load_script, reference_model, run_script

from dann.errors import reported_as_exit

export_script = load_script("export")
ONNX_MISSING = [
    m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None
]


@pytest.fixture(scope="module")
def mnist_ckpt(tmp_path_factory, data_dir) -> Path:
    """mnist_to_mnistm with DSBN: BatchNorm statistics and parameters per domain."""
    out = tmp_path_factory.mktemp("mnist")
    return fast_dev_checkpoint(out, data_dir, "backbone=lenet_dann_bn", "norm=domain_specific")


def export_cfg(*overrides: str):
    return compose_config("export", *overrides)


def new_pixels(n: int) -> torch.Tensor:
    """Inputs other than the parity batch (another seed and batch size)."""
    g = torch.Generator().manual_seed(1234)
    return torch.randint(0, 256, (n, 3, 28, 28), generator=g, dtype=torch.uint8)


def test_torchscript_export_from_the_command_line(mnist_ckpt, tmp_path):
    out = tmp_path / "model.pt"
    proc = run_script(
        "scripts/export.py",
        f"ckpt={mnist_ckpt}",
        "format=torchscript",
        f"output={out}",
        f"hydra.run.dir={tmp_path / 'run'}",
        threads=1,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "max |exported - checkpoint|" in proc.stdout + proc.stderr

    model = torch.jit.load(str(out))
    # features + label classifier + the normalisation; no domain head
    assert {k.split(".")[0] for k in model.state_dict()} == {
        "features",
        "classifier",
        "scale",
        "shift",
    }
    _, reference = reference_model(mnist_ckpt)
    x = new_pixels(5)
    with torch.no_grad():
        torch.testing.assert_close(model(x.float()), reference(x), atol=1e-5, rtol=0)
    card = json.loads(out.with_name("model.pt.json").read_text())
    assert card["input"]["shape"] == ["N", 3, 28, 28] and card["num_classes"] == 10
    assert card["parity"]["max_abs_diff"] <= 1e-4


@pytest.mark.skipif(
    bool(ONNX_MISSING), reason=f"not installed: {', '.join(ONNX_MISSING)} (extra: export)"
)
def test_onnx_export_runs_in_onnxruntime_with_a_dynamic_batch(mnist_ckpt, tmp_path):
    import onnxruntime as ort

    out = export_script.export(export_cfg(f"ckpt={mnist_ckpt}", "format=onnx"))
    assert out == mnist_ckpt.with_name("model.onnx")  # default: next to the checkpoint
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (spec,) = session.get_inputs()
    assert not isinstance(spec.shape[0], int) and spec.shape[1:] == [3, 28, 28]
    _, reference = reference_model(mnist_ckpt)
    for n in (1, 7):
        x = new_pixels(n)
        (logits,) = session.run(None, {spec.name: x.float().numpy()})
        torch.testing.assert_close(torch.from_numpy(logits), reference(x), atol=1e-5, rtol=0)


def test_export_keeps_the_requested_domains_batch_norm(mnist_ckpt, tmp_path):
    """Each domain has its own BatchNorm; domain=source exports the source one (the layers
    default to the target's, which the other tests export)."""
    out = tmp_path / "source.pt"
    export_script.export(export_cfg(f"ckpt={mnist_ckpt}", "domain=source", f"output={out}"))
    _, reference = reference_model(mnist_ckpt)
    x = new_pixels(4)
    with torch.no_grad():
        logits = torch.jit.load(str(out))(x.float())
    # after one training step the domains' logits differ little (small random-init logits)
    assert (reference(x, 0) - reference(x, 1)).abs().max() > 1e-4
    torch.testing.assert_close(logits, reference(x, 0), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["format=tflite"], "choose one of torchscript, onnx"),
        (["ckpt={tmp}/missing.ckpt"], "missing.ckpt"),
        (["domain=both"], "choose source or target"),
        (["tolerance=-1", "output={tmp}/m.pt"], "nothing written"),  # parity fails
    ],
)
def test_export_bad_input_is_a_clear_error(overrides, message, mnist_ckpt, tmp_path, capsys):
    args = [o.format(tmp=tmp_path) for o in [f"ckpt={mnist_ckpt}", *overrides]]
    with pytest.raises(SystemExit) as exit_, reported_as_exit():
        export_script.export(export_cfg(*args))
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# ---- sequences: (N, T, F + 1) inputs, T saved with the checkpoint's preprocessing -------------


@pytest.fixture(scope="module")
def sequences_ckpt(tmp_path_factory, data_dir) -> Path:
    """A GRU on 2-feature sequences of up to 24 (source) and 30 (target) steps."""
    import numpy as np
    from test_sequences import sequences

    out = tmp_path_factory.mktemp("sequences")
    shapes = {"src": (60, 24, 0, 0.0), "tgt": (40, 30, 1, 1.0)}  # n, T, seed, offset
    for name, (n, steps, seed, offset) in shapes.items():
        x, y, lengths = sequences(n, steps, seed, offset)
        np.savez(out / f"{name}.npz", x=x, y=y, lengths=lengths)
    return fast_dev_checkpoint(
        out, data_dir, "dataset=sequences", "backbone=gru", f"dataset.source={out / 'src.npz'}",
        f"dataset.target={out / 'tgt.npz'}", "dataset.batch_size=16",
    )  # fmt: skip


def test_sequences_export_to_torchscript_matches_the_checkpoint(sequences_ckpt, tmp_path):
    from dann.inference import load_predictor

    out = export_script.export(export_cfg(f"ckpt={sequences_ckpt}", f"output={tmp_path}/m.pt"))
    card = json.loads(out.with_name("m.pt.json").read_text())
    assert card["input"]["shape"] == ["N", 30, 3] and card["classes"] == [0, 1, 2]
    assert "encode_file" in card["input"]["description"]
    model = torch.jit.load(str(out))
    # real inputs: the target file encoded with the checkpoint's standardisation
    predictor = load_predictor(sequences_ckpt)
    x, _ = predictor.encode_file(sequences_ckpt.with_name("tgt.npz"))
    assert x.shape == (40, 30, 3)
    with torch.no_grad():
        torch.testing.assert_close(model(x), predictor.logits(x), atol=1e-5, rtol=0)


def test_sequences_export_without_a_saved_length_needs_input_shape(
    sequences_ckpt, tmp_path, capsys
):
    state = torch.load(sequences_ckpt, map_location="cpu", weights_only=True)
    del state["DomainAdaptationDataModule"]["preprocessing"]["steps"]  # an older checkpoint
    old = tmp_path / "old.ckpt"
    torch.save(state, old)
    for overrides, message in [
        ([], "pass input_shape=[T,3] (T steps of 2 feature(s) + the validity channel)"),
        (["input_shape=[12,5]"], "input_shape=[12, 5] does not fit this sequences model"),
    ]:
        with pytest.raises(SystemExit) as exit_, reported_as_exit():
            export_script.export(export_cfg(f"ckpt={old}", f"output={tmp_path}/m.pt", *overrides))
        assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()
    out = export_script.export(
        export_cfg(f"ckpt={old}", f"output={tmp_path}/m.pt", "input_shape=[12,3]")
    )
    card = json.loads(out.with_name("m.pt.json").read_text())
    assert card["input"]["shape"] == ["N", 12, 3] and card["parity"]["max_abs_diff"] <= 1e-4
