"""Rank the label-free validators on finished runs: what picking with each one costs, and how
well its score follows target accuracy. A STUDY TOOL: it reads the target labels' accuracy
(`val/target_acc`) of every epoch, so it can only be run where target labels exist, to decide
which validator to trust elsewhere.

    python scripts/rank_validators.py outputs/multirun/<sweep> [more sweep or run dirs ...]
                                      [--csv validators.csv] [--power 2]

Reads the `summary.json` of every run under the given directories (`dann.train.run` writes the
history of every validation epoch there) and prints, per validator:
- `cost`: the best validation target accuracy of the run minus the one at the epoch the validator
  picks, mean ± std and max over runs (0 = it picks the best epoch);
- `wSpearman`: the weighted Spearman correlation between the validator's score (oriented so that
  higher is better) and target accuracy over all logged epochs of all runs of a dataset pair,
  averaged over pairs (Musgrave et al., "Benchmarking Validation Methods for Unsupervised Domain
  Adaptation", 2022): a Pearson correlation of the two rank vectors in which each epoch weighs
  its normalised target-accuracy rank to the power `--power`, so the ordering of the good
  epochs counts most. Rules (`source_val_1se`, `last`) have no score to correlate: `-`.
The table is also written as CSV (`--csv`, default `validators.csv` in the first directory).
"""

import argparse
import csv
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dann.selection import NOT_SELECTABLE, RULES, VALIDATORS, picked_epoch  # noqa: E402

ORACLE = "val/target_acc"


def load_runs(dirs: list[Path]) -> list[dict]:
    """Every run's summary (with a history of at least one epoch) under `dirs`."""
    runs = []
    for d in dirs:
        for path in sorted(d.rglob("summary.json")) if d.is_dir() else []:
            summary = json.loads(path.read_text())
            history = [h for h in summary.get("history", []) if np.isfinite(h.get(ORACLE, np.nan))]
            if history:
                runs.append({"path": str(path.parent), **summary, "history": history})
    return runs


def weighted_spearman(score: np.ndarray, accuracy: np.ndarray, power: float = 2.0) -> float:
    """Pearson correlation of the ranks of `score` and `accuracy` (ranks scaled to (0, 1]), each
    point weighted by its accuracy rank ** `power`."""
    if len(score) < 3 or np.ptp(score) == 0 or np.ptp(accuracy) == 0:
        return float("nan")
    rx, ry = rankdata(score) / len(score), rankdata(accuracy) / len(accuracy)
    w = ry**power
    mx, my = np.average(rx, weights=w), np.average(ry, weights=w)
    cov = np.average((rx - mx) * (ry - my), weights=w)
    var_x, var_y = np.average((rx - mx) ** 2, weights=w), np.average((ry - my) ** 2, weights=w)
    return float(cov / np.sqrt(var_x * var_y))


def rank(runs: list[dict], power: float = 2.0) -> list[dict]:
    """One row per validator: selection cost over runs, weighted Spearman per pair (averaged)."""
    by_pair: dict[str, list[dict]] = defaultdict(list)
    for r in runs:
        by_pair[str(r.get("dataset"))].append(r)
    rows = []
    for name, (metric, mode) in VALIDATORS.items():
        costs = []
        for r in runs:
            chosen = picked_epoch(r["history"], metric, mode)
            if chosen is not None:
                costs.append(max(h[ORACLE] for h in r["history"]) - chosen[ORACLE])
        if not costs:
            continue
        correlations = []
        for pair_runs in by_pair.values():
            epochs = [
                h for r in pair_runs for h in r["history"] if np.isfinite(h.get(metric, np.nan))
            ]
            score = np.array([h[metric] for h in epochs]) * (1 if mode == "max" else -1)
            acc = np.array([h[ORACLE] for h in epochs])
            if name not in RULES:
                correlations.append(weighted_spearman(score, acc, power))
        finite = [c for c in correlations if np.isfinite(c)]
        rows.append(
            {
                "validator": name,
                "metric": metric,
                "uses_target_labels": name == "target_oracle",
                "selectable": metric not in NOT_SELECTABLE,
                "runs": len(costs),
                "cost_mean": statistics.fmean(costs),
                "cost_std": statistics.stdev(costs) if len(costs) > 1 else 0.0,
                "cost_max": max(costs),
                "weighted_spearman": statistics.fmean(finite) if finite else float("nan"),
            }
        )
    return sorted(rows, key=lambda r: (r["uses_target_labels"], r["cost_mean"]))


def format_table(rows: list[dict], runs: list[dict]) -> str:
    pairs = sorted({str(r.get("dataset")) for r in runs})
    lines = [
        f"VALIDATORS ranked on {len(runs)} runs ({', '.join(pairs)}): a study that USES TARGET "
        "LABELS (val/target_acc of every epoch) to judge label-free validators",
        "",
        "| validator | metric | cost (mean ± std) | max cost | wSpearman | runs |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        label = r["validator"] + (" (oracle)" if r["uses_target_labels"] else "")
        label += "" if r["selectable"] else " (not selectable)"
        ws = "-" if not np.isfinite(r["weighted_spearman"]) else f"{r['weighted_spearman']:.3f}"
        lines.append(
            f"| {label} | `{r['metric']}` | {r['cost_mean']:.4f} ± {r['cost_std']:.4f} | "
            f"{r['cost_max']:.4f} | {ws} | {r['runs']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="sweep or run directories")
    parser.add_argument("--csv", type=Path, help="where to write the table (CSV)")
    parser.add_argument("--power", type=float, default=2.0, help="weighted Spearman's exponent")
    args = parser.parse_args(argv)
    missing = [str(d) for d in args.dirs if not d.is_dir()]
    if missing:
        print(f"error: not a directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    runs = load_runs(args.dirs)
    if not runs:
        print(
            "error: no summary.json with a validation history under "
            f"{', '.join(map(str, args.dirs))} (runs need the selection_validators callback)",
            file=sys.stderr,
        )
        return 2
    rows = rank(runs, args.power)
    print(format_table(rows, runs))
    out = args.csv or args.dirs[0] / "validators.csv"
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
