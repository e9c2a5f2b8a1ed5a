import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _job(sweep: Path, name: str, overrides: list[str], target_acc: float) -> None:
    (sweep / name / ".hydra").mkdir(parents=True)
    (sweep / name / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (sweep / name / "summary.json").write_text(json.dumps({"test/target_acc": target_acc}))


def test_compare_groups_by_everything_but_seed(tmp_path):
    _job(tmp_path, "0", ["method=dann", "seed=1"], 0.5)
    _job(tmp_path, "1", ["method=dann", "seed=2"], 0.7)
    _job(tmp_path, "2", ["method=source_only", "seed=1"], 0.4)
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "compare.py"),
            str(tmp_path),
            "--metric",
            "test/target_acc",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "| method=dann | 2 | 0.6000 ± 0.1414 |" in proc.stdout  # sample std of 0.5, 0.7
    assert "| method=source_only | 1 | 0.4000 ± 0.0000 |" in proc.stdout
    assert (tmp_path / "comparison.csv").read_text().count("\n") == 3
