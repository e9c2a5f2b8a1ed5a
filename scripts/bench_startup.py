"""How soon a mistake is reported: a config error, `download.py --list` and `predict.py --help`
each as a fresh Python process, against `import pytorch_lightning` alone, side by side.

    python scripts/bench_startup.py [--repeats 3]

Prints the median wall time of each and its ratio to the Lightning import (target: below 1, the
checks run before torch and Lightning load; tests/test_first_hour.py checks that they do not
load them). Timings are printed, never asserted.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import machine, median, table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def seconds(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, timeout=300)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    run_dir = f"hydra.run.dir={tempfile.mkdtemp()}/run"
    cases = {
        "import pytorch_lightning": ["-c", "import pytorch_lightning"],
        "train.py trainer.max_epoch=3 (typo)": ["train.py", "trainer.max_epoch=3", run_dir],
        "train.py dataset.batch_size=0": ["train.py", "dataset.batch_size=0", run_dir],
        "scripts/download.py --list": ["scripts/download.py", "--list"],
        "scripts/predict.py --help": ["scripts/predict.py", "--help"],
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):  # alternating, so drift touches every case alike
        for name, argv in cases.items():
            times[name].append(seconds(*argv))
    heavy = median(times["import pytorch_lightning"])
    rows = [[name, f"{median(t):.2f}", f"{median(t) / heavy:.2f}x"] for name, t in times.items()]
    print(machine())
    print(table(["command", "median s", "vs import pytorch_lightning"], rows))


if __name__ == "__main__":
    main()
