"""Summarise a Hydra multirun: one row per configuration, mean ± std over seeds.

    python scripts/compare.py outputs/multirun/<sweep dir> [--metric test/target_acc ...]
                              [--gap-metric test/target_acc]

Reads every job's `summary.json` (written by dann.train.run) and `.hydra/overrides.yaml`,
groups jobs by their overrides minus those that do not change what is run (`seed`, and a
resumed job's `ckpt_path` and `hydra.*`), prints a markdown table and writes
`<sweep dir>/comparison.csv` and `<sweep dir>/comparison.png` (a bar chart: mean ± std).
`selection_cost` is what the run's label-free selection cost it: the best validation target
accuracy of any epoch minus the one at the selected checkpoint (target labels used only to report).

The gap closure (method - source_only) / (target_oracle - source_only) is computed on a target
accuracy (`--gap-metric`, default `test/target_acc`): it measures how much of the domain gap a
method closes, which only target labels can tell, so it is an oracle number (labelled so) and a
source metric is refused.
"""

import argparse
import csv
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib
import yaml

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DEFAULT_METRICS = [
    "selected_val/source_acc",
    "selected_val/target_acc",
    "test/target_acc",
    "selection_cost",
]
DEFAULT_GAP_METRIC = "test/target_acc"
# overrides that say which seed, where, or from which checkpoint a job ran, not what it ran
NOT_CONFIG = ("seed=", "ckpt_path=", "hydra.", "+hydra.", "++hydra.")


def load_jobs(sweep_dir: Path) -> list[tuple[str, dict]]:
    jobs = []
    for summary in sorted(sweep_dir.rglob("summary.json")):  # one sweep, or several under it
        overrides = yaml.safe_load((summary.parent / ".hydra" / "overrides.yaml").read_text())
        group = ",".join(o for o in overrides or [] if not o.startswith(NOT_CONFIG)) or "(defaults)"
        jobs.append((group, with_selection_cost(json.loads(summary.read_text()))))
    return jobs


def with_selection_cost(summary: dict) -> dict:
    """`selection_cost`: the best validation target accuracy of any epoch of the run minus the
    one at the checkpoint the run selected (both from summary.json; target labels used only to
    report it), where the run's selection report holds the oracle's row."""
    oracle = (summary.get("selection") or {}).get("target_oracle") or {}
    best, picked = oracle.get("target_acc"), summary.get("selected_val/target_acc")
    if isinstance(best, float) and isinstance(picked, float):
        summary = {**summary, "selection_cost": best - picked}
    return summary


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


def _without_method(config: str) -> tuple[str | None, str]:
    parts = config.split(",")
    method = next((p.split("=", 1)[1] for p in parts if p.startswith("method=")), None)
    return method, ",".join(p for p in parts if not p.startswith("method="))


def add_gap_closure(rows: list[dict], metric: str) -> None:
    """(method - source_only) / (target_oracle - source_only) of the mean `metric`, for rows
    that have both baselines among the rows with the same other overrides."""
    means = {_without_method(r["config"]): r[metric][0] for r in rows if r[metric]}
    for r in rows:
        method, rest = _without_method(r["config"])
        low, high = means.get(("source_only", rest)), means.get(("target_oracle", rest))
        ok = r[metric] and low is not None and high is not None and high != low
        r["gap closure"] = (r[metric][0] - low) / (high - low) if ok else None


def gap_label(metric: str) -> str:
    """The gap closure's column name: it needs target labels, so it says oracle."""
    return f"gap closure ({metric}, oracle)"


def to_markdown(rows: list[dict], metrics: list[str], gap_metric: str = DEFAULT_GAP_METRIC) -> str:
    closure = any(r.get("gap closure") is not None for r in rows)
    head = (
        "| config | n | "
        + " | ".join(metrics)
        + (f" | {gap_label(gap_metric)} |" if closure else " |")
    )
    lines = [head, "|---|---|" + "---|" * (len(metrics) + closure)]
    for r in rows:
        cells = [f"{r[m][0]:.4f} ± {r[m][1]:.4f}" if r[m] else "–" for m in metrics]
        if closure:
            g = r.get("gap closure")
            cells.append(f"{g:.2f}" if g is not None else "–")
        lines.append(f"| {r['config']} | {r['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bar_chart(rows: list[dict], metrics: list[str], path: Path) -> None:
    """One group of bars per configuration, one bar per metric, std as error bars."""
    width = 0.8 / len(metrics)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(rows) * len(metrics)), 4.5))
    for i, m in enumerate(metrics):
        means = [r[m][0] if r[m] else 0.0 for r in rows]
        stds = [r[m][1] if r[m] else 0.0 for r in rows]
        xs = [j + (i - (len(metrics) - 1) / 2) * width for j in range(len(rows))]
        ax.bar(xs, means, width, yerr=stds, capsize=3, label=m)
    ax.set_xticks(range(len(rows)), [f"{r['config']}\n(n={r['n']})" for r in rows], fontsize=8)
    ax.set_ylabel("mean ± std over seeds")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--metric", action="append", dest="metrics")
    parser.add_argument(
        "--gap-metric",
        default=DEFAULT_GAP_METRIC,
        help=f"a target accuracy for the gap closure (default {DEFAULT_GAP_METRIC})",
    )
    args = parser.parse_args(argv)
    metrics = args.metrics or DEFAULT_METRICS
    gap = args.gap_metric
    if not gap.endswith("target_acc"):
        print(
            f"--gap-metric {gap} is not a target accuracy: the gap closure measures how much "
            "of the gap between source_only and target_oracle on the target domain a method "
            f"closes. Use e.g. --gap-metric {DEFAULT_GAP_METRIC}",
            file=sys.stderr,
        )
        return 2
    rows = compare(args.sweep_dir, [*metrics, *([gap] if gap not in metrics else [])])
    if not rows:
        print(f"no finished jobs (*/summary.json) under {args.sweep_dir}", file=sys.stderr)
        return 1
    add_gap_closure(rows, gap)
    print(to_markdown(rows, metrics, gap))
    with open(args.sweep_dir / "comparison.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["config", "n"]
            + [f"{m} {s}" for m in metrics for s in ("mean", "std")]
            + [gap_label(gap)]
        )
        for r in rows:
            values = [v for m in metrics for v in (r[m] or ("", ""))]
            g = r.get("gap closure")
            w.writerow([r["config"], r["n"], *values, "" if g is None else g])
    bar_chart(rows, metrics, args.sweep_dir / "comparison.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
