"""scripts/rank_validators.py: selection cost and weighted Spearman of each validator, computed
from runs' saved histories, checked against what the histories say by construction."""

import csv
import json

import numpy as np
import pytest

from tests.conftest import load_script, run_script

rank_validators = load_script("rank_validators")


def write_run(path, dataset, target_acc, **scores):
    """A run directory whose summary.json holds one history entry per epoch."""
    history = [
        {
            "epoch": e,
            "step": 10 * (e + 1),
            "val/target_acc": acc,
            **{k: v[e] for k, v in scores.items()},
        }
        for e, acc in enumerate(target_acc)
    ]
    path.mkdir(parents=True)
    (path / "summary.json").write_text(json.dumps({"dataset": dataset, "history": history}))


@pytest.fixture
def sweep(tmp_path):
    # entropy follows target accuracy exactly (lower = better); source_acc peaks early
    write_run(
        tmp_path / "0",
        "a",
        [0.5, 0.9, 0.7, 0.8],
        **{"val/entropy": [2.0, 0.1, 1.0, 0.5], "val/source_acc": [0.99, 0.9, 0.95, 0.92]},
    )
    write_run(
        tmp_path / "1",
        "b",
        [0.6, 0.7, 0.8, 0.95],
        **{"val/entropy": [1.5, 1.0, 0.8, 0.2], "val/source_acc": [0.8, 0.97, 0.9, 0.96]},
    )
    return tmp_path


def test_weighted_spearman_is_one_for_the_same_order_and_minus_one_for_the_reverse():
    acc = np.array([0.1, 0.5, 0.3, 0.9, 0.7])
    assert rank_validators.weighted_spearman(acc * 3 + 1, acc) == pytest.approx(1.0)
    assert rank_validators.weighted_spearman(-acc, acc) == pytest.approx(-1.0)
    # getting the best epochs' order right counts more than the worst ones'
    good_top = np.array([0.3, 0.5, 0.1, 0.9, 0.7])  # swaps the two worst
    good_bottom = np.array([0.1, 0.5, 0.3, 0.7, 0.9])  # swaps the two best
    assert rank_validators.weighted_spearman(good_top, acc) > rank_validators.weighted_spearman(
        good_bottom, acc
    )


def test_costs_and_correlations_follow_the_histories(sweep):
    rows = {r["validator"]: r for r in rank_validators.rank(rank_validators.load_runs([sweep]))}
    assert rows["entropy"]["cost_mean"] == pytest.approx(0.0) and rows["entropy"]["runs"] == 2
    assert rows["entropy"]["weighted_spearman"] == pytest.approx(1.0)
    # source_val picks epoch 0 (0.5, best 0.9) and epoch 1 (0.7, best 0.95)
    assert rows["source_val"]["cost_mean"] == pytest.approx((0.4 + 0.25) / 2)
    assert rows["source_val"]["cost_max"] == pytest.approx(0.4)
    assert rows["source_val"]["weighted_spearman"] < 0.5
    assert rows["target_oracle"]["uses_target_labels"] and rows["target_oracle"]["cost_max"] == 0
    assert "reverse_val" not in rows  # never logged


def test_cli_prints_the_table_says_it_uses_target_labels_and_writes_csv(sweep, tmp_path):
    out = tmp_path / "ranking.csv"
    proc = run_script("scripts/rank_validators.py", str(sweep), "--csv", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "USES TARGET LABELS" in proc.stdout and "| entropy |" in proc.stdout
    table = {r["validator"]: r for r in csv.DictReader(open(out))}
    assert float(table["source_val"]["cost_mean"]) == pytest.approx(0.325)


def test_cli_refuses_a_directory_without_histories(tmp_path):
    proc = run_script("scripts/rank_validators.py", str(tmp_path))
    assert proc.returncode == 2 and "no summary.json with a validation history" in proc.stderr
