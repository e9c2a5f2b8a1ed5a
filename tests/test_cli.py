"""The command line as a user runs it: python train.py ..., single runs and -m sweeps."""

import subprocess
from pathlib import Path

from conftest import run_script
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

EXPECTED_SCALARS = {
    "train/label_loss",
    "train/domain_loss",
    "train/loss",
    "train/lambda",
    "train/lr",
    "train/progress",
    "train/source_acc",
    "train/domain_acc",
    "val/source_acc",
    "val/target_acc",
    "val/domain_acc",
    "test/source_acc",
    "test/target_acc",
    "test/domain_acc",
    "hp/val/source_1se_step",  # hp/<the default selection metric> at the picked checkpoint
    "hp/val/target_acc",
    "hp/test/source_acc",
    "hp/test/target_acc",
    # unsupervised selection validators, what each picked, and the invariance measures
    "val/reverse_acc",
    "val/dev_risk",
    "val/entropy",
    "val/snd",
    "selection/source_val_target_acc",
    "selection/dev_target_acc",
    "selection/target_oracle_target_acc",
    "analysis/pad_inputs",
    "analysis/pad_features",
}


def train_py(*args: str, data_dir: Path) -> subprocess.CompletedProcess:
    return run_script("train.py", *args, data_dir=data_dir)


def _event_tags(log_dir: Path) -> tuple[set[str], set[str], set[str], set[str]]:
    """Scalar, HPARAMS, image and custom-scalar tags of a TensorBoard log dir."""
    scalars, hparams, images, layouts = set(), set(), set(), set()
    for f in log_dir.glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(f))
        acc.Reload()
        scalars |= set(acc.Tags()["scalars"])
        images |= set(acc.Tags()["images"])
        for plugin, found in (("hparams", hparams), ("custom_scalars", layouts)):
            try:
                found |= set(acc.PluginTagToContent(plugin))
            except KeyError:  # this event file holds no such summary
                pass
    return scalars, hparams, images, layouts


def test_cli_run_logs_all_metrics_and_hparams(tmp_path, data_dir):
    # fast_dev_run disables loggers in Lightning, so a tiny real run is used to check the logs
    out = tmp_path / "run"
    proc = train_py(
        "callbacks=analysis",  # the opt-in PAD and t-SNE too
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=5",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "trainer.log_every_n_steps=1",
        f"hydra.run.dir={out}",
        data_dir=data_dir,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = [line for line in proc.stdout.splitlines() if "SUMMARY" in line]
    assert len(summary) == 1 and "val/target_acc at that checkpoint=0." in summary[0]
    assert (proc.stdout + proc.stderr).count("EMBEDDED DATA") == 1  # one loud line per run
    scalars, hparams, images, layouts = _event_tags(out / "tensorboard")
    assert EXPECTED_SCALARS <= scalars, EXPECTED_SCALARS - scalars
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= hparams
    assert "analysis/tsne" in images and layouts  # t-SNE figure, CUSTOM SCALARS layout
    assert "SELECTION what each validator picks" in proc.stdout + proc.stderr
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert (out / ".hydra" / "config.yaml").is_file()


def test_cli_multirun_makes_one_dir_per_job(tmp_path, data_dir):
    sweep = tmp_path / "sweep"
    proc = train_py(
        "-m", "seed=1,2", "trainer.fast_dev_run=true", f"hydra.sweep.dir={sweep}", data_dir=data_dir
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0_seed=1,trainer.fast_dev_run=True", "1_seed=2,trainer.fast_dev_run=True"]
    assert proc.stdout.count("SUMMARY") == 2


def test_cli_unknown_option_reports_hydra_choices(data_dir):
    proc = train_py("dataset=no_such_pair", data_dir=data_dir)
    assert proc.returncode != 0
    assert "Could not find 'dataset/no_such_pair'" in proc.stderr
    assert "Available options in 'dataset'" in proc.stderr and "mnist_to_mnistm" in proc.stderr
