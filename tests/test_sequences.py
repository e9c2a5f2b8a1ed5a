"""The `sequences` pair and the sequence backbones: NPZ files of variable-length sequences load
padded, masked and standardised; `gru` and `conv1d` read only the valid steps; both train on the
pair; bad files fail before training, naming the file and the fix."""

import numpy as np
import pytest
import torch
from conftest import METHODS, run_and_recount

from dann.data import get_pair
from dann.data.registry import UNLABELLED, PairSpec
from dann.errors import DataError, InvalidDataError
from dann.models import Conv1DFeatures, GRUFeatures

LOAD = get_pair("sequences")


def sequences(n: int, steps: int, seed: int, offset: float = 0.0, features: int = 2):
    """Class k: a sine of k + 1 periods (random phase) in every feature, plus noise and
    `offset`; lengths in [steps // 2, steps]; NaN after each sequence's end (padding)."""
    r = np.random.default_rng(seed)
    y = r.integers(0, 3, n)
    lengths = r.integers(steps // 2, steps + 1, n)
    t = np.arange(steps)
    wave = np.sin(2 * np.pi * (y[:, None] + 1) * t / steps + r.uniform(0, 6, (n, 1)))
    x = wave[..., None] * np.linspace(1, 0.5, features) + offset
    x = x + 0.1 * r.normal(size=x.shape)
    x[t[None, :] >= lengths[:, None]] = np.nan
    return x, y, lengths


@pytest.fixture
def files(tmp_path):
    xs, ys, ls = sequences(100, 24, 0)
    xt, yt, lt = sequences(100, 30, 1, offset=1.0)  # longer, shifted target
    np.savez(tmp_path / "src.npz", x=xs, y=ys, lengths=ls)
    np.savez(tmp_path / "tgt.npz", x=xt, y=yt, lengths=lt)
    return tmp_path / "src.npz", tmp_path / "tgt.npz"


def spec(source, target, **options) -> PairSpec:
    return PairSpec("sequences", options={"source": str(source), "target": str(target), **options})


def test_npz_sequences_load_padded_masked_and_standardised(files):
    pair = LOAD(spec(*files))
    src, tgt = pair.source, pair.target
    # padded to the longer T = 30; 2 features + the validity channel
    assert src.train.inputs.shape == (80, 30, 3) and tgt.train.inputs.shape == (80, 30, 3)
    assert (len(src.val), len(src.test), len(tgt.val), len(tgt.test)) == (10, 10, 10, 10)
    assert pair.input_size == 2 and pair.num_classes == 3
    x, mask = src.train.inputs[..., :2], src.train.inputs[..., 2]
    lengths = mask.sum(1)
    assert lengths.min() >= 12 and lengths.max() <= 24  # source lengths; steps 24..29 padding
    assert torch.equal(mask, (torch.arange(30) < lengths[:, None]).float())
    assert torch.all(x[mask == 0] == 0)  # NaN padding became zeros
    valid = x[mask == 1]  # standardised with the source training steps' own statistics
    assert torch.allclose(valid.mean(0), torch.zeros(2), atol=1e-4)
    assert torch.allclose(valid.std(0, unbiased=False), torch.ones(2), atol=1e-3)
    target_valid = tgt.train.inputs[..., :2][tgt.train.inputs[..., 2] == 1]
    assert target_valid.mean() > 1.0  # the target's offset, in source units
    assert pair.preprocessing["classes"] == [0, 1, 2] and len(pair.preprocessing["mean"]) == 2


def test_equal_lengths_and_an_unlabelled_target(tmp_path):
    xs, ys, _ = sequences(40, 16, 0)
    np.savez(tmp_path / "s.npz", x=np.nan_to_num(xs), y=ys)  # no lengths: all T steps valid
    np.savez(tmp_path / "t.npz", x=np.nan_to_num(sequences(30, 16, 1)[0]))  # no y
    pair = LOAD(spec(tmp_path / "s.npz", tmp_path / "t.npz"))
    assert torch.all(pair.source.train.inputs[..., -1] == 1)
    assert (pair.target.test.labels == UNLABELLED).all()


def _masked(x: torch.Tensor, length: int) -> torch.Tensor:
    mask = (torch.arange(x.shape[1]) < length).float()[None, :, None].expand(len(x), -1, 1)
    return torch.cat([x, mask], dim=2)


@pytest.mark.parametrize(
    "backbone",
    [
        lambda: GRUFeatures(3, hidden_size=8, masked=True),
        lambda: GRUFeatures(3, hidden_size=8, bidirectional=True, masked=True),
        lambda: Conv1DFeatures(3, channels=[4, 6], kernel_size=3, masked=True),
    ],
)
def test_backbones_read_only_the_valid_steps(backbone):
    """A sequence of 7 valid steps padded to 12 with garbage gives the features of the same 7
    steps alone."""
    torch.manual_seed(0)
    net = backbone().eval()
    x = torch.randn(2, 7, 3)
    padded = torch.cat([x, 100 * torch.randn(2, 5, 3)], dim=1)
    alone, with_padding = net(_masked(x, 7)), net(_masked(padded, 7))
    assert torch.allclose(alone, with_padding, atol=1e-5)
    assert with_padding.shape == (2, net.out_features)
    assert not torch.allclose(net(_masked(padded, 12)), with_padding, atol=1e-3)


@pytest.mark.parametrize(
    "backbone, method",
    [("gru", m) for m in METHODS] + [("conv1d", m) for m in ("dann", "source_only")],
)
def test_every_method_trains_on_the_pair(make_cfg, files, backbone, method):
    src, tgt = files
    summary, recount = run_and_recount(
        make_cfg(
            "dataset=sequences",
            f"backbone={backbone}",
            f"method={method}",
            f"dataset.source={src}",
            f"dataset.target={tgt}",
            "trainer.fast_dev_run=true",
        )
    )
    for key in ("test/source_acc", "test/target_acc"):  # what the tested weights score
        assert summary[key] == pytest.approx(recount[key], abs=1e-6), key


# ---- bad input -------------------------------------------------------------------------------


def test_sequences_of_different_feature_width(tmp_path, files):
    np.savez(tmp_path / "wide.npz", x=np.zeros((10, 24, 3)), y=np.arange(10) % 2)
    with pytest.raises(
        InvalidDataError,
        match=r"source sequences have 2 features per step .*src.npz.* target ones 3 .*wide.npz",
    ):
        LOAD(spec(files[0], tmp_path / "wide.npz"))


def test_bad_sequence_files(tmp_path, files):
    def bad(match, error=InvalidDataError, **arrays):
        np.savez(tmp_path / "bad.npz", **arrays)
        with pytest.raises(error, match=match):
            LOAD(spec(tmp_path / "bad.npz", files[1]))

    bad(r"x has shape \(10, 4\); sequences need \(N, T, F\)", x=np.zeros((10, 4)), y=np.zeros(10))
    bad("no array 'x'", features=np.zeros((10, 4, 2)))
    bad("no array 'y'", x=np.zeros((10, 4, 2)))
    bad(
        r"lengths must lie in \[1, T=4\]",
        x=np.zeros((10, 4, 2)),
        y=np.arange(10) % 2,
        lengths=np.full(10, 5),
    )
    x = np.zeros((10, 4, 2))
    x[3, 1, 0] = np.inf
    bad(
        r"bad.npz has NaN or inf at 1 valid step\(s\) of 1 sequence\(s\), e.g. sequence 3",
        x=x,
        y=np.arange(10) % 2,
    )
    np.savez(tmp_path / "tgt3.npz", x=np.zeros((10, 4, 2)), y=np.arange(10) % 4)
    np.savez(tmp_path / "src2.npz", x=np.zeros((10, 4, 2)), y=np.arange(10) % 2)
    with pytest.raises(InvalidDataError, match=r"\[2, 3\] occur in the target .*tgt3.npz"):
        LOAD(spec(tmp_path / "src2.npz", tmp_path / "tgt3.npz"))
    with pytest.raises(DataError, match="dataset.target=.*none.npz: no such file"):
        LOAD(spec(files[0], tmp_path / "none.npz"))
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(InvalidDataError, match="empty.npz is empty"):
        LOAD(spec(tmp_path / "empty.npz", files[1]))
