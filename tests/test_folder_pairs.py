"""Folder-based pairs (office31, folder, synsigns_to_gtsrb) on tiny fixture folders written in
the real on-disk layouts."""

import json
import pickle

import pytest
import torch
from conftest import fast_dev_checkpoint, run_and_recount
from PIL import Image
from test_evaluate import evaluate_py

from dann.data import DomainAdaptationDataModule, get_pair
from dann.data import folders as folders_module
from dann.data.registry import PairSpec

CLASSES = ["back_pack", "bike", "calculator"]
MEAN, STD = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
COLOURS = {0: (200, 30, 10), 1: (20, 180, 60), 2: (40, 50, 220)}  # one solid colour per class


def write_images(folder, n, label, ext="jpg", size=(24, 20)):
    """n solid-colour images of class `label` (a slightly different shade each)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        colour = tuple(c + i for c in COLOURS[label])
        Image.new("RGB", size, colour).save(folder / f"img_{i:03d}.{ext}")


def write_image_folder(root, classes=CLASSES, n=4, ext="jpg"):
    for label, name in enumerate(classes):
        write_images(root / name, n, label % 3, ext)
    return root


def folder_overrides(source, target) -> list[str]:
    """dataset=folder on two tiny image folders: 32 px, small batches, no workers."""
    return [
        "dataset=folder",
        f"dataset.source_root={source}",
        f"dataset.target_root={target}",
        "dataset.image_size=32",
        "dataset.resize=36",
        "dataset.batch_size=4",
        "dataset.eval_batch_size=8",
        "dataset.num_workers=0",
        "dataset.pin_memory=false",
    ]


def spec(name, root=None, data_dir="data", **options):
    return PairSpec(name, str(root) if root else None, data_dir, 0, 32, 3, options)


# ---- ImageFolder class matching and errors ----------------------------------------------------


def test_class_mismatch_lists_classes_only_in_each_domain(tmp_path):
    src = write_image_folder(tmp_path / "src", ["a", "b", "c"], n=1)
    tgt = write_image_folder(tmp_path / "tgt", ["a", "b", "d"], n=1)
    load = get_pair("folder")
    with pytest.raises(ValueError, match=r"only in source .*\['c'\].*only in target .*\['d'\]"):
        load(spec("folder", source_root=str(src), target_root=str(tgt)))


def test_empty_class_folder_is_named(tmp_path):
    src = write_image_folder(tmp_path / "src", n=1)
    tgt = write_image_folder(tmp_path / "tgt", n=1)
    for f in (tgt / "bike").iterdir():
        f.unlink()
    (tgt / "bike" / "notes.txt").write_text("not an image")
    with pytest.raises(FileNotFoundError, match=r"empty class folder.*tgt/bike"):
        get_pair("folder")(spec("folder", source_root=str(src), target_root=str(tgt)))


def test_domain_without_class_folders_is_named(tmp_path):
    src = write_image_folder(tmp_path / "src", n=1)
    (tmp_path / "tgt").mkdir()
    with pytest.raises(FileNotFoundError, match=r"tgt has no class subfolders"):
        get_pair("folder")(spec("folder", source_root=str(src), target_root=str(tmp_path / "tgt")))
    with pytest.raises(FileNotFoundError, match="source_root"):
        get_pair("folder")(spec("folder"))


def test_unknown_office_domain_lists_choices(tmp_path):
    with pytest.raises(
        ValueError, match=r"'caltech'.*choices: amazon \(A\), dslr \(D\), webcam \(W\)"
    ):
        get_pair("office31")(spec("office31", tmp_path, source="caltech", target="webcam"))
    with pytest.raises(FileNotFoundError, match=r"dataset.root=.*amazon,dslr,webcam"):
        get_pair("office31")(spec("office31", source="amazon", target="webcam"))


# ---- office31 ---------------------------------------------------------------------------------


@pytest.fixture
def office_root(tmp_path):
    root = tmp_path / "office31"
    write_image_folder(root / "amazon" / "images", n=4)  # the official release: DOMAIN/images/
    write_image_folder(root / "webcam", n=3)  # the flat layout: DOMAIN/CLASS/
    return root


def test_office31_loads_both_layouts_with_the_transductive_protocol(office_root):
    pair = get_pair("office31")(spec("office31", office_root, source="amazon", target="webcam"))
    assert pair.num_classes == 3
    src, tgt = pair.source, pair.target
    assert (src.name, tgt.name) == ("amazon", "webcam")
    assert (len(src.train), len(src.val), len(src.test)) == (11, 1, 1)  # 10% of 12 held out
    assert len(tgt.train) == len(tgt.val) == len(tgt.test) == 9  # all target images, everywhere
    held_out = {p for p, _ in src.val.samples}
    assert held_out.isdisjoint(p for p, _ in src.train.samples)
    # the same class name has the same index in both domains
    assert sorted({y for _, y in tgt.test.samples}) == [0, 1, 2]
    for path, y in src.train.samples + tgt.test.samples:
        assert path.split("/")[-2] == CLASSES[y]
    # eval transform: centre crop to image_size, then ImageNet normalisation of the solid colour
    x, y = tgt.test[0]
    expected = (torch.tensor(COLOURS[y]).float() / 255 - MEAN) / STD
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    torch.testing.assert_close(x.mean(dim=(1, 2)), expected, atol=0.02, rtol=0)
    # splits survive pickling (DataLoader workers under spawn)
    restored = pickle.loads(pickle.dumps(src.train))
    assert restored[0][0].shape == (3, 32, 32)


def test_office31_unpacked_by_the_download_under_root_office31(office_root):
    # scripts/download.py office31 --root R leaves R/office31/{amazon,dslr,webcam}/images/
    pair = get_pair("office31")(
        spec("office31", office_root.parent, source="amazon", target="webcam")
    )
    assert (pair.source.name, pair.num_classes, len(pair.target.test)) == ("amazon", 3, 9)


def test_office31_same_domain_twice_is_rejected(office_root):
    with pytest.raises(ValueError, match="both 'amazon'"):
        get_pair("office31")(spec("office31", office_root, source="amazon", target="amazon"))


def test_office31_datamodule_batches_and_class_count_check(office_root, tmp_path):
    kwargs = dict(
        root=str(office_root),
        data_dir=str(tmp_path / "cache"),
        batch_size=4,
        eval_batch_size=8,
        image_size=32,
        num_workers=0,
        source="webcam",
        target="amazon",
        resize=36,
    )
    dm = DomainAdaptationDataModule("office31", num_classes=3, **kwargs)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    batch = batch[0] if isinstance(batch, tuple) else batch
    (x_s, y_s), x_t = batch["source"], batch["target"]
    assert isinstance(x_t, torch.Tensor), "target training batch must be images only"
    assert x_s.shape == x_t.shape == (4, 3, 32, 32) and x_s.dtype == torch.float32
    assert y_s.shape == (4,) and y_s.dtype == torch.long
    # float images pass the datamodule's uint8 normalisation untouched (already normalised)
    assert torch.equal(dm.on_after_batch_transfer(x_s, 0), x_s)
    x_val, y_val = next(iter(dm.val_dataloader()[1]))  # target val: all 12 amazon images
    assert x_val.shape == (8, 3, 32, 32) and len(dm.val_dataloader()[1].dataset) == 12
    with pytest.raises(ValueError, match="has 3 classes but dataset.num_classes=31"):
        DomainAdaptationDataModule("office31", num_classes=31, **kwargs).setup("fit")


def test_generic_folder_pair(tmp_path):
    src = write_image_folder(tmp_path / "photos", n=5, ext="png")
    tgt = write_image_folder(tmp_path / "sketches", n=2)
    pair = get_pair("folder")(spec("folder", source_root=str(src), target_root=str(tgt)))
    assert pair.num_classes == 3 and (pair.source.name, pair.target.name) == ("photos", "sketches")
    assert (len(pair.source.train), len(pair.source.val)) == (13, 2)  # 10% of 15, rounded
    assert len(pair.target.train) == len(pair.target.test) == 6
    x, _ = pair.source.train[0]  # train transform: random resized crop to image_size
    assert x.shape == (3, 32, 32)


# ---- synsigns_to_gtsrb ------------------------------------------------------------------------


def write_signs_root(root, synsigns_classes=("0", "1", "2")):
    """SynSigns class folders + GTSRB in torchvision's layout, 3 classes."""
    for name in synsigns_classes:
        write_images(root / "synsigns" / name, 4, int(name) % 3, "png", size=(40, 40))
    gtsrb = root / "gtsrb"
    for c in range(3):
        folder = gtsrb / "GTSRB" / "Training" / f"{c:05d}"
        write_images(folder, 4, c, "ppm", size=(30 + c, 28))
        rows = [f"img_{i:03d}.ppm;{30 + c};28;1;1;20;20;{c}" for i in range(4)]
        header = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"
        (folder / f"GT-{c:05d}.csv").write_text("\n".join([header, *rows]) + "\n")
    images = gtsrb / "GTSRB" / "Final_Test" / "Images"
    images.mkdir(parents=True)
    rows = []
    for i, c in enumerate([2, 0, 1]):
        Image.new("RGB", (48, 44), COLOURS[c]).save(images / f"{i:05d}.ppm")
        rows.append(f"{i:05d}.ppm;48;44;5;5;40;40;{c}")
    header = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"
    (gtsrb / "GT-final_test.csv").write_text("\n".join([header, *rows]) + "\n")
    return root


def test_synsigns_to_gtsrb_in_memory_and_cached(tmp_path, monkeypatch):
    from torchvision.datasets import GTSRB

    root = write_signs_root(tmp_path / "signs")
    assert len(GTSRB(root, split="test")) == 3 and len(GTSRB(root, split="train")) == 12
    decoded = []
    real_decode = folders_module.decode_resized
    monkeypatch.setattr(
        folders_module, "decode_resized", lambda p, s: decoded.append(len(p)) or real_decode(p, s)
    )
    cache = tmp_path / "cache"
    pair = get_pair("synsigns_to_gtsrb")(spec("synsigns_to_gtsrb", root, cache))
    assert pair.num_classes == 3 and decoded == [12, 12, 3]
    src, tgt = pair.source, pair.target
    assert (len(src.train), len(src.val), len(src.test)) == (10, 1, 1)
    assert (len(tgt.train), len(tgt.val), len(tgt.test)) == (11, 1, 3)
    for split in (src.train, tgt.train, tgt.test):
        assert split.inputs.shape[1:] == (3, 32, 32) and split.inputs.dtype == torch.uint8
    # test labels come from GT-final_test.csv; pixels are the decoded solid colours
    assert tgt.test.labels.tolist() == [2, 0, 1]
    assert tgt.test.inputs[0, :, 16, 16].tolist() == list(COLOURS[2])
    # the second load reads the caches; a changed file invalidates its domain's cache only
    get_pair("synsigns_to_gtsrb")(spec("synsigns_to_gtsrb", root, cache))
    assert decoded == [12, 12, 3]
    write_images(root / "synsigns" / "1", 5, 1, "png", size=(40, 40))  # one image more
    again = get_pair("synsigns_to_gtsrb")(spec("synsigns_to_gtsrb", root, cache))
    assert decoded == [12, 12, 3, 13] and len(again.source.train) == 11


def test_synsigns_release_layout_with_its_labelling_file(tmp_path):
    """synthetic_data.zip unzipped: synthetic_data/train/*.png + train_labelling.txt."""
    root = write_signs_root(tmp_path / "signs")
    release = root / "synthetic_data"
    (release / "train").mkdir(parents=True)
    lines = []
    for c in (0, 1, 2):
        for i, png in enumerate(sorted((root / "synsigns" / str(c)).glob("*.png"))):
            name = f"train/{c:02d}{i:03d}.png"
            png.rename(release / name)
            lines.append(f"{name} {c} 1")
    (release / "train_labelling.txt").write_text("\n".join(lines) + "\n")
    for folder in (root / "synsigns").iterdir():
        folder.rmdir()
    (root / "synsigns").rmdir()
    pair = get_pair("synsigns_to_gtsrb")(spec("synsigns_to_gtsrb", root, tmp_path / "cache"))
    assert pair.num_classes == 3 and len(pair.source.train) == 10
    labels = torch.cat([pair.source.train.labels, pair.source.val.labels, pair.source.test.labels])
    assert sorted(labels.tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    # a listed image that is not there is named, with the fix
    (release / "train" / "00000.png").unlink()
    with pytest.raises(FileNotFoundError, match="unzip the whole synthetic_data.zip"):
        get_pair("synsigns_to_gtsrb")(spec("synsigns_to_gtsrb", root, tmp_path / "cache"))


def test_synsigns_class_folders_match_gtsrb_by_integer_id(tmp_path):
    root = write_signs_root(tmp_path / "signs", synsigns_classes=("00000", "1", "3"))
    with pytest.raises(ValueError, match=r"only in source .*\[3\].*only in target .*\[2\]"):
        get_pair("synsigns_to_gtsrb")(spec("synsigns_to_gtsrb", root, tmp_path / "cache"))


def test_synsigns_to_gtsrb_missing_files_name_the_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"dataset.root=.*synsigns/CLASSID/\*.png"):
        get_pair("synsigns_to_gtsrb")(spec("synsigns_to_gtsrb"))
    write_images(tmp_path / "synsigns" / "0", 1, 0, "png")
    with pytest.raises(FileNotFoundError, match=r"GT-final_test.csv.*torchvision"):
        get_pair("synsigns_to_gtsrb")(spec("synsigns_to_gtsrb", tmp_path))


def test_synsigns_to_gtsrb_datamodule_batch(tmp_path):
    root = write_signs_root(tmp_path / "signs")
    dm = DomainAdaptationDataModule(
        "synsigns_to_gtsrb",
        root=str(root),
        data_dir=str(tmp_path / "cache"),
        num_classes=3,
        image_size=32,
        batch_size=4,
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    batch = batch[0] if isinstance(batch, tuple) else batch
    (x_s, y_s), x_t = batch["source"], batch["target"]
    assert x_s.shape == x_t.shape == (4, 3, 32, 32) and x_t.dtype == torch.uint8
    assert y_s.shape == (4,)
    assert dm.train_dataloader().iterables["target"].labels is None
    assert dm.mean is not None and dm.mean.shape == (1, 3, 1, 1)  # pooled uint8 training mean
    # the per-channel mean of every pixel of both domains' training images, on the [0, 1] scale
    pooled = [dm.data.source.train.inputs, dm.data.target.train.inputs]
    sums = sum(x.double().sum(dim=(0, 2, 3)) for x in pooled)
    pixels = sum(x.numel() // x.shape[1] for x in pooled)
    torch.testing.assert_close(dm.mean.flatten().double(), sums / pixels / 255, atol=1e-6, rtol=0)


def test_fast_dev_run_trains_on_a_folder_pair(tmp_path, make_cfg):

    src = write_image_folder(tmp_path / "photos", n=3)
    tgt = write_image_folder(tmp_path / "sketches", n=2)
    summary, recount = run_and_recount(
        make_cfg(*folder_overrides(src, tgt), "dataset.num_classes=3", "trainer.fast_dev_run=true")
    )
    for key in ("test/source_acc", "test/target_acc"):  # what the tested weights score
        assert summary[key] == pytest.approx(recount[key], abs=1e-6), key


def test_folder_checkpoint_keeps_its_class_names_and_scores_new_folders_whole(tmp_path, data_dir):
    """The class folder names travel in the checkpoint (the pair's preprocessing); evaluate.py
    on a new source folder holding two of the three classes scores all its images with the
    checkpoint's class indices, and the unchanged target on its test split, and says so."""
    src = write_image_folder(tmp_path / "photos", n=3)
    tgt = write_image_folder(tmp_path / "sketches", n=2)
    ckpt = fast_dev_checkpoint(tmp_path, data_dir, *folder_overrides(src, tgt))
    state = torch.load(ckpt, weights_only=True)["DomainAdaptationDataModule"]
    assert state["preprocessing"] == {"classes": CLASSES}
    new = write_image_folder(tmp_path / "new_photos", classes=CLASSES[1:], n=5)
    out = tmp_path / "eval"
    proc = evaluate_py(
        f"ckpt={ckpt}", f"dataset.source_root={new}", f"hydra.run.dir={out}", data_dir=data_dir
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    source, target = metrics["source"], metrics["target"]
    assert (source["split"], source["examples"], source["n"]) == ("all", 10, 10)
    assert [sum(row) for row in source["confusion_matrix"]] == [0, 5, 5]  # back_pack: none
    assert (target["split"], target["examples"], target["n"]) == ("test", 6, 6)
    log = proc.stderr + proc.stdout
    assert "folder source (new_photos): scoring all 10 examples" in log
    assert "folder target (sketches): scoring its test split, 6 examples" in log
    # a class folder the checkpoint was not trained with: an error naming it
    write_images(new / "desk_lamp", 2, 0)
    proc = evaluate_py(
        f"ckpt={ckpt}", f"dataset.source_root={new}", f"hydra.run.dir={out}", data_dir=data_dir
    )
    assert proc.returncode == 2 and "['desk_lamp'] the checkpoint was not trained" in proc.stderr
