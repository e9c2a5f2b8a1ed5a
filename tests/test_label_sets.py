"""Partial, open-set and universal adaptation: the label sets cut and relabel every split of
both domains (in-memory pairs and image files alike), the open-set metrics against hand counts,
PADA's and OSBP's losses against hand computations, the clear errors, and runs of each setting
on images and tables, with predictions that say "unknown"."""

import csv
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dann.data.folders import ImageFiles
from dann.data.label_sets import LabelSets
from dann.data.registry import DomainData, PairData, Split
from dann.errors import ConfigError
from dann.grl import GradientReversal
from dann.methods import OSBP, PADA, OVANet
from dann.methods.osbp import unknown_boundary_loss
from dann.methods.ovanet import hard_negative_loss, one_vs_all_probabilities, open_entropy
from dann.open_set import open_set_prediction, open_set_scores
from dann.train import build, run
from tests.conftest import run_and_recount


def _split(labels: list[int]) -> Split:
    labels = torch.tensor(labels)
    return Split(torch.arange(len(labels), dtype=torch.float32)[:, None] * 10, labels)


def _pair(labels: list[int]) -> PairData:
    domain = lambda name: DomainData(name, _split(labels), _split(labels), _split(labels))  # noqa: E731
    return PairData(domain("s"), domain("t"), 5)


@pytest.mark.parametrize(
    ("source", "target", "setting"),
    [
        (None, None, "closed"),
        (None, [0, 2], "partial"),
        ([0, 1, 2], None, "open_set"),
        ([1, 3, 4], [0, 1, 3], "universal"),
    ],
)
def test_the_setting_follows_from_the_two_lists(source, target, setting):
    assert LabelSets.from_config(source, target, 5).setting == setting


def test_each_domain_keeps_its_classes_relabelled_and_unknown_marked():
    labels = [0, 1, 2, 3, 4, 4, 1]
    sets = LabelSets.from_config([4, 1, 3], [0, 1, 3], 5)  # universal; order given is not kept
    pair = sets.apply(_pair(labels))
    for split in ("train", "val", "test"):
        source, target = getattr(pair.source, split), getattr(pair.target, split)
        # source: classes 1, 3, 4 -> model classes 0, 1, 2 (sorted); 0 and 2 dropped
        assert source.labels.tolist() == [0, 1, 2, 2, 0]
        assert (source.inputs[:, 0] / 10).long().tolist() == [1, 3, 4, 5, 6]  # the rows they were
        # target: 1 -> 0, 3 -> 1, 0 (not a source class) -> unknown = 3; 2 and 4 dropped
        assert target.labels.tolist() == [3, 0, 1, 0]
        assert (target.inputs[:, 0] / 10).long().tolist() == [0, 1, 3, 6]
    assert sets.known == 3 and sets.unknown_in_target


def test_image_files_are_cut_the_same_way():
    files = ImageFiles([("a.png", 0), ("b.png", 2), ("c.png", 1), ("d.png", 2)])
    pair = PairData(DomainData("s", files, files, files), DomainData("t", files, files, files), 3)
    pair = LabelSets.from_config([1, 2], None, 3).apply(pair)  # open-set: 0 is unknown (2)
    assert pair.source.train.samples == [("b.png", 1), ("c.png", 0), ("d.png", 1)]
    assert pair.target.test.samples == [("a.png", 2), ("b.png", 1), ("c.png", 0), ("d.png", 1)]
    assert len(files.samples) == 4  # the loader's own dataset is left as it was


@pytest.mark.parametrize(
    ("source", "target", "message"),
    [
        ([0, 7], None, r"\[7\] not among the pair's classes 0-4"),
        ([1, 1], None, "a class listed twice"),
        ([], None, "empty"),
        ([0, 1], [2, 3], "share no class"),
    ],
)
def test_bad_class_lists_are_refused_naming_the_fix(source, target, message):
    with pytest.raises(ConfigError, match=message):
        LabelSets.from_config(source, target, 5)


def test_a_split_left_empty_is_refused():
    pair = _pair([0, 1, 1])
    with pytest.raises(ConfigError, match="holds no example of the classes kept"):
        LabelSets.from_config([2, 3], None, 5).apply(pair)


def test_open_set_scores_from_hand_counts():
    # rows: true class (0, 1 known; 2 unknown), columns: predicted
    confusion = torch.tensor([[8, 2, 0], [1, 3, 0], [3, 0, 3]])
    scores = open_set_scores(confusion)
    known = (8 / 10 + 3 / 4) / 2
    unknown = 3 / 6
    assert scores["os_star"] == pytest.approx(known)
    assert scores["unknown_recall"] == pytest.approx(unknown)
    assert scores["os"] == pytest.approx((8 / 10 + 3 / 4 + 3 / 6) / 3)
    assert scores["h_score"] == pytest.approx(2 * known * unknown / (known + unknown))
    assert scores["acc"] == pytest.approx(14 / 20)
    # no unknown example: unknown recall and H-score are 0, not a division by zero
    none = open_set_scores(torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 0]]))
    assert none["unknown_recall"] == 0 and none["h_score"] == 0 and none["os_star"] == 1


def test_open_set_prediction_by_confidence_or_by_the_unknown_output():
    logits = torch.tensor([[4.0, 0.0], [0.1, 0.0]])  # confident class 0; about 0.52 class 0
    assert open_set_prediction(logits, 2, 0.5).tolist() == [0, 0]
    assert open_set_prediction(logits, 2, 0.6).tolist() == [0, 2]  # below 0.6: unknown
    with_unknown = torch.tensor([[0.0, 1.0, 3.0], [2.0, 0.0, 1.0]])
    assert open_set_prediction(with_unknown, 2, 0.99).tolist() == [2, 0]  # argmax, no threshold


def test_pada_weights_classes_by_the_mean_target_prediction():
    pada = PADA(in_features=4, num_classes=3, hidden=[8])
    features = torch.randn(6, 4)
    target_logits = torch.tensor([[2.0, 0.0, -2.0], [1.0, 1.0, -3.0], [3.0, 0.0, -1.0]])
    logits = torch.cat([torch.zeros(3, 3), target_logits])
    labels = torch.tensor([0, 2, 1])
    out = pada(features, logits, 3, 1.0, source_labels=labels)
    # before any epoch ends the weights are 1: the domain loss is DANN's
    d, t = out.domain_logits, out.domain_targets
    assert float(out.losses["domain_loss"].detach()) == pytest.approx(
        float(F.binary_cross_entropy_with_logits(d.detach(), t))
    )
    pada.on_train_epoch_end()
    mean = F.softmax(target_logits, dim=1).mean(dim=0)
    expected = mean / mean.mean()
    assert torch.allclose(pada.class_weight, expected, atol=1e-6)
    assert pada.label_class_weights() is pada.class_weight
    # the next step: source rows weighted by their class's weight, target rows by 1
    out = pada(features, logits, 3, 1.0, source_labels=labels)
    d = out.domain_logits.detach()
    per_row = -(t * F.logsigmoid(d) + (1 - t) * F.logsigmoid(-d))
    weights = torch.cat([expected[labels], torch.ones(3)])
    loss = float(out.losses["domain_loss"].detach())
    assert loss == pytest.approx(float((weights * per_row).mean()))


def test_pada_label_loss_is_the_weighted_mean_of_the_reference(make_cfg):
    module = build(make_cfg("method=pada", "dataset.target_classes=[0,1,2,3,4]"))[1]
    module.method.class_weight.copy_(torch.linspace(0.2, 2.0, 10))
    logits, labels = torch.randn(6, 10), torch.tensor([0, 9, 3, 3, 5, 1])
    w = module.method.class_weight[labels]
    per_row = F.cross_entropy(logits, labels, reduction="none")
    assert float(module._label_loss(logits, labels)) == pytest.approx(
        float((w * per_row).sum() / w.sum()), rel=1e-6
    )


def test_osbp_trains_the_classifier_towards_the_boundary_and_the_features_away():
    torch.manual_seed(0)
    classifier = torch.nn.Linear(4, 3)  # 2 known classes + unknown
    osbp = OSBP(in_features=4, num_classes=2)
    osbp.attach(classifier)
    assert not list(osbp.parameters())  # the classifier is the module's, not a submodule
    features = torch.randn(5, 4, requires_grad=True)
    loss = osbp(features, classifier(features), 2, 0.7).losses["unknown_loss"]
    p = F.softmax(classifier(features[2:]), dim=1)[:, -1]
    hand = -(0.5 * torch.log(p + 1e-6) + 0.5 * torch.log(1 - p + 1e-6)).mean()
    assert float(loss) == pytest.approx(float(hand), rel=1e-6)
    assert float(unknown_boundary_loss(torch.tensor([0.5]), 0.5)) == pytest.approx(
        math.log(2), rel=1e-5
    )
    loss.backward()
    grad_features, grad_weight = features.grad.clone(), classifier.weight.grad.clone()
    # the same loss without the reversal: the classifier's gradient is the same, the features'
    # is -1 / 0.7 times the reversed one (source rows get none)
    features.grad, classifier.weight.grad = None, None
    plain = unknown_boundary_loss(F.softmax(classifier(features[2:]), dim=1)[:, -1], 0.5)
    plain.backward()
    assert torch.allclose(classifier.weight.grad, grad_weight, atol=1e-6)
    assert torch.allclose(grad_features[2:], -0.7 * features.grad[2:], atol=1e-6)
    assert torch.all(grad_features[:2] == 0)
    assert isinstance(osbp.grl, GradientReversal)


def test_ovanet_losses_and_unknown_rule_against_hand_computations():
    torch.manual_seed(0)
    ova_logits = torch.randn(4, 6)  # 4 rows, 3 classes: (N, 2, K) = [not k, is k] per class
    probs = one_vs_all_probabilities(ova_logits)
    labels = torch.tensor([0, 2, 1, 2])
    pos, neg = [], []
    for i, y in enumerate(labels.tolist()):
        pair = ova_logits[i].view(2, 3)
        p = [torch.softmax(pair[:, k], dim=0) for k in range(3)]  # [p(not k), p(k)]
        pos.append(-torch.log(p[y][1] + 1e-8))
        neg.append(max(-torch.log(p[k][0] + 1e-8) for k in range(3) if k != y))
    hand = 0.5 * (torch.stack(pos).mean() + torch.stack(neg).mean())
    assert float(hard_negative_loss(probs, labels)) == pytest.approx(float(hand), rel=1e-6)
    binary = [
        -sum(
            q * math.log(q + 1e-8)
            for q in torch.softmax(ova_logits[i].view(2, 3)[:, k], 0).tolist()
        )
        for i in range(4)
        for k in range(3)
    ]
    assert float(open_entropy(probs)) == pytest.approx(sum(binary) / len(binary), rel=1e-6)
    # unknown: the predicted class's own classifier says "not it" (p > 0.5)
    method = OVANet(in_features=2, num_classes=2)
    with torch.no_grad():
        method.one_vs_all.weight.zero_()
        method.one_vs_all.bias.copy_(torch.tensor([2.0, -2.0, 0.0, 0.0]))  # [not0, not1, is0, is1]
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # predicted 0, then 1
    assert method.unknown(torch.zeros(2, 2), logits).tolist() == [True, False]


def test_a_settings_method_on_a_pair_not_cut_to_it_is_refused(make_cfg):
    with pytest.raises(
        ConfigError, match="PADA is a method for partial adaptation.*target_classes"
    ):
        build(make_cfg("method=pada"))
    with pytest.raises(ConfigError, match="OSBP is a method for open-set / universal"):
        build(make_cfg("method=osbp", "dataset.target_classes=[0,1,2]"))  # partial
    # the oracle trains on target labels: an unknown target class has no output to learn
    with pytest.raises(ConfigError, match="TargetOracle is a method for closed / partial"):
        build(make_cfg("method=target_oracle", "dataset.source_classes=[0,1,2]"))


RUN = ["trainer.fast_dev_run=true"]


@pytest.mark.parametrize(
    ("method", "classes"),
    [
        ("source_only", "dataset.target_classes=[0,1,2,3,4]"),
        ("dann", "dataset.target_classes=[0,1,2,3,4]"),
        ("pada", "dataset.target_classes=[0,1,2,3,4]"),
        ("source_only", "dataset.source_classes=[0,1,2,3,4,5]"),
        ("dann", "dataset.source_classes=[0,1,2,3,4,5]"),
        ("osbp", "dataset.source_classes=[0,1,2,3,4,5]"),
        ("osbp", "dataset.source_classes=[0,1,2,3,4,5]+dataset.target_classes=[2,3,4,5,6,7]"),
        ("ovanet", "dataset.source_classes=[0,1,2,3,4,5]+dataset.target_classes=[2,3,4,5,6,7]"),
        ("ovanet", "dataset.target_classes=[0,1,2,3,4]"),
    ],
)
def test_each_setting_runs_on_images_and_reports_its_metrics(make_cfg, method, classes):
    summary, recount = run_and_recount(make_cfg(*RUN, f"method={method}", *classes.split("+")))
    assert summary["test/source_acc"] == pytest.approx(recount["test/source_acc"], abs=1e-6)
    open_set = "source_classes" in classes
    assert ("test/target_h_score" in summary) == open_set
    if open_set:
        for key in ("os", "os_star", "unknown_recall", "h_score"):
            assert 0 <= summary[f"test/target_{key}"] <= 1, key
    else:  # partial: the target accuracy is over the target's classes
        assert summary["test/target_acc"] == pytest.approx(recount["test/target_acc"], abs=1e-6)


def test_the_datamodule_cuts_a_table_pair(make_cfg, tmp_path):
    import pandas as pd

    rng = np.random.default_rng(0)
    frame = lambda n: pd.DataFrame(  # noqa: E731
        {"a": rng.normal(size=n), "b": rng.normal(size=n), "y": np.arange(n) % 3}
    )
    frame(120).to_csv(tmp_path / "s.csv", index=False)
    frame(120).to_csv(tmp_path / "t.csv", index=False)
    files = [f"dataset.source={tmp_path / 's.csv'}", f"dataset.target={tmp_path / 't.csv'}"]
    cfg = make_cfg("dataset=table", "dataset.label=y", *files, "dataset.source_classes=[0,2]")
    datamodule, module, _ = build(cfg)
    datamodule.setup("fit")
    assert set(datamodule.data.source.train.labels.tolist()) == {0, 1}  # 0 and 2, relabelled
    assert set(datamodule.data.target.test.labels.tolist()) == {0, 1, 2}  # 1 is unknown (2)
    assert module.open_set is not None and module.open_set.known == 2
    summary = run(
        make_cfg(
            "dataset=table",
            "dataset.label=y",
            *files,
            *RUN,
            "dataset.source_classes=[0,2]",
            "method=osbp",
        )
    )
    assert 0 <= summary["test/target_h_score"] <= 1


@pytest.mark.parametrize("method", ["dann", "osbp", "ovanet"])
def test_predictions_of_an_open_set_checkpoint_name_the_pairs_classes_or_unknown(
    tmp_path, data_dir, method
):
    from tests.conftest import compose_config, fast_dev_checkpoint, load_script

    predict = load_script("predict").predict
    classes = "dataset.source_classes=[2,3,5,7]"  # model classes 0-3 are the pair's 2, 3, 5, 7
    images = np.random.default_rng(0).integers(0, 256, (6, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "x.npz", x=images)
    rows = {}
    # never / always below: nothing / everything unknown (DANN); OSBP's and OVANet's rules do
    # not read the threshold: one checkpoint each
    for threshold in (0.0, 1.0) if method == "dann" else (0.0,):
        ckpt = fast_dev_checkpoint(
            tmp_path / f"{threshold}",
            data_dir,
            f"method={method}",
            classes,
            f"unknown_threshold={threshold}",
        )
        out = tmp_path / f"{threshold}.csv"
        predict(
            compose_config(
                "predict", f"ckpt={ckpt}", f"input={tmp_path / 'x.npz'}", f"output={out}"
            )
        )
        with open(out, newline="") as f:
            rows[threshold] = list(csv.DictReader(f))
    header = list(rows[0.0][0])
    expected = ["prob_2", "prob_3", "prob_5", "prob_7"] + (
        ["prob_unknown"] if method == "osbp" else []
    )
    assert header == ["path", "predicted", *expected]
    for threshold, table in rows.items():
        for row in table:
            probs = {k: float(v) for k, v in row.items() if k.startswith("prob_")}
            best = max(probs, key=probs.get)[len("prob_") :]
            if method == "osbp":  # the unknown output's argmax, whatever the threshold
                assert row["predicted"] == best
            elif method == "ovanet":  # its one-vs-all rule: the threshold plays no part
                assert row["predicted"] in ("unknown", best)
            else:
                assert row["predicted"] == ("unknown" if threshold == 1.0 else best)
    # the exported model's card names each logit's class and the rule for "unknown"
    from dann.inference import load_predictor

    predictor = load_predictor(ckpt)
    assert predictor.output_names == [s[len("prob_") :] for s in expected]
    rule = load_script("export").open_set_rule(predictor)
    expected_rule = {"osbp": "last logit", "ovanet": "OVANet's own heads", "dann": "below 1.0"}
    assert expected_rule[method] in rule
