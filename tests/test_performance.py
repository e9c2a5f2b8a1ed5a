"""The fast paths are the right paths: the in-memory training batches hold exactly the dataset's
items (every training image once per epoch), and the precision / memory-layout / compile options
train end to end. No timings are asserted (see scripts/bench_*.py for those)."""

import math
from collections import Counter

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

import dann.train
from dann.data import DomainAdaptationDataModule
from dann.train import build, run


def _datamodule(make_cfg, *overrides) -> DomainAdaptationDataModule:
    cfg = make_cfg(*overrides)
    dm = DomainAdaptationDataModule(**OmegaConf.to_container(cfg.dataset, resolve=True))
    dm.prepare_data()
    dm.setup("fit")
    return dm


def _index(inputs: torch.Tensor) -> dict[bytes, list[int]]:
    """Image bytes -> the indices holding that image (a list: duplicates are possible)."""
    out: dict[bytes, list[int]] = {}
    for i, image in enumerate(inputs):
        out.setdefault(image.numpy().tobytes(), []).append(i)
    return out


def _one_epoch(dm: DomainAdaptationDataModule) -> list[dict]:
    loader = dm.train_dataloader()
    return [batch for batch, *_ in loader]  # CombinedLoader yields (batch, batch_idx, loader_idx)


def _match(images: torch.Tensor, index: dict[bytes, list[int]]) -> list[int]:
    """The split index of each image of a batch; fails on an image that is not in the split."""
    found = []
    for image in images:
        key = image.numpy().tobytes()
        assert key in index, "a training batch holds an image that is not in the training split"
        found.append(index[key][0])
    return found


@pytest.fixture(scope="module")
def epoch64(tmp_path_factory, data_dir):
    """One epoch of the default MNIST -> MNIST-M training loader (64 + 64 per batch)."""
    from tests.conftest import compose_cfg

    cfg = compose_cfg([], tmp_path_factory.mktemp("cfg"), data_dir)
    dm = DomainAdaptationDataModule(**OmegaConf.to_container(cfg.dataset, resolve=True))
    dm.prepare_data()
    dm.setup("fit")
    return dm, _one_epoch(dm)


def test_fast_path_batches_are_the_dataset_items_and_normalise_to_x_over_255_minus_mean(epoch64):
    dm, batches = epoch64
    src, tgt = dm.data.source.train, dm.data.target.train
    src_index, tgt_index = _index(src.inputs), _index(tgt.inputs)
    # the mean the paper subtracts: per channel, over the pooled source + target training images
    mean = torch.cat([src.inputs, tgt.inputs]).double().mean(dim=(0, 2, 3)).div(255)
    for batch in batches[:5]:
        (x_s, y_s), x_t = batch["source"], batch["target"]
        assert x_s.dtype == x_t.dtype == torch.uint8 and y_s.dtype == torch.int64
        assert len(x_s) == len(y_s) == len(x_t) == dm.hparams.batch_size
        i_s, i_t = _match(x_s, src_index), _match(x_t, tgt_index)
        assert torch.equal(x_s, src.inputs[i_s]) and torch.equal(x_t, tgt.inputs[i_t])
        assert torch.equal(y_s, src.labels[i_s])  # labels travel with their images

        out = dm.on_after_batch_transfer(batch, 0)
        (n_s, ny_s), n_t = out["source"], out["target"]
        assert n_s.dtype == n_t.dtype == torch.float32 and torch.equal(ny_s, y_s)
        for raw, norm in ((x_s, n_s), (x_t, n_t)):
            expected = raw.double() / 255 - mean.view(1, -1, 1, 1)
            torch.testing.assert_close(norm.double(), expected, atol=1e-6, rtol=0)
            # pooled mean subtracted: a mean-zero image is not in [0, 1] any more
            assert norm.min() < 0


def _counts(images: torch.Tensor) -> Counter:
    """How often each distinct image occurs (by its bytes; duplicated images count twice)."""
    return Counter(image.numpy().tobytes() for image in images)


def _domain_images(batches: list[dict], domain: str) -> torch.Tensor:
    return torch.cat([b["source"][0] if domain == "source" else b["target"] for b in batches])


def test_every_training_image_once_per_epoch_with_drop_last(epoch64):
    dm, batches = epoch64
    bs = dm.hparams.batch_size
    for domain in ("source", "target"):
        split = getattr(dm.data, domain).train
        n, images = len(split.inputs), _domain_images(batches, domain)
        # the incomplete last batch is dropped: n // bs full batches
        assert len(images) == (n // bs) * bs > n - bs
        # no image more often than the split holds it (i.e. no repeats), none from elsewhere
        assert not _counts(images) - _counts(split.inputs), f"{domain}: an image repeated"
        order = _match(images, _index(split.inputs))
        assert order != sorted(order)  # shuffled


def test_every_training_image_exactly_once_when_the_batch_size_divides_the_split(make_cfg):
    dm = _datamodule(make_cfg)
    n_s, n_t = len(dm.data.source.train.inputs), len(dm.data.target.train.inputs)
    assert n_s == n_t  # MNIST-M is generated from the same MNIST digits
    bs = next(b for b in range(70, 10, -1) if n_s % b == 0)  # no remainder to drop
    dm = _datamodule(make_cfg, f"dataset.batch_size={bs}")
    batches = _one_epoch(dm)
    assert len(batches) == n_s // bs
    for domain in ("source", "target"):
        split = getattr(dm.data, domain).train
        seen = _counts(_domain_images(batches, domain))
        assert seen == _counts(split.inputs), f"{domain}: an image missing or repeated"


def _spy_build(monkeypatch) -> dict:
    """Run `dann.train.run` as is, keeping hold of the module and trainer it builds."""
    built = {"fit_metrics": {}}

    class KeepFitMetrics(pl.Callback):  # callback_metrics are replaced by trainer.test()
        def on_train_end(self, trainer, module):
            built["fit_metrics"].update(trainer.callback_metrics)

    def spy(cfg):
        datamodule, module, trainer = build(cfg)
        trainer.callbacks.append(KeepFitMetrics())
        built.update(datamodule=datamodule, module=module, trainer=trainer)
        return datamodule, module, trainer

    monkeypatch.setattr(dann.train, "build", spy)
    return built


def _check_finite(summary: dict, built: dict) -> None:
    """The run's test accuracies are what its weights score on the tested batches (recounted
    under the run's autocast), and its logged training loss is finite and the sum of its
    terms."""
    from conftest import recount_tested

    trainer = built["trainer"]
    bf16 = trainer.precision == "bf16-mixed"
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        recount = recount_tested(built["datamodule"], built["module"], trainer)
    for key in ("test/source_acc", "test/target_acc"):
        assert summary[key] == pytest.approx(recount[key], abs=1e-6), (key, summary)
    logged = {k: float(v) for k, v in built["fit_metrics"].items()}
    for key in ("train/loss", "train/label_loss", "train/domain_loss"):
        assert math.isfinite(logged[key]), (key, logged[key])
    total = logged["train/label_loss"] + logged["train/domain_loss"]
    assert logged["train/loss"] == pytest.approx(total, rel=1e-3), logged


FAST = ("trainer=cpu", "trainer.fast_dev_run=true", "callbacks=none", "dataset.eval_batch_size=64")


def test_bf16_mixed_trains_under_autocast_with_finite_metrics(make_cfg, monkeypatch):
    built = _spy_build(monkeypatch)
    dtypes, logged = [], {}
    cfg = make_cfg(*FAST, "trainer.precision=bf16-mixed")

    real_build = dann.train.build

    def build_with_hooks(c):
        datamodule, module, trainer = real_build(c)
        module.feature_extractor.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
        log_dict = module.log_dict

        def spy_log_dict(values, *args, **kwargs):
            logged.update(values)
            return log_dict(values, *args, **kwargs)

        module.log_dict = spy_log_dict
        return datamodule, module, trainer

    monkeypatch.setattr(dann.train, "build", build_with_hooks)
    summary = run(cfg)
    assert built["trainer"].precision == "bf16-mixed"
    assert torch.bfloat16 in dtypes  # the convolutions really ran under bf16 autocast
    assert all(p.dtype == torch.float32 for p in built["module"].parameters())  # fp32 master
    _check_finite(summary, built)
    # schedule scalars reach Lightning as CPU tensors, never as Python floats (which Lightning
    # would copy to the GPU every step, a device sync)
    for key in ("train/lambda", "train/lr", "train/progress"):
        assert isinstance(logged[key], torch.Tensor) and logged[key].device.type == "cpu", key


def test_channels_last_converts_weights_and_batches_and_trains(make_cfg, monkeypatch):
    built = _spy_build(monkeypatch)
    layouts = []
    real_build = dann.train.build

    def build_with_hooks(c):
        datamodule, module, trainer = real_build(c)
        conv = module.feature_extractor.net[0]
        conv.register_forward_pre_hook(
            lambda m, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last))
        )
        return datamodule, module, trainer

    monkeypatch.setattr(dann.train, "build", build_with_hooks)
    summary = run(make_cfg(*FAST, "backbone.channels_last=true"))
    module = built["module"]
    conv_weights = [p for p in module.parameters() if p.dim() == 4]
    assert conv_weights and all(
        w.is_contiguous(memory_format=torch.channels_last) for w in conv_weights
    )
    assert layouts and all(layouts)  # training and evaluation batches alike
    _check_finite(summary, built)
    assert module.hparams.backbone["channels_last"] is True  # a plain bool in the checkpoint


def test_channels_last_gives_the_same_outputs_as_the_default_layout(make_cfg):
    torch.manual_seed(0)
    _, plain, _ = build(make_cfg())
    torch.manual_seed(0)
    _, nhwc, _ = build(make_cfg("backbone.channels_last=true"))
    x = torch.randn(8, 3, 28, 28)
    assert not plain.feature_extractor.net[0].weight.is_contiguous(
        memory_format=torch.channels_last
    )
    torch.testing.assert_close(nhwc(x), plain(x), atol=1e-5, rtol=1e-5)
    assert nhwc.state_dict().keys() == plain.state_dict().keys()


def _compile_run(make_cfg, monkeypatch, setting: str):
    built = _spy_build(monkeypatch)
    torch._dynamo.reset()
    summary = run(make_cfg(*FAST, f"backbone.compile={setting}"))
    module = built["module"]
    for part in (module.feature_extractor, module.classifier):
        assert part._compiled_call_impl is not None  # compiled in place (nn.Module.compile)
    assert not any("_orig_mod" in k for k in module.state_dict())  # checkpoints unchanged
    _check_finite(summary, built)
    # the compiled network computes what the eager one does
    x = torch.randn(4, 3, 28, 28)
    module.eval()
    with torch.no_grad():
        eager = module.classifier._call_impl(module.feature_extractor._call_impl(x))
        torch.testing.assert_close(module(x), eager, atol=1e-4, rtol=1e-4)


def test_compile_trains_with_a_dynamo_backend(make_cfg, monkeypatch):
    # aot_eager: TorchDynamo graph capture + AOTAutograd, no C++ code generation (fast)
    _compile_run(make_cfg, monkeypatch, "aot_eager")


@pytest.mark.slow
def test_compile_trains_with_inductor(make_cfg, monkeypatch):
    # the default backend generates and compiles C++ on CPU: needs a C compiler, ~1 min cold
    import shutil

    if not (shutil.which("gcc") or shutil.which("cc") or shutil.which("clang")):
        pytest.skip("torch.compile's inductor backend needs a C compiler on CPU")
    _compile_run(make_cfg, monkeypatch, "true")


def test_step_scalars_are_fresh_at_every_step_the_logger_writes(make_cfg, monkeypatch):
    # per-step scalars go through self.log only where Lightning writes them (every
    # log_every_n_steps) and at the last batch of an epoch: what is written must be that step's
    from conftest import logged_scalars

    from dann.schedules import grl_sigmoid

    built = _spy_build(monkeypatch)
    cfg = make_cfg(
        "trainer=cpu",
        "callbacks=none",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=7",
        "trainer.limit_val_batches=0",
        "trainer.limit_test_batches=1",
        "trainer.log_every_n_steps=3",
    )
    run(cfg)
    written = logged_scalars(built["trainer"].logger.log_dir)
    # Lightning writes step metrics after steps g with (g + 1) % 3 == 0: 2 and 5 of 0..6
    for tag in ("train/loss", "train/label_loss", "train/domain_loss", "train/lambda", "train/lr"):
        assert sorted(written[tag]) == [2, 5], (tag, written.get(tag))
    for step in (2, 5):
        assert written["train/lambda"][step] == pytest.approx(grl_sigmoid(step / 7), abs=1e-6)
        assert written["train/progress"][step] == pytest.approx(step / 7, abs=1e-6)
    # and callback_metrics end the epoch with its last step's values (step 6)
    last = built["fit_metrics"]
    assert float(last["train/lambda"]) == pytest.approx(grl_sigmoid(6 / 7), abs=1e-6)
    assert {"train/source_acc", "train/domain_acc"} <= set(written)  # per epoch


def test_bf16_mixed_learns_as_well_as_fp32_in_a_short_run(tmp_path, data_dir):
    from conftest import compose_cfg

    short = [
        "callbacks=none",
        "logger=tensorboard",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=40",
        "optimizer=adam",
        "method=source_only",
        "trainer.limit_val_batches=0",
        "trainer.limit_test_batches=2",
        "dataset.eval_batch_size=500",
        "+trainer.enable_progress_bar=false",
    ]
    accuracy = {
        precision: run(
            compose_cfg([*short, f"trainer.precision={precision}"], tmp_path / precision, data_dir)
        )["test/source_acc"]
        for precision in ("32-true", "bf16-mixed")
    }
    assert accuracy["32-true"] > 0.5  # 40 Adam steps do learn the source (chance: 0.1)
    assert abs(accuracy["bf16-mixed"] - accuracy["32-true"]) < 0.05, accuracy
