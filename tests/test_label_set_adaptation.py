"""Do PADA and OSBP do what their settings need? Claims about learning on two toys, each for
three seeds (no seed picked), each with a negative control that must fail.

Partial: three source classes, a target holding two of them, drawn as the source is. Source-only
calls some target points the absent class; DANN, aligning all three source classes with two
target ones, does no better. PADA's class weights (the mean target prediction) fade the absent
class from its losses: it beats both at every seed. Control: PADA with its class weights held at
1 (then it is DANN) does not. Measured (with 40 epochs): PADA at lambda = 0 scores the same as
PADA on this toy (0.89-0.90): here the weighted label loss, not the weighted adversary, does
the work.

Open-set: three known classes around an unknown one the source lacks. Source-only and DANN, with
the confidence rule (unknown below 0.5), find almost none of it (H-score under 0.15); OSBP's
unknown output finds about half (H-score 0.6-0.7) at every seed. Control: OSBP without its
boundary loss on the target does not. Measured (40 epochs): OSBP at lambda = 0 scores about the
same on this toy (0.60-0.73): the classifier's side of the loss does the work, not the reversed
gradient.
"""

import pytest
import torch
from conftest import TOY_RECIPE, compose_cfg

from dann.data.registry import DomainData, PairData, Split, register_pair
from dann.methods import osbp as osbp_module
from dann.methods.pada import PADA
from dann.train import run

SEEDS = (1, 2, 3)
MARGIN = 0.05


def _partial(n: int, seed: int) -> Split:
    """Classes 0, 1, 2 along x0 (centres -2.5, 0, 2.5, unit noise); x1 is noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x0 = 2.5 * (y.float() - 1.0) + torch.randn(n, generator=g)
    return Split(torch.stack([x0, torch.randn(n, generator=g)], dim=1), y)


def _open_set(n: int, seed: int) -> Split:
    """Known classes 0, 1, 2 at (-3, 0), (3, 0), (0, 3); class 3 at (0, -0.5), between them
    (the source's copy of it is cut by dataset.source_classes); noise 0.7."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    centres = torch.tensor([[-3.0, 0.0], [3.0, 0.0], [0.0, 3.0], [0.0, -0.5]])
    return Split(centres[y] + 0.7 * torch.randn(n, 2, generator=g), y)


def _pair(draw, classes: int) -> PairData:
    def domain(name: str, offset: int) -> DomainData:
        return DomainData(name, *(draw(600, 10 * offset + i) for i in range(3)))

    return PairData(domain("source", 1), domain("target", 2), classes)


register_pair("test_partial")(lambda spec: _pair(_partial, 3))
register_pair("test_open_set")(lambda spec: _pair(_open_set, 4))

TOY = [*TOY_RECIPE, "trainer.max_epochs=20"]  # 240 steps: enough for both toys
PARTIAL = ["dataset.name=test_partial", "dataset.num_classes=3", "dataset.target_classes=[0,1]"]
OPEN_SET = ["dataset.name=test_open_set", "dataset.num_classes=4", "dataset.source_classes=[0,1,2]"]


@pytest.fixture(scope="module")
def score(tmp_path_factory, data_dir):
    """score(setting, method, seed) -> target accuracy (partial) or H-score (open-set)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: a second thread only waits

    def measure(setting: list[str], method: str, seed: int) -> float:
        folder = tmp_path_factory.mktemp(method)
        summary = run(
            compose_cfg([*TOY, *setting, f"method={method}", f"seed={seed}"], folder, data_dir)
        )
        return summary["test/target_h_score" if setting is OPEN_SET else "test/target_acc"]

    yield measure
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def partial_baselines(score) -> dict[int, float]:
    """The better of source-only and DANN, per seed."""
    return {s: max(score(PARTIAL, m, s) for m in ("source_only", "dann")) for s in SEEDS}


@pytest.fixture(scope="module")
def open_set_baselines(score) -> dict[int, float]:
    return {s: max(score(OPEN_SET, m, s) for m in ("source_only", "dann")) for s in SEEDS}


def test_pada_beats_source_only_and_dann_on_the_partial_toy(score, partial_baselines):
    pada = {s: score(PARTIAL, "pada", s) for s in SEEDS}
    short = {
        s: (pada[s], partial_baselines[s]) for s in SEEDS if pada[s] < partial_baselines[s] + MARGIN
    }
    assert not short, f"(PADA, best baseline) at the seeds PADA does not win: {short}"


def test_pada_with_its_class_weights_held_at_one_does_not(score, partial_baselines, monkeypatch):
    monkeypatch.setattr(PADA, "on_train_epoch_end", lambda self: {})  # the weights stay 1
    held = {s: score(PARTIAL, "pada", s) for s in SEEDS}
    wins = {
        s: (held[s], partial_baselines[s])
        for s in SEEDS
        if held[s] >= partial_baselines[s] + MARGIN
    }
    assert not wins, f"PADA without its class weights still wins at {wins}"


def test_osbp_finds_the_unknown_class_the_baselines_miss(score, open_set_baselines):
    assert all(h < 0.15 for h in open_set_baselines.values()), open_set_baselines
    osbp = {s: score(OPEN_SET, "osbp", s) for s in SEEDS}
    short = {
        s: (osbp[s], open_set_baselines[s])
        for s in SEEDS
        if osbp[s] < open_set_baselines[s] + MARGIN
    }
    assert not short, f"(OSBP, best baseline) H-scores at the seeds OSBP does not win: {short}"


def test_osbp_without_its_boundary_loss_does_not(score, open_set_baselines, monkeypatch):
    monkeypatch.setattr(osbp_module, "unknown_boundary_loss", lambda p, t: 0.0 * p.sum())
    off = {s: score(OPEN_SET, "osbp", s) for s in SEEDS}
    wins = {
        s: (off[s], open_set_baselines[s])
        for s in SEEDS
        if off[s] >= open_set_baselines[s] + MARGIN
    }
    assert not wins, f"OSBP without its boundary loss still wins at {wins}"
