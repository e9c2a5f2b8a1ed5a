"""The benchmarks' loaders (dann/data/benchmarks.py) on small fake trees in their official
layouts: domains by name and short code, the protocols' splits, DomainNet's split lists, TLlib's
resizing options, VisDA-2017's class-mean accuracy; and each benchmark preset's one command
(`experiment=<preset> trainer.fast_dev_run=true`) on a fake tree without pretrained weights."""

import json

import pytest
import torch
from conftest import compose_cfg
from PIL import Image

from dann.data import get_pair
from dann.data.registry import PairSpec
from dann.errors import DataError, InvalidDataError
from dann.evaluation import mean_class_accuracy


def write_tree(root, domains, classes=("bike", "mug"), n=3, ext="jpg", size=(20, 16)):
    """DOMAIN/CLASS/i.ext solid-colour images (one colour per class)."""
    for d in domains:
        for k, c in enumerate(classes):
            (root / d / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new("RGB", size, (60 * k + i, 100, 200 - 60 * k)).save(
                    root / d / c / f"{i}.{ext}"
                )
    return root


def write_domainnet(root, domains=("clipart", "sketch"), classes=("bike", "mug", "zebra"), n=4):
    write_tree(root, domains, classes, n)
    for d in domains:
        rows = [f"{d}/{c}/{i}.jpg {k}" for k, c in enumerate(classes) for i in range(n)]
        (root / f"{d}_train.txt").write_text("\n".join(rows[1:]) + "\n")  # 11 lines
        (root / f"{d}_test.txt").write_text(rows[0] + "\n")
    return root


def spec(name, root, **options):
    return PairSpec(name, str(root), root / "cache", 0, 32, 3, options)


def test_office_home_reads_the_official_spelling_and_the_short_codes(tmp_path):
    write_tree(tmp_path / "OfficeHomeDataset_10072016", ("Art", "Real World"))
    pair = get_pair("office_home")(spec("office_home", tmp_path, source="Ar", target="Rw"))
    assert (pair.source.name, pair.target.name, pair.num_classes) == ("Art", "Real_World", 2)
    # transductive: every target image in train, val and test; 10% of the source held out
    assert len(pair.target.train) == len(pair.target.val) == len(pair.target.test) == 6
    assert (len(pair.source.train), len(pair.source.val)) == (5, 1)
    assert all("Real World" in p for p, _ in pair.target.test.samples)


def test_unknown_or_repeated_domains_and_missing_files_name_the_fix(tmp_path):
    with pytest.raises(InvalidDataError, match=r"'Photo'.*Art \(Ar/A\), Clipart"):
        get_pair("office_home")(spec("office_home", tmp_path, source="Photo", target="Art"))
    with pytest.raises(InvalidDataError, match="both 'train'"):
        get_pair("visda2017")(spec("visda2017", tmp_path, source="syn", target="train"))
    with pytest.raises(DataError, match=r"'validation' not found.*validation/CLASS.*download=true"):
        write_tree(tmp_path / "visda-2017", ("train",), ext="png")
        get_pair("visda2017")(spec("visda2017", tmp_path))
    with pytest.raises(DataError, match=r"dataset.root=/path with ROOT/DOMAIN/CLASS"):
        get_pair("domainnet")(PairSpec("domainnet", None, tmp_path, 0, 32, 3, {}))


def test_visda2017_defaults_to_synthetic_to_real(tmp_path):
    write_tree(tmp_path / "visda2017", ("train",), ext="png")
    write_tree(tmp_path / "visda2017", ("validation",))
    pair = get_pair("visda2017")(spec("visda2017", tmp_path))
    assert (pair.source.name, pair.target.name) == ("train", "validation")
    assert all(p.endswith(".png") for p, _ in pair.source.train.samples)


def test_domainnet_follows_the_official_split_lists(tmp_path):
    write_domainnet(tmp_path / "domainnet")
    pair = get_pair("domainnet")(spec("domainnet", tmp_path, source="c", target="s"))
    assert pair.num_classes == 3 and pair.preprocessing == {"classes": ["bike", "mug", "zebra"]}
    src, tgt = pair.source, pair.target
    # source: the train list minus val_size (1 of 11) held out; its own test list
    assert (len(src.train), len(src.val), len(src.test)) == (10, 1, 1)
    held_out = {p for p, _ in src.val.samples}
    assert held_out.isdisjoint(p for p, _ in src.train.samples)
    # target: the whole train list unlabelled for training, 1 of it as val; the test list
    assert (len(tgt.train), len(tgt.val), len(tgt.test)) == (11, 1, 1)
    assert tgt.test.samples[0][0].endswith("sketch/bike/0.jpg") and tgt.test.samples[0][1] == 0
    for path, label in src.train.samples:  # the list's label, the image's class folder
        assert path.split("/")[-2] == ["bike", "mug", "zebra"][label]


def test_domainnet_list_errors_name_the_line_or_the_missing_image(tmp_path):
    root = write_domainnet(tmp_path)
    (root / "sketch_test.txt").write_text("sketch/bike/0.jpg\n")
    with pytest.raises(InvalidDataError, match=r"sketch_test.txt, line 1.*IMAGE LABEL"):
        get_pair("domainnet")(spec("domainnet", tmp_path))
    (root / "sketch_test.txt").write_text("sketch/bike/99.jpg 0\n")
    with pytest.raises(DataError, match=r"lists 1 image.*sketch/bike/99.jpg"):
        get_pair("domainnet")(spec("domainnet", tmp_path))


def test_tllib_resizing_options_shape_the_crops(tmp_path):
    write_tree(tmp_path, ("amazon", "webcam"), size=(60, 30))
    options = {"source": "amazon", "target": "webcam", "resize": 40}
    plain = get_pair("office31")(spec("office31", tmp_path, **options))
    square = get_pair("office31")(
        spec("office31", tmp_path, **options, resize_square=True, train_crop="center")
    )
    resizes = [t for t in square.source.train.transform.transforms if "Resize" in type(t).__name__]
    assert resizes[0].size == (40, 40) and "CenterCrop" in repr(square.source.train.transform)
    assert "RandomResizedCrop" in repr(plain.source.train.transform)
    x, _ = square.source.train[0]
    assert x.shape == (3, 32, 32)
    with pytest.raises(InvalidDataError, match="train_crop='corner'.*random_resized, center"):
        get_pair("office31")(spec("office31", tmp_path, **options, train_crop="corner"))


def test_mean_class_accuracy_by_hand():
    # rows: true classes. class 0: 3 of 4 right, one taken for class 2; class 1: 1 of 2;
    # class 2: no example (left out, though predicted once)
    confusion = torch.tensor([[3, 0, 1], [1, 1, 0], [0, 0, 0]])
    assert mean_class_accuracy(confusion).item() == pytest.approx((3 / 4 + 1 / 2) / 2)
    # overall accuracy weights classes by their size: 4/6, not 0.625
    assert confusion.diagonal().sum() / confusion.sum() == pytest.approx(4 / 6)


# ---- the presets: one command each ------------------------------------------------------------

PRESETS = {
    "office31_resnet50": ("office31", ("amazon", "webcam"), "jpg"),
    "office_home_resnet50": ("office_home", ("Art", "Clipart"), "jpg"),
    "visda2017_resnet101": ("visda2017", ("train", "validation"), "png"),
    "office_home_vit": ("office_home", ("Art", "Clipart"), "jpg"),
}


@pytest.mark.parametrize("preset", list(PRESETS))
def test_benchmark_preset_runs_one_batch_on_a_fake_tree(preset, tmp_path, data_dir):
    from dann.train import run

    pair, domains, ext = PRESETS[preset]
    write_tree(tmp_path / "data" / pair, domains, ext=ext)
    cfg = compose_cfg(
        [
            f"experiment={preset}",
            f"dataset.root={tmp_path / 'data'}",
            "backbone.features.pretrained=false",
            "dataset.image_size=32",
            "dataset.resize=36",
            "dataset.batch_size=2",
            "dataset.num_workers=0",
            "dataset.num_classes=2",  # the fake tree's
            "trainer.fast_dev_run=true",
        ],
        tmp_path / "out",
        data_dir,
    )
    assert cfg.dataset.name == pair
    summary = run(cfg)
    assert summary["test/target_acc"] is not None
    if pair == "visda2017":  # its reported metric, beside the accuracy
        saved = json.loads((tmp_path / "out" / "summary.json").read_text())
        assert 0.0 <= saved["test/target_class_mean_acc"] <= 1.0


@pytest.mark.parametrize("preset", list(PRESETS))
def test_presets_give_tllibs_schedules_per_iteration(preset, tmp_path, data_dir):
    """TLlib's lr_i = lr (1 + 0.001 i)^-0.75 and lambda_i = 2 / (1 + exp(-i / 1000)) - 1, at
    every iteration i of the preset's run, from the schedules of progress p = i / max_steps."""
    import math

    from dann.schedules import lr_annealing, warm_start

    cfg = compose_cfg([f"experiment={preset}"], tmp_path, data_dir)
    steps = cfg.trainer.max_steps
    assert cfg.optimizer.optim.nesterov and cfg.optimizer.optim.weight_decay == 0.001
    assert cfg.schedule._target_ == "dann.schedules.warm_start" and cfg.dataset.resize_square
    for i in (0, 1, 500, 1000, 7777, steps):
        p = i / steps
        multiplier = lr_annealing(
            p, cfg.optimizer.lr_annealing.alpha, cfg.optimizer.lr_annealing.beta
        )
        assert multiplier == pytest.approx((1 + 0.001 * i) ** -0.75)
        assert warm_start(p, cfg.schedule.alpha) == pytest.approx(2 / (1 + math.exp(-i / 1000)) - 1)
