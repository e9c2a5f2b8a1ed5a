"""The `logger` group: each logger gets the run's hparams and final metrics, read back from its
own storage (CSV files, MLflow's file store, W&B's offline run), and figures reach those that
store them. Tiny real runs on the two moons: fast_dev_run swaps the loggers for a no-op one."""

import contextlib
import json
import logging
import struct
import time
from pathlib import Path

import pytest
import yaml
from conftest import logged_scalars

from dann.config_check import validate
from dann.errors import ConfigError
from dann.loggers import build_loggers
from dann.train import run

TINY = [
    "dataset=moons",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "callbacks=none",
    "+callbacks.boundary._target_=dann.callbacks.DecisionBoundaryFigure",
]
HPARAM, LR = "method/_target_", "optimizer/optim/lr"  # flat_hparams keys, known values
FINAL = "hp/test/target_acc"


def test_csv_gets_hparams_and_final_metrics_and_skips_figures(make_cfg, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="dann.loggers")
    summary = run(make_cfg("logger=csv", *TINY))
    csv_dir = tmp_path / "run" / "csv"
    assert Path(summary["log_dir"]) == csv_dir
    hparams = yaml.safe_load((csv_dir / "hparams.yaml").read_text())
    assert hparams[HPARAM] == "dann.methods.DANN" and hparams[LR] == 0.01
    rows = (csv_dir / "metrics.csv").read_text().splitlines()
    header, final = rows[0].split(","), rows[-1].split(",")
    assert float(final[header.index(FINAL)]) == pytest.approx(summary["test/target_acc"])
    assert "figures/decision_boundary skipped" in caplog.text  # CSV stores no figures


def test_mlflow_file_store_gets_hparams_final_metrics_and_figure(make_cfg, tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="logger=mlflow needs `pip install -e .[mlflow]`")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")  # no network here
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # restored after the test
    store = f"file:{tmp_path / 'mlruns'}"
    summary = run(make_cfg("logger=mlflow", f"logger.tracking_uri={store}", *TINY))
    client = MlflowClient(store)
    (found,) = client.search_runs([client.get_experiment_by_name("dann").experiment_id])
    assert found.data.params[HPARAM] == "dann.methods.DANN" and found.data.params[LR] == "0.01"
    assert found.data.metrics[FINAL] == pytest.approx(summary["test/target_acc"])
    assert found.data.tags["output_dir"] == str(tmp_path / "run")
    assert found.info.status == "FINISHED"
    run_dir = Path(summary["log_dir"])
    assert run_dir.name == found.info.run_id
    assert list((run_dir / "artifacts" / "figures" / "decision_boundary").glob("step_*.png"))


def wandb_records(path: Path):
    """The records of a W&B transaction log (`run-<id>.wandb`): a 7-byte file header, then
    leveldb-log chunks (crc, length, type: 1 full, 2 first, 3 middle, 4 last) in 32 KiB blocks."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, record = 7, b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's zero padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        record += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            yield wandb_internal_pb2.Record.FromString(record)
            record = b""


def wait_for_exit_record(path: Path, seconds: float = 60.0) -> list:
    """W&B's service writes the log in the background: finish() returns before it is flushed."""
    deadline = time.monotonic() + seconds
    while True:
        records = list(wandb_records(path))
        if (records and records[-1].HasField("exit")) or time.monotonic() > deadline:
            return records
        time.sleep(0.1)


def test_wandb_offline_run_gets_hparams_final_metrics_and_figure(make_cfg, monkeypatch, tmp_path):
    pytest.importorskip("wandb", reason="logger=wandb needs `pip install -e .[wandb]`")
    monkeypatch.setenv("WANDB_MODE", "offline")  # WandbLogger sets it; restored after the test
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_cache"))
    summary = run(make_cfg("logger=wandb", *TINY))
    run_dir = Path(summary["log_dir"])
    assert run_dir.parent == tmp_path / "run" / "wandb" and run_dir.name.startswith("offline-run-")
    records = wait_for_exit_record(next(run_dir.glob("run-*.wandb")))
    config, final = {}, {}
    for record in records:
        for kind, found in (("config", config), ("summary", final)):
            if record.HasField(kind):  # W&B splits keys with "/" into nested_key
                items = getattr(record, kind).update
                found |= {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items}
    assert config[HPARAM] == "dann.methods.DANN" and config[LR] == 0.01
    assert final[FINAL] == pytest.approx(summary["test/target_acc"])
    assert list((run_dir / "files" / "media" / "images" / "figures").glob("decision_boundary*"))


def test_many_logs_to_tensorboard_and_csv(make_cfg, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    summary = run(make_cfg("logger=many", *TINY))
    tb, csv_dir = tmp_path / "run" / "tensorboard", tmp_path / "run" / "csv"
    assert Path(summary["log_dir"]) == tb  # the first logger's
    assert logged_scalars(tb)[FINAL]  # both got every metric and the final ones
    assert FINAL in (csv_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    assert yaml.safe_load((csv_dir / "hparams.yaml").read_text())[HPARAM] == "dann.methods.DANN"
    hparams, images = b"", set()
    for events in tb.glob("events.out.tfevents.*"):  # Lightning writes the hparams apart
        acc = EventAccumulator(str(events))
        acc.Reload()
        images |= set(acc.Tags()["images"])
        with contextlib.suppress(KeyError):  # an event file without hparams
            hparams += acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    assert b"method/_target_" in hparams  # the HPARAMS tab's columns
    assert "figures/decision_boundary" in images


def test_many_takes_any_logger_and_none_is_possible(make_cfg, tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="logger=mlflow needs `pip install -e .[mlflow]`")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    store = f"logger.mlflow.tracking_uri=file:{tmp_path / 'mlruns'}"
    cfg = make_cfg("logger=many", "+logger@logger.mlflow=mlflow", "~logger.csv", store)
    names = [type(lg).__name__ for lg in build_loggers(cfg.logger)]
    assert names == ["TensorBoardLogger", "MLFlowLogger"]
    assert build_loggers(make_cfg("~logger").get("logger")) is False


def test_logger_config_errors_name_the_fix(make_cfg, monkeypatch):
    with pytest.raises(ConfigError, match="logger.csv.bogus"):  # each of many's is checked
        validate(make_cfg("logger=many", "+logger.csv.bogus=1"))
    monkeypatch.setattr("dann.loggers.find_spec", lambda name: None)  # as if not installed
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[wandb\]'"):
        build_loggers(make_cfg("logger=wandb").logger)
