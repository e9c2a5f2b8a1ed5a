import gzip
import logging
import struct

import numpy as np
import pytest
import torch

from dann.data import DomainAdaptationDataModule, available_pairs, get_pair
from dann.data.cache import cached_tensors
from dann.data.mnist import load_mnist_full
from dann.data.mnistm import blend_with_photos, load_mnistm_official
from dann.data.registry import split_indices


@pytest.fixture(scope="module")
def datamodule(data_dir):
    dm = DomainAdaptationDataModule("mnist_to_mnistm", data_dir=str(data_dir), batch_size=16)
    dm.setup("fit")
    return dm


def test_target_training_batches_carry_no_labels(datamodule):
    batch = next(iter(datamodule.train_dataloader()))
    batch = batch[0] if isinstance(batch, tuple) else batch  # CombinedLoader may add indices
    x_s, y_s = batch["source"]
    x_t = batch["target"]
    assert isinstance(x_t, torch.Tensor), "target training batch must be images only"
    assert x_s.shape == x_t.shape == (16, 3, 28, 28)
    assert y_s.shape == (16,) and y_s.dtype == torch.long
    # and the underlying dataset holds no labels at all
    assert datamodule.train_dataloader().iterables["target"].labels is None


def test_embedded_split_sizes_and_label_ranges(datamodule):
    for domain in (datamodule.data.source, datamodule.data.target):
        assert (len(domain.train), len(domain.val), len(domain.test)) == (3500, 500, 1000)
        for split in (domain.train, domain.val, domain.test):
            assert split.inputs.dtype == torch.uint8
            assert set(split.labels.tolist()) == set(range(10))  # every digit, nothing else
    # MNIST-M is built from the same digits: same labels, index by index
    assert torch.equal(datamodule.data.source.test.labels, datamodule.data.target.test.labels)
    # the source is grey repeated to 3 channels; the target is colour
    src = datamodule.data.source.train.inputs
    assert torch.equal(src[:, 0], src[:, 1])
    assert not torch.equal(
        datamodule.data.target.train.inputs[:, 0], datamodule.data.target.train.inputs[:, 1]
    )


def test_split_indices_partition():
    a, b, c = split_indices(100, (10, 20), seed=3)
    assert (len(a), len(b), len(c)) == (70, 10, 20)
    assert sorted(torch.cat([a, b, c]).tolist()) == list(range(100))
    assert torch.equal(split_indices(100, (10, 20), seed=3)[1], b)


def test_normalisation_subtracts_pooled_training_mean(datamodule):
    x = torch.cat([datamodule.data.source.train.inputs, datamodule.data.target.train.inputs])
    normed = datamodule.on_after_batch_transfer(x, 0)
    assert normed.dtype == torch.float32
    torch.testing.assert_close(normed.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4, rtol=0)
    labels = torch.arange(5)
    assert torch.equal(datamodule.on_after_batch_transfer((x[:5], labels), 0)[1], labels)


def test_blend_is_abs_patch_minus_digit():
    digits = torch.randint(0, 256, (7, 1, 28, 28), dtype=torch.uint8)
    photo = np.zeros((40, 50, 3), dtype=np.uint8)
    photo[..., 0], photo[..., 1], photo[..., 2] = 200, 30, 0
    out = blend_with_photos(digits, [photo], seed=0)
    d = digits[:, 0].int()
    expected = torch.stack([(200 - d).abs(), (30 - d).abs(), d], dim=1).to(torch.uint8)
    assert torch.equal(out, expected)


def test_generated_mnistm_is_deterministic_per_seed():
    digits = torch.randint(0, 256, (20, 1, 28, 28), dtype=torch.uint8)
    photo = np.random.default_rng(0).integers(0, 256, (60, 70, 3), dtype=np.uint8)
    assert torch.equal(blend_with_photos(digits, [photo], 1), blend_with_photos(digits, [photo], 1))
    assert not torch.equal(
        blend_with_photos(digits, [photo], 1), blend_with_photos(digits, [photo], 2)
    )


def test_cache_reused_when_valid_and_rebuilt_when_corrupt(tmp_path, caplog):
    path = tmp_path / "c.pt"
    calls = []

    def build():
        calls.append(1)
        return {"x": torch.arange(1000)}

    cached_tensors(path, {"v": 1}, build)
    assert torch.equal(cached_tensors(path, {"v": 1}, build)["x"], torch.arange(1000))
    assert len(calls) == 1  # second call read the cache

    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING):
        assert torch.equal(cached_tensors(path, {"v": 1}, build)["x"], torch.arange(1000))
    assert len(calls) == 2 and "checksum mismatch" in caplog.text

    path.write_bytes(path.read_bytes()[:100])  # truncated
    cached_tensors(path, {"v": 1}, build)
    assert len(calls) == 3
    cached_tensors(path, {"v": 2}, build)  # other settings
    assert len(calls) == 4
    assert not list(tmp_path.glob("*.tmp")), "no temp files left behind"


def _write_idx(path, array: np.ndarray, gz: bool = False):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)


def write_mnist_raw(root):
    """40 train + 12 test random digits in torchvision's layout under root/MNIST/raw."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 40), ("t10k", 12)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    return raw


def test_reads_torchvision_mnist_layout(tmp_path):
    write_mnist_raw(tmp_path)
    mnist = load_mnist_full(str(tmp_path), split_seed=0)
    assert (len(mnist.train), len(mnist.val), len(mnist.test)) == (36, 4, 12)
    assert mnist.train.inputs.shape[1:] == (1, 28, 28)
    assert mnist.test.labels.tolist() == [i % 10 for i in range(12)]


def test_missing_mnist_root_names_expected_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"MNIST/raw.*train-images-idx3-ubyte"):
        load_mnist_full(str(tmp_path), split_seed=0)


def test_reads_official_mnistm_png_layout(tmp_path, data_dir):
    from PIL import Image

    base = tmp_path / "mnist_m"
    rng = np.random.default_rng(0)
    for split, n in (("train", 30), ("test", 5)):
        (base / f"mnist_m_{split}").mkdir(parents=True)
        lines = []
        for i in range(n):
            name = f"{i:08d}.png"
            Image.fromarray(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)).save(
                base / f"mnist_m_{split}" / name
            )
            lines.append(f"{name} {(i * 3) % 10}")
        (base / f"mnist_m_{split}_labels.txt").write_text("\n".join(lines) + "\n")
    mnistm = load_mnistm_official(str(tmp_path), data_dir, split_seed=0)
    assert (len(mnistm.train), len(mnistm.val), len(mnistm.test)) == (27, 3, 5)
    assert mnistm.test.inputs.shape == (5, 3, 28, 28)
    assert mnistm.test.labels.tolist() == [0, 3, 6, 9, 2]
    first = np.asarray(Image.open(base / "mnist_m_test" / "00000000.png"))
    assert torch.equal(mnistm.test.inputs[0], torch.from_numpy(first).permute(2, 0, 1))


def test_unknown_pair_lists_choices():
    assert "mnist_to_mnistm" in available_pairs()
    with pytest.raises(ValueError, match="valid choices: .*mnist_to_mnistm"):
        get_pair("mnist_to_nowhere")
    with pytest.raises(ValueError, match="valid choices"):
        DomainAdaptationDataModule("mnist_to_nowhere")


def test_ddp_ranks_draw_disjoint_whole_batches_covering_the_data(datamodule):
    from dann.data.datamodule import InMemoryBatches

    split = datamodule.data.source.train
    ranks = [
        InMemoryBatches(split.inputs, split.labels, 16, seed=3, rank=r, world_size=2)
        for r in (0, 1)
    ]
    assert len(ranks[0]) == len(ranks[1]) == len(split.inputs) // 2 // 16
    orders = [r.order(epoch=0, pass_=0) for r in ranks]
    assert not set(orders[0].tolist()) & set(orders[1].tolist())
    assert len(set(torch.cat(orders).tolist())) >= len(split.inputs) - 2 * 16  # all but the tails
    x, y = next(iter(ranks[1]))
    first = orders[1][:16]  # the batch holds exactly these rows, images and labels
    assert x.shape == (16, 3, 28, 28) and torch.equal(x, split.inputs[first])
    assert torch.equal(y, split.labels[first])


def test_every_training_sample_is_drawn_once_per_epoch(data_dir):
    dm = DomainAdaptationDataModule("mnist_to_mnistm", data_dir=str(data_dir), batch_size=500)
    dm.setup("fit")
    loader = dm.train_dataloader().iterables["source"]
    seen = [y for _, y in loader]
    assert sum(len(y) for y in seen) == len(loader.labels) == 3500  # 7 batches, none repeated
    assert torch.equal(torch.cat(seen).bincount(), loader.labels.bincount())


def test_batch_order_depends_on_seed_epoch_and_pass_only_and_resumes_mid_pass(datamodule):
    from dann.data.datamodule import InMemoryBatches

    split = datamodule.data.target.train
    loader = InMemoryBatches(split.inputs, None, 16, seed=7)
    torch.manual_seed(0)
    first = list(loader)
    torch.manual_seed(1)  # the global RNG plays no part
    assert all(
        torch.equal(a, b)
        for a, b in zip(first, InMemoryBatches(split.inputs, None, 16, seed=7), strict=True)
    )
    second_pass = list(loader)
    assert not torch.equal(first[0], second_pass[0])
    loader.set_epoch(1)
    epoch_1 = list(loader)
    assert not torch.equal(epoch_1[0], first[0])
    resumed = InMemoryBatches(split.inputs, None, 16, seed=7)
    resumed.load_state_dict({"epoch": 1, "pass": 0, "batch": 5})
    rest = list(resumed)
    assert len(rest) == len(epoch_1) - 5
    assert all(torch.equal(a, b) for a, b in zip(rest, epoch_1[5:], strict=True))


def test_checkpointed_preprocessing_round_trips(datamodule):
    state = datamodule.state_dict()
    fresh = DomainAdaptationDataModule("mnist_to_mnistm")
    fresh.load_state_dict(state)
    assert torch.equal(fresh.mean, datamodule.mean.float())
