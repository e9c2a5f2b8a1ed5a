"""Bad input from the command line: each kind fails fast with a message naming the field, file
or choices, and the exit status says so (2: dann's own check, 1: Hydra's), no stack trace.

Each case runs the real `train.py` script (`runpy`, as `python train.py ...` would, Hydra and
all) inside the test process, so torch is imported once for all of them; its exit status is the
SystemExit code, its message what reached stderr."""

from pathlib import Path

import pytest
import torch
from conftest import train_py
from test_checkpoints import module_for
from test_data import write_mnist_raw
from test_folder_pairs import write_image_folder

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["trainer.max_epochs=1", "trainer.limit_train_batches=4", "trainer.limit_val_batches=1"]


def write_truncated_mnist(root: Path) -> Path:
    images = write_mnist_raw(root) / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:5000])  # a download cut short
    return root


# name -> (overrides or a function of tmp dir returning them, exit status, texts in stderr)
CASES = {
    "unknown_dataset": (
        ["dataset=mnist_to_nowhere"],
        1,
        ["dataset/mnist_to_nowhere", "mnist_to_mnistm"],
    ),
    "unknown_backbone": (["backbone=lenet9"], 1, ["backbone/lenet9", "lenet_dann"]),
    "unknown_method": (["method=dnn"], 1, ["method/dnn", "dann", "cdan"]),
    # a misspelt existing key: the closest key, never Hydra's "use +trainer.max_epoch=3"
    "key_typo": (
        ["trainer.max_epoch=3"],
        2,
        ["unknown config key trainer.max_epoch; did you mean trainer.max_epochs?"],
    ),
    "plus_key_typo": (
        ["+trainer.max_epoch=3"],
        2,
        ["unknown config key trainer.max_epoch", "did you mean trainer.max_epochs?"],
    ),
    "plus_dataset_key_typo": (["+dataset.batchsize=8"], 2, ["did you mean dataset.batch_size?"]),
    "negative_lambda": (
        ["schedule.lambda_max=-1"],
        2,
        ["schedule.lambda_max=-1 is out of range", ">= 0"],
    ),
    "zero_batch_size": (
        ["dataset.batch_size=0"],
        2,
        ["dataset.batch_size=0 is out of range", ">= 1"],
    ),
    "zero_gamma": (["schedule.gamma=0"], 2, ["schedule.gamma=0 is out of range", "> 0"]),
    "unknown_selection_metric": (
        ["selection.metric=val/target_f1"],
        2,
        ["selection.metric='val/target_f1'", "val/reverse_acc", "val/dev_risk"],
    ),
    "zero_lr": (["optimizer.optim.lr=0"], 2, ["optimizer.optim.lr=0 is out of range", "> 0"]),
    "missing_dataset_root": (
        lambda d: [f"dataset.root={d}/nowhere"],
        2,
        ["MNIST not found under", "train-images-idx3-ubyte", "drop dataset.root"],
    ),
    "truncated_data_file": (
        lambda d: [f"dataset.root={write_truncated_mnist(d / 'cut')}", *QUICK],
        2,
        ["could not be read", "re-download"],
    ),
    "mismatched_class_folders": (
        lambda d: [
            "dataset=folder",
            f"dataset.source_root={write_image_folder(d / 'src', ['a', 'b', 'c'], n=2)}",
            f"dataset.target_root={write_image_folder(d / 'tgt', ['a', 'b', 'd'], n=2)}",
            "dataset.num_classes=3",
            *QUICK,
        ],
        2,
        ["only in source", "'c'", "only in target", "'d'"],
    ),
    "missing_checkpoint": (
        lambda d: [f"ckpt_path={d}/gone.ckpt"],
        2,
        ["checkpoint not found", "gone.ckpt"],
    ),
    "checkpoint_of_another_backbone": (
        lambda d: [f"ckpt_path={d / 'bn.ckpt'}"],
        2,
        ["does not fit this model", "unexpected: ", "running_mean"],
    ),
    "resume_without_checkpoint": (
        ["ckpt_path=last"],
        2,
        ["ckpt_path=last: no checkpoint in", "hydra.run.dir=<its run dir>"],
    ),
    "nan_loss": (
        [
            "optimizer.optim.lr=1e6",
            "callbacks.divergence_guard.check_every_n_steps=1",
            *QUICK,
            "~callbacks.feature_tsne",
            "~callbacks.proxy_a_distance",
        ],
        2,
        [
            "the training loss became non-finite (NaN or inf) at step",
            "lower optimizer.optim.lr or schedule.lambda_max",
        ],
    ),
}


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("bad")
    state = {"state_dict": module_for_bn().state_dict(), "hyper_parameters": {}, "loops": {}}
    torch.save(state, tmp / "bn.ckpt")
    return tmp


def module_for_bn():
    from conftest import compose_cfg

    return module_for(
        lambda *o: compose_cfg(list(o), Path("unused"), Path("unused")), "backbone=lenet_dann_bn"
    )


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_fails_with_a_clear_message(bad_files, data_dir, tmp_path, capfd, case):
    overrides, status, texts = CASES[case]
    args = overrides(bad_files) if callable(overrides) else overrides
    code = train_py(*args, f"hydra.run.dir={tmp_path / 'run'}")
    stderr = capfd.readouterr().err
    assert code == status, stderr[-2000:]
    for text in texts:
        assert text in stderr, f"{text!r} not in:\n{stderr[-2000:]}"
    if status == 2:  # dann's own errors: the message, not a stack trace
        assert "Traceback" not in stderr
    assert "+trainer.max_epoch" not in stderr  # no advice to add a misspelt key
