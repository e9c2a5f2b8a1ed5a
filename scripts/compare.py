"""Summarise a Hydra multirun: one row per configuration, mean ± std over seeds.

    python scripts/compare.py outputs/multirun/<sweep dir> [--metric test/target_acc ...]

Reads every job's `summary.json` (written by dann.train.run) and `.hydra/overrides.yaml`,
groups jobs by their overrides minus `seed`, prints a markdown table and writes
`<sweep dir>/comparison.csv`.
"""

import argparse
import csv
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import yaml

DEFAULT_METRICS = ["selected_val/source_acc", "selected_val/target_acc", "test/target_acc"]


def load_jobs(sweep_dir: Path) -> list[tuple[str, dict]]:
    jobs = []
    for summary in sorted(sweep_dir.glob("*/summary.json")):
        overrides = yaml.safe_load((summary.parent / ".hydra" / "overrides.yaml").read_text())
        group = ",".join(o for o in overrides or [] if not o.startswith("seed=")) or "(defaults)"
        jobs.append((group, json.loads(summary.read_text())))
    return jobs


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def compare(sweep_dir: Path, metrics: list[str]) -> list[dict]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for group, summary in load_jobs(sweep_dir):
        groups[group].append(summary)
    rows = []
    for group, summaries in groups.items():
        row = {"config": group, "n": len(summaries)}
        for m in metrics:
            values = [s[m] for s in summaries if isinstance(s.get(m), float)]
            row[m] = mean_std(values) if values else None
        rows.append(row)
    return rows


def to_markdown(rows: list[dict], metrics: list[str]) -> str:
    lines = ["| config | n | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for r in rows:
        cells = [f"{r[m][0]:.4f} ± {r[m][1]:.4f}" if r[m] else "–" for m in metrics]
        lines.append(f"| {r['config']} | {r['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--metric", action="append", dest="metrics")
    args = parser.parse_args(argv)
    metrics = args.metrics or DEFAULT_METRICS
    rows = compare(args.sweep_dir, metrics)
    if not rows:
        print(f"no finished jobs (*/summary.json) under {args.sweep_dir}", file=sys.stderr)
        return 1
    print(to_markdown(rows, metrics))
    with open(args.sweep_dir / "comparison.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["config", "n"] + [f"{m} {s}" for m in metrics for s in ("mean", "std")])
        for r in rows:
            w.writerow([r["config"], r["n"]] + [v for m in metrics for v in (r[m] or ("", ""))])
    return 0


if __name__ == "__main__":
    sys.exit(main())
