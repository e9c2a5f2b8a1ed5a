"""Shared fixtures: one data cache per test session, and configs composed with Hydra's API."""

import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


def _method_class(name: str) -> type:
    import yaml
    from hydra.utils import get_class

    config = yaml.safe_load((CONFIGS / "method" / f"{name}.yaml").read_text())
    while "_target_" not in config:  # a variant of another method's config (cdan_e: cdan)
        parent = next(d for d in config["defaults"] if d != "_self_")
        config = yaml.safe_load((CONFIGS / "method" / f"{parent}.yaml").read_text())
    return get_class(config["_target_"])


_ALL_METHODS = sorted(path.stem for path in (CONFIGS / "method").glob("*.yaml"))
# every method= option that trains from scratch on a closed-set pair: the tests that say "every
# method runs on this pair" take them all. Not in it: the refinement stages (DIRT-T), which
# start from these runs' checkpoints (tests/test_method_dirt_t.py), and the methods of one
# label-set setting (PADA: partial, OSBP: open-set), run where the pair is cut to their setting
# (tests/test_label_sets.py)
METHODS = [
    m
    for m in _ALL_METHODS
    if not _method_class(m).refines and "closed" in _method_class(m).settings
]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """The embedded/generated data caches, built once per session (no network)."""
    path = tmp_path_factory.mktemp("data")
    os.environ["DANN_DATA_DIR"] = str(path)
    return path


@pytest.fixture(scope="session", autouse=True)
def trackers_write_to_tmp(tmp_path_factory):
    """logger=mlflow / wandb in any test write to a session folder, never into the checkout, and
    make no network calls."""
    tmp = tmp_path_factory.mktemp("trackers")
    os.environ.setdefault("MLFLOW_TRACKING_URI", (tmp / "mlruns").as_uri())
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("WANDB_DIR", str(tmp))
    os.environ.setdefault("WANDB_MODE", "offline")


# tests run in fp32 on every machine (trainer.precision=auto would pick bf16 on CPUs with native
# bf16 and change the numbers the learning tests were measured with); a test may override it
PINNED = ["trainer.precision=32-true"]


def compose_cfg(overrides: list[str], output_dir: Path, data_dir: Path) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=[*PINNED, *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.data_dir = str(data_dir)
    return cfg


def logged_scalars(log_dir) -> dict[str, dict[int, float]]:
    """Every scalar a run wrote to the TensorBoard folder `log_dir`: tag -> {step: value}.
    Read as TensorBoard reads it: all event files of the folder, and where a resumed run
    logs a step again, its value replaces the interrupted run's."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


# the tiny-network recipe of the toy learning tests (two-feature pairs each test registers and
# names with dataset.name=...): 40 epochs of Adam with the paper's annealing, a settled last
# iterate, the final weights tested
TOY_RECIPE = [
    "dataset=moons",
    "backbone.features.hidden=[16]",
    "callbacks=none",
    "~logger",
    "optimizer=adam",
    "optimizer.optim.lr=0.02",
    "optimizer.lr_annealing={alpha:10,beta:0.75}",
    "dataset.batch_size=50",
    "trainer.max_epochs=40",
    "trainer.check_val_every_n_epoch=100",
    "+trainer.enable_progress_bar=false",
    "+trainer.enable_model_summary=false",
]


@pytest.fixture
def make_cfg(tmp_path, data_dir):
    """make_cfg("method=source_only", ...) -> a composed config writing into tmp_path."""
    return lambda *overrides: compose_cfg(list(overrides), tmp_path / "run", data_dir)


def target_acc_by_method(make_cfg, tmp_path: Path, data: list[str], seed: int) -> dict:
    """test/target_acc of source_only and dann on the pair `data` (overrides), 10 epochs of
    Adam with a constant lambda, one seed: the 'DANN beats source-only' tests of the non-image
    pairs."""
    from dann.train import run

    acc = {}
    for method in ("source_only", "dann"):
        cfg = make_cfg(
            *data,
            "callbacks=none",
            "optimizer=adam",
            "schedule=constant",
            "trainer.max_epochs=10",
            "trainer.check_val_every_n_epoch=10",
            f"seed={seed}",
            f"method={method}",
        )
        cfg.paths.output_dir = str(tmp_path / method)
        acc[method] = run(cfg)["test/target_acc"]
    return acc


def run_keeping_model(cfg: DictConfig):
    """dann.train.run(cfg) -> (summary, datamodule, module, trainer) it built; the module holds
    the weights the run tested."""
    from unittest import mock

    import dann.train

    build, built = dann.train.build, []

    def keep(c: DictConfig):
        built.append(build(c))
        return built[-1]

    with mock.patch.object(dann.train, "build", keep):
        summary = dann.train.run(cfg)
    return summary, *built[0]


def run_and_recount(cfg: DictConfig) -> tuple[dict, dict]:
    """dann.train.run(cfg)'s summary, and its test accuracies recounted here, apart from the
    module's metrics ({"test/source_acc": ..., "test/target_acc": ...}, see `recount_accuracy`):
    on the batches the run's trainer.test saw, with the weights it tested."""
    summary, datamodule, module, trainer = run_keeping_model(cfg)
    return summary, recount_tested(datamodule, module, trainer)


def recount_tested(datamodule, module, trainer) -> dict[str, float | None]:
    """{"test/<domain>_acc": accuracy} recounted on the batches trainer.test saw."""
    recount = recount_accuracy(module, datamodule, "test", trainer.num_test_batches)
    return {f"test/{domain}_acc": acc for domain, acc in recount.items()}


def module_from_checkpoint(ckpt: dict):
    """The DALightningModule a loaded checkpoint (dict) holds, in eval mode."""
    from dann.module import DALightningModule

    module = DALightningModule(**ckpt["hyper_parameters"])
    module.load_state_dict(ckpt["state_dict"])
    return module.eval()


def recount_accuracy(module, datamodule, split: str, batches=None) -> dict[str, float | None]:
    """Each domain's accuracy on `split` counted by hand: the first batches[i] batches of loader
    i (source, target; default all), preprocessed by the datamodule as evaluation is, predicted
    as argmax of module(x, domain), compared with the labels; None where a domain has no labels."""
    import torch

    loaders = getattr(datamodule, f"{split}_dataloader")()
    module.eval()
    out = {}
    with torch.no_grad():
        for index, (domain, loader) in enumerate(zip(("source", "target"), loaders, strict=True)):
            right = seen = 0
            labelled = True
            for i, batch in enumerate(loader):
                if batches is not None and i >= batches[index]:
                    break
                x, y = datamodule.on_after_batch_transfer(batch, index)
                right += int((module(x, index).argmax(dim=1) == y).sum())
                seen += len(y)
                labelled &= bool((y >= 0).all())  # UNLABELLED is -1
            assert seen > 0, f"no {split} batch of the {domain} domain"
            out[domain] = right / seen if labelled else None
    return out


def load_script(name: str):
    """scripts/<name>.py as a module (scripts/ is not a package)."""
    import importlib.util

    path = ROOT / "scripts" / f"{name}.py"
    module_spec = importlib.util.spec_from_file_location(f"scripts_{name}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def compose_config(name: str, *overrides: str, hydra: bool = False) -> DictConfig:
    """configs/<name>.yaml (train, predict, export, ...) composed with `overrides`; `hydra`
    also composes the hydra node (sweeper, run dirs)."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(name, overrides=list(overrides), return_hydra_config=hydra)


def run_script(
    script: str, *args: str, data_dir: Path | None = None, threads: int | None = None
) -> subprocess.CompletedProcess:
    """`python <script> <args>` (a path from the repository root: "train.py",
    "scripts/evaluate.py") in a subprocess, reading the session's data caches (data_dir) and
    with `threads` torch threads if given."""
    env = dict(os.environ)
    if data_dir is not None:
        env["DANN_DATA_DIR"] = str(data_dir)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, str(ROOT / script), *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def fast_dev_checkpoint(out: Path, data_dir: Path, *overrides: str) -> Path:
    """A checkpoint written after one training step (fast_dev_run)."""
    from dann.train import build

    cfg = compose_cfg(["trainer.fast_dev_run=true", "callbacks=none", *overrides], out, data_dir)
    datamodule, module, trainer = build(cfg)
    trainer.fit(module, datamodule=datamodule)
    path = out / "model.ckpt"
    trainer.save_checkpoint(path)
    return path


def reference_model(path: Path):
    """The checkpoint's module, and its logits for uint8 pixels (N, C, 28, 28) of `domain` (1:
    target), preprocessed here as training does: / 255, minus the saved per-channel mean."""
    import torch

    from dann.module import DALightningModule

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    module = DALightningModule(**ckpt["hyper_parameters"])
    module.load_state_dict(ckpt["state_dict"])
    module.eval()
    mean = ckpt["DomainAdaptationDataModule"]["mean"]

    @torch.no_grad()
    def logits(pixels: torch.Tensor, domain: int = 1) -> torch.Tensor:
        x = pixels.float() / 255
        if mean is not None:
            x = x - torch.tensor(mean).view(1, -1, 1, 1)
        return module(x, domain)

    return module, logits


def train_py(*args: str) -> int:
    """`python train.py *args` in this process (Hydra and all); its exit status."""
    argv = sys.argv
    sys.argv = ["train.py", *args]
    try:
        runpy.run_path(str(ROOT / "train.py"), run_name="__main__")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = argv
    return 0
