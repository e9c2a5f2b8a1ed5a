"""backbone=timm (dann/models/timm_features.py): features from timm's tiny test models, weights
read from the caches only (never downloaded) or from a file, clear errors for a missing cache,
file or model name, and a training run whose TorchScript export equals its checkpoint. CPU, no
network."""

import socket
import sys

import pytest
import torch
from conftest import PINNED, compose_config, fast_dev_checkpoint, load_script, reference_model
from conftest import train_py as run_train_py

from dann.errors import CheckpointError, ConfigError, DataError

timm = pytest.importorskip("timm", reason='backbone=timm needs pip install -e ".[timm]"')
from dann.models import TimmFeatures  # noqa: E402
from dann.models.norm import convert_batchnorm  # noqa: E402

CNN = "test_efficientnet"  # timm's tiny test models (random init, ~0.1-0.4M parameters)


@pytest.fixture
def no_network(monkeypatch):
    """Every name lookup or connection fails, and is recorded: the test asserts there was none."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[:2])
        raise OSError("network access in a test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """Empty Hugging Face hub and torch hub caches for this test. huggingface_hub reads HF_HOME /
    HF_HUB_CACHE when it is imported, so its constant is set too."""
    from huggingface_hub import constants

    hf_hub = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(hf_hub))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_hub))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # get_dir() follows TORCH_HOME
    return hf_hub


def same_function(a: torch.nn.Module, b: torch.nn.Module, size: int = 32) -> bool:
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.allclose(a.eval()(x), b.eval()(x), atol=1e-5)


@pytest.mark.parametrize(
    ("name", "image_size"),
    [(CNN, None), ("test_vit", 32), ("test_mambaout", None)],  # mambaout: a wider pre-logits
)
def test_random_init_gives_bottleneck_features_and_no_pretrained_parameters(name, image_size):
    features = TimmFeatures(name, pretrained=False, bottleneck_dim=64, image_size=image_size)
    out = features(torch.zeros(2, 3, 32, 32))
    assert features.out_features == 64 and out.shape == (2, 64)
    assert features.pretrained_parameters() == []


def test_per_domain_batch_norm_keeps_timms_fused_activation():
    """timm's BatchNormAct2d is a BatchNorm2d that also applies its activation: it is split, so
    norm=separate / domain_specific (which swap every BatchNorm2d) keep the activation."""
    torch.manual_seed(0)
    reference = timm.create_model(CNN, num_classes=0)
    torch.manual_seed(0)
    features = TimmFeatures(CNN, pretrained=False)
    assert not any(isinstance(m, timm.layers.BatchNormAct2d) for m in features.modules())
    assert same_function(features.trunk, reference)
    assert same_function(convert_batchnorm(features.trunk, "separate", "per_domain"), reference)


def test_pretrained_true_without_cached_weights_fails_without_network_access(
    empty_caches, no_network
):
    with pytest.raises(DataError) as error:
        TimmFeatures(CNN, pretrained=True)
    message = str(error.value)
    assert f"timm's {CNN} weights" in message and str(empty_caches) in message
    assert "backbone.features.pretrained=download" in message
    assert "backbone.features.pretrained=/path/to/weights.safetensors" in message
    assert "pretrained=false" in message
    # url-only weights (no hub repo): the torch hub cache, checked before timm would download
    with pytest.raises(DataError, match=r"torch hub cache.*pretrained=download"):
        TimmFeatures("legacy_seresnet18", pretrained=True)
    assert no_network == []


def test_pretrained_true_reads_the_hub_cache_offline(empty_caches, no_network):
    import safetensors.torch
    from huggingface_hub import constants

    offline_before = constants.HF_HUB_OFFLINE
    reference = timm.create_model(CNN, num_classes=0)
    repo = timm.models.get_pretrained_cfg(CNN).hf_hub_id  # timm/test_efficientnet.r160_in1k
    commit = "0" * 40
    snapshot = empty_caches / f"models--{repo.replace('/', '--')}" / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text(commit)
    safetensors.torch.save_file(reference.state_dict(), snapshot / "model.safetensors")

    features = TimmFeatures(CNN, pretrained=True)
    assert same_function(features.trunk, reference)
    assert features.pretrained_parameters() == list(features.trunk.parameters())
    assert no_network == []
    assert constants.HF_HUB_OFFLINE == offline_before  # offline only while it was built


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_weights_file_loads_and_fine_tunes_the_trunk(tmp_path, suffix, no_network):
    import safetensors.torch

    reference = timm.create_model(CNN)  # with its classifier, which is dropped
    path = tmp_path / f"weights{suffix}"
    if suffix == ".pth":
        torch.save(reference.state_dict(), path)
    else:
        safetensors.torch.save_file(reference.state_dict(), path)
    features = TimmFeatures(CNN, pretrained=str(path))
    reference.reset_classifier(0)
    assert same_function(features.trunk, reference)
    slow = features.pretrained_parameters()
    assert slow and slow == list(features.trunk.parameters())
    assert no_network == []


def test_download_logs_where_from_and_a_failed_download_is_a_data_error(monkeypatch, caplog):
    """pretrained=download leaves the hub online and says where the weights come from (timm's
    own download is not run here: no network in tests)."""
    from huggingface_hub import constants

    seen = []

    def fail(name, pretrained, **kwargs):
        seen.append((name, pretrained, constants.HF_HUB_OFFLINE))
        raise OSError("Name or service not known")

    monkeypatch.setattr(timm, "create_model", fail)
    with caplog.at_level("INFO", logger="dann.models.timm_features"):
        with pytest.raises(DataError, match=f"could not download timm's {CNN} weights"):
            TimmFeatures(CNN, pretrained="download")
    assert seen == [(CNN, True, constants.HF_HUB_OFFLINE)]
    (record,) = caplog.records
    assert "timm/test_efficientnet.r160_in1k" in record.getMessage()
    assert constants.HF_HUB_CACHE in record.getMessage()


def test_weights_file_that_is_missing_or_does_not_fit_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="absent.pth: no such file"):
        TimmFeatures(CNN, pretrained=str(tmp_path / "absent.pth"))
    other = tmp_path / "resnet.pth"
    torch.save(timm.create_model("test_resnet", num_classes=0).state_dict(), other)
    with pytest.raises(CheckpointError, match=f"does not fit timm's {CNN}"):
        TimmFeatures(CNN, pretrained=str(other))
    state = timm.create_model(CNN, num_classes=0).state_dict()
    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("blocks.1")}, partial)
    with pytest.raises(CheckpointError, match=r"Missing keys \(blocks\.1"):
        TimmFeatures(CNN, pretrained=str(partial))


def test_bad_model_name_image_size_or_missing_timm_is_a_config_error(monkeypatch):
    with pytest.raises(ConfigError, match="close names: test_efficientnet") as error:
        TimmFeatures("test_eficientnet", pretrained=False)
    assert "not a timm model" in str(error.value)
    with pytest.raises(ConfigError, match="resnet50"):
        TimmFeatures("resnet5O", pretrained=False)
    with pytest.raises(ConfigError, match=f"no weights tagged 'in22k'.*{CNN}.r160_in1k"):
        TimmFeatures(f"{CNN}.in22k", pretrained=False)
    with pytest.raises(ConfigError, match="takes no img_size"):
        TimmFeatures(CNN, pretrained=False, image_size=32)
    with pytest.raises(ConfigError, match="timm has no pretrained weights for test_coatnet"):
        TimmFeatures("test_coatnet", pretrained=True)
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError
    with pytest.raises(ConfigError, match=r'pip install -e "\.\[timm\]"'):
        TimmFeatures(CNN, pretrained=False)


def test_train_py_runs_and_the_torchscript_export_equals_the_checkpoint(data_dir, tmp_path):
    timm_cnn = [
        "backbone=timm",
        f"backbone.features.name={CNN}",
        "backbone.features.pretrained=false",
    ]
    code = run_train_py(
        *timm_cnn,
        *PINNED,
        "trainer.fast_dev_run=true",
        "callbacks=none",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert code == 0

    # trained from a weights file; exported where that file is gone: the checkpoint holds it all
    weights = tmp_path / "weights.pth"
    torch.save(timm.create_model(CNN).state_dict(), weights)
    from_file = [*timm_cnn[:-1], f"backbone.features.pretrained={weights}"]
    ckpt = fast_dev_checkpoint(tmp_path / "ckpt", data_dir, *from_file)
    _, reference = reference_model(ckpt)
    weights.unlink()
    export = load_script("export")
    out = export.export(compose_config("export", f"ckpt={ckpt}", f"output={tmp_path}/m.pt"))
    pixels = torch.randint(0, 256, (5, 3, 28, 28), generator=torch.Generator().manual_seed(7))
    exported = export.run_torchscript(out, pixels.float())  # torch.jit.load, without its warning
    torch.testing.assert_close(exported, reference(pixels), atol=1e-5, rtol=0)
