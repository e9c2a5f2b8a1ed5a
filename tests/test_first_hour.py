"""A newcomer's first hour: what a resumed or refused launch leaves in its run dir, crashes that
became one-line errors, and errors that name the fix (once, before torch and Lightning load)."""

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import (
    ROOT,
    compose_config,
    fast_dev_checkpoint,
    load_script,
    logged_scalars,
    run_script,
    train_py,
)
from hydra.utils import instantiate
from test_folder_pairs import write_image_folder

from dann.config_check import check_command_line, validate
from dann.data import DomainAdaptationDataModule
from dann.errors import ConfigError, InvalidDataError, reported_as_exit
from dann.train import build

MOONS = [
    "dataset=moons",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.log_every_n_steps=1",
    "+trainer.enable_progress_bar=false",
]


def csv_epochs(path: Path) -> set[int]:
    """The epochs of the training steps in a CSVLogger's metrics.csv."""
    with open(path, newline="") as f:
        return {int(r["epoch"]) for r in csv.DictReader(f) if r.get("train/loss")}


# ---- records lost ------------------------------------------------------------------------------


def test_a_resumed_run_keeps_every_record_and_a_refused_launch_changes_nothing(
    tmp_path, data_dir, capfd
):
    run_dir = tmp_path / "run"
    args = [*MOONS, "logger=many", f"hydra.run.dir={run_dir}"]
    assert train_py(*args, "trainer.max_epochs=1") == 0
    first = {f: (run_dir / ".hydra" / f).read_text() for f in ("overrides.yaml", "config.yaml")}
    assert csv_epochs(run_dir / "csv" / "metrics.csv") == {0}
    steps_before = set(logged_scalars(run_dir / "tensorboard")["train/loss"])

    # the same directory without ckpt_path: refused, and the run's files are as they were
    capfd.readouterr()
    assert train_py(*args, "trainer.max_epochs=2") == 2
    err = capfd.readouterr().err
    assert "already holds a run" in err and "ckpt_path=last" in err
    assert {f: (run_dir / ".hydra" / f).read_text() for f in first} == first
    assert sorted(p.name for p in (run_dir / ".hydra").iterdir()) == sorted(
        ["config.yaml", "hydra.yaml", "overrides.yaml"]
    )
    assert "ConfigError: " in (run_dir / "train.log").read_text()  # the log records it

    # what the refusal says: resume it with ckpt_path=last
    assert train_py(*args, "trainer.max_epochs=2", "ckpt_path=last") == 0
    captured = capfd.readouterr()
    assert "will be deleted" not in captured.out + captured.err
    assert {f: (run_dir / ".hydra" / f).read_text() for f in first} == first
    (launch,) = (run_dir / ".hydra").glob("launch_*")
    assert "ckpt_path=last" in yaml.safe_load((launch / "overrides.yaml").read_text())
    assert yaml.safe_load((launch / "config.yaml").read_text())["trainer"]["max_epochs"] == 2
    assert csv_epochs(run_dir / "csv" / "metrics.csv") == {0, 1}  # appended, not replaced
    steps_after = set(logged_scalars(run_dir / "tensorboard")["train/loss"])
    assert steps_before < steps_after  # the earlier event files are still read


def test_a_refused_config_leaves_no_run_dir(tmp_path, capfd):
    fresh = tmp_path / "fresh"
    assert train_py("seed=-1", f"hydra.run.dir={fresh}") == 2
    assert not fresh.exists()
    out, err = capfd.readouterr()
    assert (out + err).count("seed=-1 is out of range") == 1  # printed once
    assert err.startswith("error: seed=-1 is out of range") and "Traceback" not in err

    mine = tmp_path / "mine"  # a folder of the user's: only what Hydra added may go
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert train_py("seed=-1", f"hydra.run.dir={mine}") == 2
    assert (mine / "notes.txt").read_text() == "keep me"


# ---- crashes and tracebacks --------------------------------------------------------------------


def test_folder_pair_with_num_classes_null_reads_the_class_count(tmp_path):
    src = write_image_folder(tmp_path / "src", ["a", "b", "c"], n=2)
    tgt = write_image_folder(tmp_path / "tgt", ["a", "b", "c"], n=2)
    dm = DomainAdaptationDataModule(
        "folder",
        source_root=str(src),
        target_root=str(tgt),
        num_classes=None,
        data_dir=str(tmp_path / "cache"),
        image_size=32,
        resize=36,
        num_workers=0,
    )
    assert dm.sizes_from_data() == {"num_classes": 3}
    assert dm.hparams.num_classes == 3


def test_scripts_name_a_missing_argument_in_one_line(tmp_path, capsys):
    proc = run_script("scripts/predict.py", f"hydra.run.dir={tmp_path / 'predict'}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert not (tmp_path / "predict").exists()  # a refused launch leaves no run dir
    assert proc.stderr.strip().splitlines() == [
        "error: ckpt= and input= missing: for example, python scripts/predict.py "
        "ckpt=outputs/runs/<run>/checkpoints/last.ckpt input=photos/"
    ]
    for script, cfg, message in (
        ("export", compose_config("export"), "ckpt= missing: for example"),
        ("evaluate", compose_config("evaluate"), "ckpt_path= missing: for example"),
        # train.py's name works in evaluate.py (ckpt= stays an alias)
        ("evaluate", compose_config("evaluate", f"ckpt_path={tmp_path}/gone.ckpt"), "gone.ckpt"),
        ("evaluate", compose_config("evaluate", f"ckpt={tmp_path}/gone.ckpt"), "gone.ckpt"),
    ):
        module = load_script(script)
        run = module.export if script == "export" else module._evaluate
        with pytest.raises(SystemExit) as exit_, reported_as_exit():
            run(cfg)
        assert exit_.value.code == 2
        assert message in capsys.readouterr().err


def test_missing_pretrained_weights_are_one_line_not_hydras_wrapper(
    make_cfg, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_cache"))
    features = make_cfg("backbone=resnet50").backbone.features
    with pytest.raises(SystemExit) as exit_, reported_as_exit():
        instantiate(features)  # as the module builds it
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.startswith("error: backbone.features.pretrained=true needs resnet50's ImageNet")
    assert "Error in call to target" not in err and "DataError(" not in err


def test_missing_weights_and_missing_data_are_named_in_one_error(
    make_cfg, tmp_path, monkeypatch, capsys
):
    """office31 + resnet50 with neither the images nor the weights: one attempt names both,
    the data first (fixing only the weights would otherwise meet the next error)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_cache"))
    cfg = make_cfg("dataset=office31", "backbone=resnet50", f"dataset.root={tmp_path / 'none'}")
    with pytest.raises(SystemExit) as exit_, reported_as_exit():
        build(cfg)
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    data_at, weights_at = err.find(str(tmp_path / "none")), err.find("ImageNet")
    assert err.startswith("error: ") and 0 < data_at < weights_at, err
    assert err.count("\n") == 1  # one line


# ---- errors that could be better ---------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["trainer.max_epoch=3"], "unknown config key trainer.max_epoch; did you mean "),
        (["-m", "seed=1,2", "trainr.max_epochs=3"], "unknown config key trainr; did you mean "),
        (["dataset=moons", "dataset.train_sise=5"], "did you mean dataset.train_size?"),
    ],
)
def test_a_misspelt_key_names_the_closest_one_not_a_plus(argv, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as error:
        check_command_line("train", argv)
    assert "+" not in str(error.value)


def test_existing_keys_and_additions_pass_the_command_line_check():
    check_command_line("train", ["trainer.max_epochs=3", "+trainer.max_time=00:01:00:00"])
    check_command_line("train", ["-m", "method=dann,cdan", "seed=1,2", "hydra/launcher=basic"])
    check_command_line("predict", ["ckpt=x.ckpt", "input=photos"])
    with pytest.raises(ConfigError, match=r"ckpt_path; did you mean ckpt\?"):
        check_command_line("predict", ["ckpt_path=x.ckpt"])


def test_slurm_launcher_without_its_plugin_names_the_extra(monkeypatch):
    monkeypatch.setattr("dann.config_check._installed", lambda module: False)
    with pytest.raises(ConfigError, match=re.escape('pip install -e ".[slurm]"')):
        check_command_line("train", ["-m", "hydra/launcher=slurm", "seed=1,2"])


def test_target_entropy_with_source_only_is_refused(make_cfg):
    with pytest.raises(ConfigError, match="loss.target_entropy=0.1 would be ignored"):
        validate(make_cfg("method=source_only", "loss.target_entropy=0.1"))
    validate(make_cfg("method=dann", "loss.target_entropy=0.1"))
    with pytest.raises(ConfigError, match=r"did you mean loss\.target_entropy\?"):
        validate(make_cfg("+loss.target_entrpy=0.1"))  # train.yaml's own nodes are checked too


def test_a_misspelt_label_column_suggests_the_column(tmp_path):
    from test_tables import frame

    from dann.data import get_pair
    from dann.data.registry import PairSpec

    frame(50, 0).to_csv(tmp_path / "a.csv", index=False)
    frame(50, 1, target=True).to_csv(tmp_path / "b.csv", index=False)
    options = {"source": str(tmp_path / "a.csv"), "target": str(tmp_path / "b.csv")}
    with pytest.raises(InvalidDataError, match=r"did you mean dataset\.label=outcome\?"):
        get_pair("table")(PairSpec("table", options={**options, "label": "outcom"}))


def test_an_image_checkpoint_on_a_csv_says_it_takes_images(tmp_path, data_dir, capsys):
    ckpt = fast_dev_checkpoint(tmp_path / "run", data_dir)
    (tmp_path / "rows.csv").write_text("a,b\n1,2\n")
    cfg = compose_config("predict", f"ckpt={ckpt}", f"input={tmp_path / 'rows.csv'}")
    with pytest.raises(SystemExit), reported_as_exit():
        load_script("predict").predict(cfg)
    assert "takes images (mnist_to_mnistm) and input=" in capsys.readouterr().err


def test_config_errors_and_help_come_before_torch_and_lightning_load(tmp_path):
    """Neither torch nor Lightning is imported before these answer (how much sooner they answer
    than `import pytorch_lightning` is measured by scripts/bench_startup.py)."""
    cases = [
        ("train.py", "trainer.max_epoch=3", "did you mean trainer.max_epochs?"),
        ("train.py", "+trainer.max_epoch=3", "did you mean trainer.max_epochs?"),
        ("train.py", "+loss.target_entrpy=1", "did you mean loss.target_entropy?"),
        ("train.py", "dataset.batch_size=0", "dataset.batch_size=0 is out of range"),
        ("scripts/download.py", "--list", ""),
        ("scripts/predict.py", "--help", ""),
    ]
    for script, arg, message in cases:
        run_dir = f"hydra.run.dir={tmp_path / 'run'}"
        extra = [run_dir] if script == "train.py" else []
        cmd = (sys.executable, "-X", "importtime", str(ROOT / script), arg, *extra)
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
        imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()}
        assert {"torch", "pytorch_lightning"}.isdisjoint(imported), script
        assert message in proc.stderr and proc.returncode == (2 if message else 0), proc.stderr
