"""Shared fixtures: one data cache per test session, and configs composed with Hydra's API."""

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """The embedded/generated data caches, built once per session (no network)."""
    path = tmp_path_factory.mktemp("data")
    os.environ["DANN_DATA_DIR"] = str(path)
    return path


def compose_cfg(overrides: list[str], output_dir: Path, data_dir: Path) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.data_dir = str(data_dir)
    return cfg


@pytest.fixture
def make_cfg(tmp_path, data_dir):
    """make_cfg("method=source_only", ...) -> a composed config writing into tmp_path."""
    return lambda *overrides: compose_cfg(list(overrides), tmp_path / "run", data_dir)
