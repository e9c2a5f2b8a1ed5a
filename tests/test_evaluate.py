"""scripts/evaluate.py on a checkpoint written after a fast_dev_run."""

import json
import subprocess
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
import torch
from conftest import (
    compose_cfg,
    compose_config,
    load_script,
    module_from_checkpoint,
    recount_accuracy,
    run_script,
)

from dann.data import DomainAdaptationDataModule
from dann.errors import reported_as_exit
from dann.train import build


def evaluate_py(*args: str, data_dir: Path) -> subprocess.CompletedProcess:
    return run_script("scripts/evaluate.py", *args, data_dir=data_dir)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, data_dir) -> tuple[Path, dict]:
    """A checkpoint of a fast_dev_run, and what trainer.test reports for that model."""
    out = tmp_path_factory.mktemp("fdr")
    cfg = compose_cfg(["trainer.fast_dev_run=true", "callbacks=none"], out, data_dir)
    datamodule, module, trainer = build(cfg)
    trainer.fit(module, datamodule=datamodule)
    path = out / "model.ckpt"
    trainer.save_checkpoint(path)
    trainer.limit_test_batches = 1.0  # the whole test split, as evaluate.py reads it
    tested = trainer.test(module, datamodule=datamodule, verbose=False)
    return path, {k: v for per_loader in tested for k, v in per_loader.items()}


def test_evaluate_reports_the_accuracy_trainer_test_reports(checkpoint, tmp_path, data_dir):
    path, tested = checkpoint
    out = tmp_path / "eval"
    proc = evaluate_py(f"ckpt={path}", f"hydra.run.dir={out}", data_dir=data_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "mnist_to_mnistm" and metrics["split"] == "test"
    for domain in ("source", "target"):
        r = metrics[domain]
        assert r["accuracy"] == pytest.approx(tested[f"test/{domain}_acc"], abs=1e-6)
        assert len(r["per_class_accuracy"]) == 10
        confusion = r["confusion_matrix"]
        assert sum(map(sum, confusion)) == r["n"] == 1000
        correct = sum(confusion[i][i] for i in range(10))
        assert correct / r["n"] == pytest.approx(r["accuracy"], abs=1e-6)
        assert plt.imread(out / f"confusion_{domain}.png").ndim == 3
    assert "target test: accuracy" in proc.stderr + proc.stdout


def test_evaluate_on_another_pair_keeps_the_models_input_format(checkpoint, tmp_path, data_dir):
    path, _ = checkpoint
    out = tmp_path / "eval"
    proc = evaluate_py(
        f"ckpt={path}",
        "dataset=mnist_to_digits",
        "split=val",
        f"hydra.run.dir={out}",
        data_dir=data_dir,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "mnist_to_digits" and metrics["split"] == "val"
    # recounted here: the grey 8x8 digits as the model's 3-channel 28x28 input, minus the
    # training run's mean, classified by the checkpoint's model
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    trained_on = ckpt["datamodule_hyper_parameters"]
    assert (trained_on["channels"], trained_on["image_size"]) == (3, 28)
    datamodule = DomainAdaptationDataModule(
        "mnist_to_digits", data_dir=str(data_dir), channels=3, image_size=28
    )
    datamodule.setup("test")
    datamodule.load_state_dict(ckpt["DomainAdaptationDataModule"])
    recount = recount_accuracy(module_from_checkpoint(ckpt), datamodule, "val")
    for domain in ("source", "target"):
        assert metrics[domain]["n"] == len(getattr(datamodule.data, domain).val)
        assert metrics[domain]["accuracy"] == pytest.approx(recount[domain], abs=1e-6), domain


def test_evaluate_missing_checkpoint_says_so(tmp_path, capsys):
    script = load_script("evaluate")
    with pytest.raises(SystemExit) as exit_, reported_as_exit():  # as evaluate.py's main
        script._evaluate(compose_config("evaluate", f"ckpt={tmp_path}/nope.ckpt"))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "nope.ckpt" in err and "Traceback" not in err


def test_evaluate_normalises_each_domain_with_its_own_statistics(make_cfg):
    """With per-domain BatchNorm statistics, source images must be evaluated as source."""
    import torch

    script = load_script("evaluate")

    class Recorder(torch.nn.Module):
        class_ids = list(range(10))  # no label sets: the pair's classes
        open_set = None

        def __init__(self):
            super().__init__()
            self.domains = []

        @property
        def device(self):
            return torch.device("cpu")

        def forward(self, x, domain=1):
            self.domains.append(domain)
            return torch.zeros(len(x), 10)

    datamodule, _, _ = build(make_cfg("trainer.fast_dev_run=true"))
    datamodule.setup("test")
    model = Recorder()
    script.evaluate(model, datamodule, "test")
    assert set(model.domains) == {0, 1}  # source batches as domain 0, target as domain 1


def test_evaluate_with_a_dataset_key_keeps_the_checkpoints_pair(tmp_path, data_dir):
    # `dataset.<key>=` (e.g. dataset.root=/new) changes a field of the training pair; it must not
    # switch to train.yaml's default pair (mnist_to_mnistm)
    cfg = compose_cfg(
        ["dataset=mnist_to_digits", "trainer.fast_dev_run=true", "callbacks=none"],
        tmp_path / "run",
        data_dir,
    )
    datamodule, module, trainer = build(cfg)
    trainer.fit(module, datamodule=datamodule)
    path = tmp_path / "digits.ckpt"
    trainer.save_checkpoint(path)
    out = tmp_path / "eval"
    proc = evaluate_py(
        f"ckpt={path}", "dataset.split_seed=3", f"hydra.run.dir={out}", data_dir=data_dir
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "metrics.json").read_text())["dataset"] == "mnist_to_digits"


def test_evaluate_an_open_set_checkpoint_scores_unknown_as_a_class(tmp_path, data_dir):
    """Source classes 0-5 (the model's), target all ten: 6-9 are "unknown", the 7th class."""
    out = tmp_path / "fdr"
    overrides = ["trainer.fast_dev_run=true", "callbacks=none", "method=osbp"]
    cfg = compose_cfg([*overrides, "dataset.source_classes=[0,1,2,3,4,5]"], out, data_dir)
    datamodule, module, trainer = build(cfg)
    trainer.fit(module, datamodule=datamodule)
    trainer.limit_test_batches = 1.0
    tested = {
        k: v
        for r in trainer.test(module, datamodule=datamodule, verbose=False)
        for k, v in r.items()
    }
    module.eval()  # evaluate.py's own function, on the same model and test split, in-process
    target = load_script("evaluate").evaluate(module, datamodule, "test")["target"]
    assert len(target["per_class_accuracy"]) == 7 and target["n"] == 1000
    assert target["accuracy"] == pytest.approx(tested["test/target_acc"], abs=1e-6)
    # OS (mean per-class accuracy, unknown included) as the run logged it
    assert sum(target["per_class_accuracy"]) / 7 == pytest.approx(
        tested["test/target_os"], abs=1e-6
    )
