"""`trainer.precision=auto` (dann/precision.py): bf16-mixed (+ channels-last) where the device
runs bf16 natively, fp32 elsewhere, with the capability faked both ways; explicit settings win."""

import logging

import pytest
import torch
import yaml

from dann import precision
from dann.train import build
from tests.conftest import CONFIGS

ZEN4 = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni\n"
ZEN2 = "processor\t: 0\nflags\t\t: fpu sse avx2 fma\n"
SAPPHIRE = "flags\t\t: avx512f amx_bf16 amx_tile avx512_bf16\n"


def test_cpu_flags_are_read_from_cpuinfo():
    assert precision.cpu_bf16_flags(ZEN4) == ["avx512_bf16"]
    assert precision.cpu_bf16_flags(SAPPHIRE) == ["amx_bf16", "avx512_bf16"]
    assert precision.cpu_bf16_flags(ZEN2) == []


@pytest.fixture
def cpu_with(monkeypatch):
    read = precision.cpu_bf16_flags

    def fake(cpuinfo: str):
        monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: read(cpuinfo))
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    return fake


def test_auto_picks_bf16_on_a_cpu_with_native_bf16_and_fp32_without(cpu_with):
    cpu_with(ZEN4)
    assert precision.auto_precision("cpu")[0] == "bf16-mixed"
    assert precision.auto_precision("auto")[0] == "bf16-mixed"
    cpu_with(ZEN2)
    chosen, why = precision.auto_precision("cpu")
    assert chosen == "32-true" and "no native bf16" in why


@pytest.fixture
def gpu(monkeypatch):
    """A fake CUDA device: `gpu(name, capability)`. `is_bf16_supported` says yes whatever the
    card, as torch's does by default (it counts emulation), so only the capability decides."""

    def fake(name: str, capability: tuple[int, int]):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: name)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *_: capability)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *_, **__: True)

    return fake


@pytest.mark.parametrize("name, capability", [("Fake A100", (8, 0)), ("Fake H100", (9, 0))])
def test_auto_on_cuda_picks_bf16_from_compute_capability_8(gpu, name, capability):
    gpu(name, capability)
    assert precision.auto_precision("gpu") == ("bf16-mixed", f"{name} supports bf16")
    assert precision.auto_precision("auto")[0] == "bf16-mixed"


@pytest.mark.parametrize("name, capability", [("Fake V100", (7, 0)), ("Fake T4", (7, 5))])
def test_auto_on_cuda_ignores_emulated_bf16(gpu, name, capability):
    gpu(name, capability)  # is_bf16_supported() says True: emulation, not native
    chosen, why = precision.auto_precision("auto")
    assert chosen == "32-true" and "16-mixed" in why and name in why


def test_build_resolves_auto_and_says_why_in_one_line(make_cfg, cpu_with, caplog):
    cpu_with(ZEN4)
    with caplog.at_level(logging.INFO, logger="dann.precision"):
        _, module, trainer = build(make_cfg("trainer.precision=auto"))
    assert trainer.precision == "bf16-mixed" and module.channels_last
    lines = [r.getMessage() for r in caplog.records if "precision=auto" in r.getMessage()]
    assert len(lines) == 1 and "bf16-mixed + channels_last" in lines[0]
    assert "avx512_bf16" in lines[0]
    cpu_with(ZEN2)
    _, module, trainer = build(make_cfg("trainer.precision=auto"))
    assert trainer.precision == "32-true" and not module.channels_last


def test_explicit_settings_win_over_auto(make_cfg, cpu_with):
    cpu_with(ZEN4)
    _, module, trainer = build(make_cfg("trainer.precision=32-true"))
    assert trainer.precision == "32-true" and not module.channels_last
    _, module, trainer = build(make_cfg("trainer.precision=auto", "backbone.channels_last=false"))
    assert trainer.precision == "bf16-mixed" and not module.channels_last
    cpu_with(ZEN2)
    _, module, _ = build(make_cfg("trainer.precision=auto", "backbone.channels_last=true"))
    assert module.channels_last


def test_auto_is_the_default_of_every_trainer():
    default = yaml.safe_load((CONFIGS / "trainer" / "default.yaml").read_text())
    assert default["precision"] == "auto"
    for option in ("cpu", "gpu", "ddp"):
        assert "precision" not in yaml.safe_load(
            (CONFIGS / "trainer" / f"{option}.yaml").read_text()
        )
