"""scripts/predict.py: a checkpoint's class predictions as a CSV, for image files, folders and
.npz arrays, with the checkpoint's own preprocessing."""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    compose_config,
    fast_dev_checkpoint,
    load_script,
    reference_model,
    run_script,
)
from PIL import Image

from dann.errors import reported_as_exit
from dann.module import DALightningModule

predict_script = load_script("predict")


@pytest.fixture(scope="module")
def mnist_ckpt(tmp_path_factory, data_dir) -> Path:
    """mnist_to_mnistm: RGB 28x28 inputs, pooled-mean normalisation."""
    return fast_dev_checkpoint(tmp_path_factory.mktemp("mnist"), data_dir)


@pytest.fixture(scope="module")
def moons_ckpt(tmp_path_factory, data_dir) -> Path:
    return fast_dev_checkpoint(tmp_path_factory.mktemp("moons"), data_dir, "experiment=moons")


def predict_cfg(*overrides: str):
    return compose_config("predict", *overrides)


def read_csv(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(paths, predicted classes, probabilities (N, K))."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    probs = np.array([[float(v) for k, v in r.items() if k.startswith("prob_")] for r in rows])
    return [r["path"] for r in rows], np.array([int(r["predicted"]) for r in rows]), probs


def test_predict_folder_skips_a_corrupt_file_and_predicts_the_rest(mnist_ckpt, tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    grey = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    rgb = rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)
    for i, image in enumerate(grey):
        Image.fromarray(image).save(folder / f"digit{i}.png")
    Image.fromarray(rgb).save(folder / "sub" / "colour.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (folder / "notes.txt").write_text("not an image, not listed")

    run_dir = tmp_path / "run"
    proc = run_script(
        "scripts/predict.py",
        f"ckpt={mnist_ckpt}",
        f"input={folder}",
        "batch_size=2",
        f"hydra.run.dir={run_dir}",
        threads=1,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    for log in (proc.stdout + proc.stderr, (run_dir / "predict.log").read_text()):
        assert "skipped" in log and "broken.png" in log
    paths, predicted, probs = read_csv(tmp_path / "photos_predictions.csv")  # next to the input
    expected = [*(f"{folder}/digit{i}.png" for i in range(4)), f"{folder}/sub/colour.png"]
    assert paths == expected
    assert probs.shape == (5, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # grey PNGs are repeated to the model's 3 channels, as training repeats MNIST's
    pixels = torch.cat(
        [
            torch.from_numpy(grey)[:, None].expand(-1, 3, -1, -1),
            torch.from_numpy(rgb).permute(2, 0, 1)[None],
        ]
    )
    _, logits = reference_model(mnist_ckpt)
    reference = logits(pixels)
    assert predicted.tolist() == reference.argmax(dim=1).tolist()
    np.testing.assert_allclose(probs, reference.softmax(dim=1).numpy(), atol=1e-6)


def test_predict_npz_layouts_and_dtypes_give_the_same_predictions(mnist_ckpt, tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (5, 28, 28, 3), dtype=np.uint8)  # (N, H, W, C) uint8
    np.savez(tmp_path / "nhwc.npz", x=images)
    np.savez(tmp_path / "nchw.npz", x=images.transpose(0, 3, 1, 2).astype(np.float32) / 255)
    results = {}
    for name in ("nhwc", "nchw"):
        out = tmp_path / f"{name}.csv"
        cfg = predict_cfg(f"ckpt={mnist_ckpt}", f"input={tmp_path / name}.npz", f"output={out}")
        predict_script.predict(cfg)
        results[name] = read_csv(out)
    paths, predicted, probs = results["nhwc"]
    assert paths == [f"{tmp_path}/nhwc.npz[{i}]" for i in range(5)]
    np.testing.assert_allclose(results["nchw"][2], probs, atol=1e-7)
    _, logits = reference_model(mnist_ckpt)
    reference = logits(torch.from_numpy(images).permute(0, 3, 1, 2))
    assert predicted.tolist() == reference.argmax(dim=1).tolist()
    np.testing.assert_allclose(probs, reference.softmax(dim=1).numpy(), atol=1e-6)


def test_predict_npz_features_for_a_feature_checkpoint(moons_ckpt, tmp_path):
    x = np.random.default_rng(2).normal(size=(7, 2)).astype(np.float32)
    np.savez(tmp_path / "points.npz", x=x)
    predict_script.predict(predict_cfg(f"ckpt={moons_ckpt}", f"input={tmp_path}/points.npz"))
    paths, predicted, probs = read_csv(tmp_path / "points_predictions.csv")
    module, _ = reference_model(moons_ckpt)
    with torch.no_grad():
        reference = module(torch.from_numpy(x), 1).softmax(dim=1)
    assert len(paths) == 7 and probs.shape == (7, 2)
    assert predicted.tolist() == reference.argmax(dim=1).tolist()
    np.testing.assert_allclose(probs, reference.numpy(), atol=1e-6)


def test_a_run_stopped_half_way_leaves_no_csv(mnist_ckpt, tmp_path):
    from dann.inference import load_predictor

    predictor = load_predictor(mnist_ckpt)
    pixels = torch.zeros(2, 3, 28, 28, dtype=torch.uint8)

    def batches():
        yield ["a", "b"], pixels, 2
        raise KeyboardInterrupt

    out = tmp_path / "preds.csv"
    with pytest.raises(KeyboardInterrupt):
        predict_script.write_csv(out, predictor, batches(), total=4)
    assert list(tmp_path.iterdir()) == []  # neither the CSV nor its temporary file


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["ckpt={tmp}/nope.ckpt", "input={tmp}"], "nope.ckpt"),
        (["input={tmp}/missing"], "does not exist"),
        (["input={tmp}/x.npz", "domain=sideways"], "choose source or target"),
        (["input={tmp}/x.npz", "device=tpu"], "choose auto, cpu, cuda or cuda:N"),
        (["input={tmp}/x.npz", "ckpt={moons}"], "do not fit this moons model (N, 2)"),
        (["input={tmp}/broken.png"], "none of the 1 inputs could be read"),
    ],
)
def test_predict_bad_input_is_a_clear_error(
    overrides, message, mnist_ckpt, moons_ckpt, tmp_path, capsys
):
    np.savez(tmp_path / "x.npz", x=np.zeros((2, 28, 28), dtype=np.uint8))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    args = [o.format(tmp=tmp_path, moons=moons_ckpt) for o in [f"ckpt={mnist_ckpt}", *overrides]]
    with pytest.raises(SystemExit) as exit_, reported_as_exit():
        predict_script.predict(predict_cfg(*args))
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.glob("*.csv"))


def test_folder_pair_images_get_the_pairs_evaluation_transform():
    """office31/folder checkpoints: pixels() + prepare() == the pair's eval transform."""
    from dann.data import DomainAdaptationDataModule
    from dann.data.folders import folder_transforms
    from dann.inference import Predictor

    datamodule = DomainAdaptationDataModule(
        "folder", channels=3, image_size=32, resize=40, norm_mean=[0.5, 0.4, 0.3]
    )
    predictor = Predictor(None, datamodule, 1, torch.device("cpu"))
    rng = np.random.default_rng(3)
    image = Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8))
    pixels = predictor.pixels(image)
    assert pixels.shape == (3, 32, 32) and pixels.dtype == torch.uint8
    expected = folder_transforms(datamodule.spec)[1](image)
    torch.testing.assert_close(predictor.prepare(pixels[None])[0], expected)


def test_predict_with_a_folder_checkpoint_writes_the_class_folder_names(tmp_path, data_dir):
    """A dataset=folder checkpoint (ImageFolder DIR/CLASS/*.jpg) saves its class names:
    predicted_label is the class folder of the predicted index, not just the index."""
    from test_folder_pairs import CLASSES, folder_overrides, write_image_folder

    src = write_image_folder(tmp_path / "photos", n=3)
    tgt = write_image_folder(tmp_path / "sketches", n=2)
    ckpt = fast_dev_checkpoint(tmp_path, data_dir, *folder_overrides(src, tgt))
    out = tmp_path / "pred.csv"
    predict_script.predict(predict_cfg(f"ckpt={ckpt}", f"input={tgt}", f"output={out}"))
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and list(rows[0])[:3] == ["path", "predicted", "predicted_label"]
    assert all(r["predicted_label"] == CLASSES[int(r["predicted"])] for r in rows)


# ---- checkpoints of file pairs: the input file gets the checkpoint's fitted preprocessing -------


def file_pair_reference(ckpt: Path, domain: str):
    """The checkpoint's module, and the datamodule rebuilt from the checkpoint (its saved
    preprocessing) with `domain`'s test rows: (module, encoded test inputs, their row indices
    in the file)."""
    from dann.data import DomainAdaptationDataModule
    from dann.data.userfiles import split_rows

    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    module = DALightningModule(**state["hyper_parameters"])
    module.load_state_dict(state["state_dict"])
    module.eval()
    hp = dict(state["datamodule_hyper_parameters"])
    hp.update(hp.pop("options", None) or {})
    datamodule = DomainAdaptationDataModule(**hp)
    datamodule.load_state_dict(state["DomainAdaptationDataModule"])
    datamodule.setup("test")
    split = getattr(datamodule.data, domain).test
    n = len(getattr(datamodule.data, domain).train) + len(getattr(datamodule.data, domain).val)
    seed = hp["split_seed"] + (domain == "target")
    file = Path(hp[domain])
    rows = split_rows(n + len(split), hp["val_fraction"], hp["test_fraction"], seed, file)[2]
    return module, split.inputs, rows.tolist()


def check_file_predictions(ckpt: Path, domain: str, csv_path: Path, classes: list) -> None:
    """The CSV's rows of `domain`'s test split == the module's argmax on the datamodule's own
    encoded test inputs; predicted_label is the original class label of the index."""
    module, inputs, rows = file_pair_reference(ckpt, domain)
    with open(csv_path, newline="") as f:
        table = list(csv.DictReader(f))
    with torch.no_grad():
        reference = module(inputs, 1).softmax(dim=1)
    picked = [table[i] for i in rows]
    assert [int(r["predicted"]) for r in picked] == reference.argmax(dim=1).tolist()
    probs = np.array([[float(r[f"prob_{k}"]) for k in range(len(classes))] for r in picked])
    np.testing.assert_allclose(probs, reference.numpy(), atol=1e-6)
    assert all(r["predicted_label"] == str(classes[int(r["predicted"])]) for r in table)


@pytest.fixture(scope="module")
def table_ckpt(tmp_path_factory, data_dir) -> Path:
    """test_tables' pair (label `outcome`: yes / no; a categorical column), both files CSV."""
    from test_tables import frame

    out = tmp_path_factory.mktemp("table")
    frame(200, 0).to_csv(out / "hospital_a.csv", index=False)
    frame(100, 1, target=True).to_csv(out / "hospital_b.csv", index=False)
    return fast_dev_checkpoint(
        out, data_dir, "dataset=table", "dataset.label=outcome",
        f"dataset.source={out / 'hospital_a.csv'}", f"dataset.target={out / 'hospital_b.csv'}",
    )  # fmt: skip


def test_predict_a_table_csv_with_the_checkpoints_preprocessing(table_ckpt, tmp_path, caplog):
    import pandas as pd

    ckpt, tgt = table_ckpt, table_ckpt.with_name("hospital_b.csv")
    target = pd.read_csv(tgt)
    out = tmp_path / "pred.csv"
    with caplog.at_level("INFO"):
        predict_script.predict(predict_cfg(f"ckpt={ckpt}", f"input={tgt}", f"output={out}"))
    assert "labels (100) are not used" in caplog.text
    paths, predicted, probs = read_csv(out)
    assert paths == [f"{tgt}[{i}]" for i in range(100)] and probs.shape == (100, 2)
    check_file_predictions(ckpt, "target", out, ["no", "yes"])
    # the same rows without the label column, columns in another order: the same predictions
    shuffled = tmp_path / "shuffled.csv"
    target.drop(columns=["outcome"])[list(target.columns[-2::-1])].to_csv(shuffled, index=False)
    predict_script.predict(predict_cfg(f"ckpt={ckpt}", f"input={shuffled}"))
    again = read_csv(tmp_path / "shuffled_predictions.csv")
    np.testing.assert_allclose(again[2], probs, atol=1e-7)


def test_predict_a_text_csv_with_the_checkpoints_vocabulary(tmp_path, data_dir):
    from test_text import reviews, write_jsonl

    src, tgt = tmp_path / "books.csv", tmp_path / "kitchen.jsonl"
    reviews(200, 0).to_csv(src, index=False)
    write_jsonl(reviews(100, 1, target=True), tgt)
    ckpt = fast_dev_checkpoint(
        tmp_path / "run",
        data_dir,
        "dataset=text",
        "dataset.text_column=review",
        "dataset.label=sentiment",
        f"dataset.source={src}",
        f"dataset.target={tgt}",
    )
    out = tmp_path / "pred.csv"
    predict_script.predict(predict_cfg(f"ckpt={ckpt}", f"input={src}", f"output={out}"))
    check_file_predictions(ckpt, "source", out, ["neg", "pos"])


def test_predict_file_pair_bad_input_is_a_clear_error(table_ckpt, tmp_path, capsys):
    from test_tables import frame

    ckpt = table_ckpt
    frame(5, 2).drop(columns=["b"]).to_csv(tmp_path / "narrow.csv", index=False)
    (tmp_path / "x.txt").write_text("a,b\n1,2\n")
    for name, message in [
        ("narrow.csv", "are not the ones the checkpoint was trained with"),
        ("x.txt", "a table checkpoint reads .csv, .parquet, .pq, .npz files"),
    ]:
        with pytest.raises(SystemExit) as exit_, reported_as_exit():
            predict_script.predict(predict_cfg(f"ckpt={ckpt}", f"input={tmp_path / name}"))
        assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not list(tmp_path.glob("*predictions.csv"))
