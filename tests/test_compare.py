import csv
import json
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _job(sweep: Path, name: str, overrides: list[str], target_acc: float) -> None:
    (sweep / name / ".hydra").mkdir(parents=True)
    (sweep / name / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (sweep / name / "summary.json").write_text(json.dumps({"test/target_acc": target_acc}))


def compare_py(sweep: Path) -> subprocess.CompletedProcess:
    """scripts/compare.py on `sweep` for test/target_acc."""
    script = str(ROOT / "scripts" / "compare.py")
    cmd = [sys.executable, script, str(sweep), "--metric", "test/target_acc"]
    return subprocess.run(cmd, capture_output=True, text=True)


def test_compare_groups_by_everything_but_seed(tmp_path):
    _job(tmp_path, "0", ["method=dann", "seed=1"], 0.5)
    _job(tmp_path, "1", ["method=dann", "seed=2"], 0.7)
    _job(tmp_path, "2", ["method=source_only", "seed=1"], 0.4)
    _job(tmp_path, "3", ["method=source_only", "seed=2"], 0.4)
    _job(tmp_path, "4", ["method=target_oracle", "seed=1"], 0.9)
    proc = compare_py(tmp_path)
    assert proc.returncode == 0, proc.stderr
    # sample std of 0.5, 0.7; gap closure (0.6 - 0.4) / (0.9 - 0.4)
    assert "| method=dann | 2 | 0.6000 ± 0.1414 | 0.40 |" in proc.stdout
    assert "| method=source_only | 2 | 0.4000 ± 0.0000 | 0.00 |" in proc.stdout
    assert "| method=target_oracle | 1 | 0.9000 ± 0.0000 | 1.00 |" in proc.stdout
    with open(tmp_path / "comparison.csv") as f:
        rows = {r["config"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"method=dann", "method=source_only", "method=target_oracle"}
    assert float(rows["method=dann"]["test/target_acc mean"]) == pytest.approx(0.6)
    assert float(rows["method=dann"]["test/target_acc std"]) == pytest.approx(0.14142, abs=1e-4)
    assert float(rows["method=dann"]["gap closure (test/target_acc, oracle)"]) == pytest.approx(0.4)
    image = plt.imread(tmp_path / "comparison.png")
    assert image.ndim == 3 and image.shape[0] > 100  # a real bar chart was drawn


def test_a_resumed_job_stays_in_its_group(tmp_path):
    # resuming one job of a sweep adds ckpt_path=last and hydra.run.dir to its overrides
    _job(tmp_path, "0", ["method=dann", "seed=1"], 0.5)
    _job(tmp_path, "1", ["method=dann", "seed=2", "ckpt_path=last", "hydra.run.dir=x/1"], 0.7)
    proc = compare_py(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "| method=dann | 2 | 0.6000 ± 0.1414 |" in proc.stdout
    assert "ckpt_path" not in proc.stdout


def test_selection_cost_is_the_oracles_best_epoch_minus_the_selected_one(tmp_path):
    for name, seed, picked, best in (("0", 1, 0.90, 0.95), ("1", 2, 0.93, 0.93)):
        job = tmp_path / name
        _job(tmp_path, name, ["method=dann", f"seed={seed}"], 0.9)
        summary = {
            "test/target_acc": 0.9,
            "selected_val/target_acc": picked,
            "selection": {"target_oracle": {"epoch": 7, "target_acc": best}},
        }
        (job / "summary.json").write_text(json.dumps(summary))
    script = str(ROOT / "scripts" / "compare.py")
    cmd = [sys.executable, script, str(tmp_path), "--metric", "selection_cost"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    # costs 0.05 and 0.00: mean 0.025, sample std 0.0354
    assert "| method=dann | 2 | 0.0250 ± 0.0354 |" in proc.stdout
