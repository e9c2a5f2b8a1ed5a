"""The paper's two-moons toy, the decision-boundary figure, and the sequence shift pair."""

import math

import pytest
import torch
from conftest import run_and_recount

from dann.data import get_pair
from dann.data.registry import PairSpec
from dann.train import run


def test_moons_target_is_the_source_rotated_by_35_degrees():
    pair = get_pair("moons")(PairSpec("moons", options={"noise": 0.0}))
    src, tgt = pair.source.train, pair.target.train
    assert src.inputs.shape == tgt.inputs.shape == (300, 2) and pair.num_classes == 2
    # noise-free moons: both domains lie on the same two arcs, rotated about the centre
    a = math.radians(35.0)
    rot = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    back = tgt.inputs @ rot  # undo the rotation (about the centre, which is the origin)
    assert torch.allclose(back.sort(0).values, src.inputs.sort(0).values, atol=1e-5)
    assert torch.equal(tgt.labels.sort().values, src.labels.sort().values)


def _target_acc(make_cfg, *overrides):
    return run(make_cfg("experiment=moons", "callbacks=none", *overrides))["test/target_acc"]


@pytest.mark.slow  # two 300-epoch runs per seed, ~25 s on 2 cores; `pytest -m slow`
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_dann_beats_source_only_on_rotated_moons(make_cfg, seed):
    """The paper's qualitative result (JMLR 2016, Fig. 2), at every seed, with the preset's
    recipe (configs/experiment/moons.yaml). Measured target accuracy, source-only -> DANN:
    seed 1 0.701 -> 0.908, seed 2 0.718 -> 0.809, seed 3 0.695 -> 0.777 (seeds 4, 5: gains of
    0.125 and 0.088). The asserted margin is under half of the smallest gap (0.082)."""
    source_only = _target_acc(make_cfg, "method=source_only", f"seed={seed}")
    dann = _target_acc(make_cfg, "method=dann", f"seed={seed}")
    assert dann > source_only + 0.04, (seed, dann, source_only)


def test_decision_boundary_figure_reaches_tensorboard(make_cfg, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run(
        make_cfg(
            "experiment=moons",
            "trainer.max_epochs=2",
            "trainer.check_val_every_n_epoch=1",
            "callbacks.decision_boundary.every_n_epochs=1",
        )
    )
    images = set()
    for f in (tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(f))
        acc.Reload()
        images |= set(acc.Tags()["images"])
    assert "figures/decision_boundary" in images


def test_sines_shift_sequences(make_cfg):
    pair = get_pair("sines_shift")(PairSpec("sines_shift", options={"train_size": 40}))
    src, tgt = pair.source.train, pair.target.train
    assert src.inputs.shape == (40, 32, 1) and src.inputs.dtype == torch.float32
    assert set(src.labels.tolist()) == {0, 1, 2, 3}  # the four frequencies, nothing else
    # the shift: the target is offset by +1 on average and its amplitude halved
    assert (tgt.inputs.mean() - src.inputs.mean()).item() == pytest.approx(1.0, abs=0.1)
    assert tgt.inputs.std().item() < 0.7 * src.inputs.std().item()
    summary, recount = run_and_recount(
        make_cfg("dataset=sines_shift", "backbone=gru", "trainer.fast_dev_run=true")
    )
    for key in ("test/source_acc", "test/target_acc"):  # what the tested weights score
        assert summary[key] == pytest.approx(recount[key], abs=1e-6), key
