"""A newcomer's first hour: a first run that costs what its training costs and prints nothing it
need not; the conventions a Lightning + Hydra user reaches for (debug=, tags=, train=/test=,
extras.print_config, configs/local/, early stopping and rich progress bar options, eval.py);
and a short run of the default recipe that learns."""

import json
import logging
import shutil
import subprocess
import sys
import warnings

import pytest
import torch
from conftest import (
    CONFIGS,
    ROOT,
    compose_config,
    fast_dev_checkpoint,
    load_script,
    run_keeping_model,
    run_script,
)
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from test_folder_pairs import write_image_folder

from dann.errors import ConfigError

ANALYSIS = {"proxy_a_distance": "ProxyADistance", "feature_tsne": "FeatureTSNE"}
# what a normal run printed before, each preventable or filtered with a reason
# (dann/known_warnings.py, dann/analysis.py, dann/data/datamodule.py, dann/callbacks/summary.py)
NOISE = {
    "litlogger": "Lightning's tip to install litlogger",
    "LeafSpec": "torch's LeafSpec deprecation, raised by Lightning's own code",
    "ConvergenceWarning": "PAD's SVM stopping at max_iter",
    "FLOPs": "an all-zero FLOPs column in the model summary",
    "pin_memory": "pin_memory without an accelerator",
    "exists and is not empty": "the checkpoint directory of the run being resumed",
    "not supported by the model summary": "bf16-mixed 'not supported' by the summary",
    "smaller than the logging interval": "fewer batches than log_every_n_steps",
}
TINY = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
]


def assert_quiet(proc: subprocess.CompletedProcess) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    noise = {text: why for text, why in NOISE.items() if text in out}
    assert not noise, noise
    return out


# ---- 1. analysis is opt-in; end-of-run work announces itself ----------------------------------


def test_default_callbacks_leave_the_analysis_to_callbacks_analysis(make_cfg):
    from dann.train import build

    default = compose_config("train")
    analysis = compose_config("train", "callbacks=analysis")
    assert not any(default.callbacks[name] for name in ANALYSIS)  # {}: off
    for name, cls in ANALYSIS.items():
        assert analysis.callbacks[name]._target_ == f"dann.callbacks.{cls}"
    rest = {k: v for k, v in analysis.callbacks.items() if k not in ANALYSIS}
    assert rest == {k: v for k, v in default.callbacks.items() if k not in ANALYSIS}
    # commands written when they were on by default still compose
    compose_config("train", *(f"~callbacks.{name}" for name in ANALYSIS))
    _, _, trainer = build(make_cfg())
    names = {type(c).__name__ for c in trainer.callbacks}
    assert not names & set(ANALYSIS.values()) and "SelectionValidators" in names


def test_bench_first_run_compares_against_the_checkpoint_callbacks_only(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))  # the script imports bench_common
    bench = load_script("bench_first_run")
    overrides = bench.checkpoint_only_overrides(str(tmp_path))
    left = compose_config("train", *overrides).callbacks
    assert {k for k, v in left.items() if v} == {
        "best_checkpoint",
        "last_checkpoint",
        "interrupt_checkpoint",
    }


def test_normal_run_and_resume_print_no_preventable_warning(tmp_path, data_dir):
    run_dir = tmp_path / "run"
    common = [*TINY, "trainer.log_every_n_steps=1", f"hydra.run.dir={run_dir}"]
    # PAD on 200 inputs per domain: liblinear's dual solver stopped at max_iter there
    out = assert_quiet(
        run_script(
            "train.py",
            "callbacks=analysis",
            "callbacks.proxy_a_distance.max_samples=200",
            "callbacks.feature_tsne.max_samples=100",
            *common,
            data_dir=data_dir,
            threads=1,
        )
    )
    # what runs after training says so before it starts
    for line in ("proxy A-distance at the end of training", "t-SNE figure at the end of training"):
        assert f"{line} (up to" in out and f"{line}: done in" in out
    assert "testing " in out and "on the test sets" in out
    assert_quiet(
        run_script("train.py", *common, "ckpt_path=last", "trainer.max_epochs=2", data_dir=data_dir)
    )


def test_folder_pair_run_does_not_pin_memory_without_an_accelerator(tmp_path, data_dir):
    if torch.cuda.is_available():
        pytest.skip("pinning is right with a GPU")
    src = write_image_folder(tmp_path / "photos", n=3)
    tgt = write_image_folder(tmp_path / "sketches", n=2)
    assert_quiet(
        run_script(
            "train.py",
            "debug=fdr",
            "dataset=folder",  # pin_memory: true, for GPUs
            f"dataset.source_root={src}",
            f"dataset.target_root={tgt}",
            "dataset.num_classes=3",
            "dataset.image_size=32",
            "dataset.resize=36",
            "dataset.batch_size=4",
            "dataset.eval_batch_size=8",
            "dataset.num_workers=0",
            f"hydra.run.dir={tmp_path / 'run'}",
            data_dir=data_dir,
            threads=1,
        )
    )


# ---- 3. lightning-hydra-template conventions ---------------------------------------------------


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ("fdr", {"fast_dev_run": True}),
        ("overfit", {"overfit_batches": 3}),
        ("limit", {"limit_train_batches": 5, "limit_val_batches": 2, "limit_test_batches": 2}),
        ("profiler", {"profiler": "simple", "max_epochs": 1}),
    ],
)
def test_debug_options_compose(option, expected):
    trainer = compose_config("train", f"debug={option}").trainer
    assert {k: trainer[k] for k in expected} == expected


def test_debug_fdr_runs_one_batch_of_each_loop(make_cfg):
    summary, _, _, trainer = run_keeping_model(make_cfg("debug=fdr"))
    assert trainer.global_step == 1
    assert trainer.num_test_batches == [1, 1]
    assert summary["test/source_acc"] is not None


def test_debug_overfit_trains_on_the_same_batches_every_epoch(make_cfg, recwarn):
    import pytorch_lightning as pl

    from dann.train import build

    class Labels(pl.Callback):
        seen: dict[int, list] = {}

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.seen.setdefault(trainer.current_epoch, []).append(batch["source"][1].tolist())

    cfg = make_cfg("debug=overfit", "trainer.max_epochs=2", "callbacks=none")
    datamodule, module, trainer = build(cfg)
    trainer.callbacks.append(Labels())
    trainer.fit(module, datamodule=datamodule)
    first, second = Labels.seen[0], Labels.seen[1]
    assert len(first) == 3 and first == second  # the same 3 batches, in the same order
    assert first[0] != first[1]
    assert not [w for w in recwarn if "shuffling" in str(w.message)]


def test_tags_are_logged_with_the_hparams_and_saved_in_the_run_dir(make_cfg, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    from dann.train import run

    cfg = make_cfg(*TINY, "callbacks=none", "tags=[baseline,first_try]")
    summary = run(cfg)
    out = tmp_path / "run"
    assert (out / "tags.log").read_text().split() == ["baseline", "first_try"]
    assert json.loads((out / "summary.json").read_text())["tags"] == ["baseline", "first_try"]
    events = EventAccumulator(summary["log_dir"])
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["tags"].string_value == "baseline,first_try"


def test_one_tag_may_be_given_without_brackets():
    from dann.extras import run_tags

    assert run_tags(compose_config("train", "tags=solo")) == ["solo"]
    assert run_tags(compose_config("train")) == []


def test_train_false_tests_the_given_checkpoint(make_cfg, tmp_path):
    from dann.train import run

    trained = run(make_cfg(*TINY))
    cfg = make_cfg(*TINY, "train=false", f"ckpt_path={trained['checkpoint']}")
    cfg.paths.output_dir = str(tmp_path / "test_only")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary, _, _, trainer = run_keeping_model(cfg)
    # neither "dirpath has changed" (checkpoint callbacks) nor "provide the callbacks"
    assert not [w for w in caught if "ckpt" in str(w.message) or "dirpath" in str(w.message)]
    assert trainer.global_step == 0  # nothing trained
    for key in ("test/source_acc", "test/target_acc", "selected_val/source_1se_step"):
        assert summary[key] == pytest.approx(trained[key], abs=1e-6), key
    assert not (tmp_path / "test_only" / "checkpoints").exists()


def test_train_false_without_a_checkpoint_is_refused(make_cfg):
    from dann.train import run

    with pytest.raises(ConfigError, match="ckpt_path="):
        run(make_cfg("train=false"))


def test_test_false_skips_testing(make_cfg):
    summary, _, _, trainer = run_keeping_model(make_cfg("debug=fdr", "test=false"))
    assert trainer.global_step == 1
    assert summary["test/source_acc"] is None and summary["test/target_acc"] is None


def test_extras_print_config_prints_the_resolved_tree(make_cfg, capsys):
    from dann.train import run

    run(make_cfg("debug=fdr", "extras.print_config=true"))
    out = capsys.readouterr().out
    assert "CONFIG" in out and "mnist_to_mnistm" in out
    assert "in_channels: 3" in out  # resolved (${dataset.channels})


def test_print_config_without_rich_logs_plain_yaml(make_cfg, monkeypatch, caplog):
    from dann.extras import print_config

    monkeypatch.setitem(sys.modules, "rich", None)  # import rich -> ImportError
    with caplog.at_level(logging.INFO, logger="dann.extras"):
        print_config(make_cfg())
    assert "config:" in caplog.text and "name: mnist_to_mnistm" in caplog.text


def test_local_config_is_optional_and_git_ignored(tmp_path):
    configs = tmp_path / "configs"
    shutil.copytree(CONFIGS, configs)
    local = configs / "local" / "default.yaml"
    local.unlink(missing_ok=True)  # a developer's own, if any
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        assert compose("train").seed == 42  # no local config: fine
    local.write_text("# @package _global_\nseed: 7\ndataset:\n  num_workers: 3\n")
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        cfg = compose("train")
    assert cfg.seed == 7 and cfg.dataset.num_workers == 3
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "configs/local/default.yaml"], cwd=ROOT, check=False
    )
    assert ignored.returncode == 0, "configs/local/default.yaml must be git-ignored"


def test_early_stopping_option_monitors_the_selection_metric(make_cfg):
    from pytorch_lightning.callbacks import EarlyStopping

    from dann.train import build

    cfg = make_cfg("callbacks=[default,early_stopping]", "selection=reverse_val")
    assert cfg.callbacks.best_checkpoint  # added to the defaults, not in place of them
    _, _, trainer = build(cfg)
    (stop,) = [c for c in trainer.callbacks if isinstance(c, EarlyStopping)]
    assert stop.monitor == "val/reverse_acc" and stop.mode == "max"
    raw = OmegaConf.load(CONFIGS / "callbacks" / "early_stopping.yaml")
    assert OmegaConf.to_container(raw)["early_stopping"]["monitor"] == "${selection.metric}"


def test_rich_progress_bar_option_replaces_the_default_bar(make_cfg):
    from pytorch_lightning.callbacks import RichProgressBar

    from dann.callbacks import ProgressBar
    from dann.train import build

    _, _, trainer = build(make_cfg("callbacks=[default,rich_progress_bar]"))
    assert isinstance(trainer.progress_bar_callback, RichProgressBar)
    assert not [c for c in trainer.callbacks if isinstance(c, ProgressBar)]


def test_eval_py_takes_ckpt_path(tmp_path, data_dir):
    ckpt = fast_dev_checkpoint(tmp_path / "train", data_dir)
    out = tmp_path / "eval"
    proc = run_script("eval.py", f"ckpt_path={ckpt}", f"hydra.run.dir={out}", data_dir=data_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["checkpoint"] == str(ckpt) and metrics["source"]["n"] > 0


# ---- 4. a short run of the default recipe learns -----------------------------------------------


def short_run(make_cfg, tmp_path, seed: int, *overrides: str) -> float:
    """test/source_acc after 40 steps of the default recipe (paper net, SGD 0.01 + mu_p over the
    40 steps, lambda_p), tested on 512 source test images."""
    from dann.train import run

    cfg = make_cfg(
        "callbacks=none",
        "logger=csv",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=40",
        "trainer.limit_val_batches=0",
        "trainer.limit_test_batches=1",
        f"seed={seed}",
        *overrides,
    )
    cfg.paths.output_dir = str(tmp_path / f"seed{seed}{'_'.join(overrides)}")
    return run(cfg)["test/source_acc"]


def test_default_recipe_learns_in_a_few_dozen_steps(make_cfg, tmp_path):
    """With PyTorch's default initialisation (backbone.init=pytorch) the paper net's logits start
    tiny and 40 steps stay at chance (~0.1); with He initialisation (lenet_dann's default) each
    seed is well above it (~0.8 measured). ~5 s a run on 1 CPU thread."""
    accuracies = [short_run(make_cfg, tmp_path, seed) for seed in (1, 2, 3)]
    assert min(accuracies) > 0.6, accuracies
    assert short_run(make_cfg, tmp_path, 1, "backbone.init=pytorch") < 0.3  # the cause


def test_he_init_scales_every_conv_and_linear():
    from torch import nn

    from dann.models.init import init_weights

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 64, 5), nn.ReLU(), nn.Flatten(), nn.Linear(400, 300))
    init_weights([net], "he")
    for layer in (net[0], net[3]):
        fan_in = layer.weight[0].numel()
        assert layer.weight.std().item() == pytest.approx((2 / fan_in) ** 0.5, rel=0.1)
        assert not layer.bias.any()
    with pytest.raises(ConfigError, match="he"):
        init_weights([net], "xavier")
