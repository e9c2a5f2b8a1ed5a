"""SAM on the label loss (optimizer.sam_rho, SDAT): the ascent by hand, the exact restore, one
training step against a hand-computed SAM update, under bf16, and refused where Lightning's
own loop would step the optimiser. (Exact resume with SAM: test_reliability.py.)"""

import copy

import pytest
import torch
import torch.nn.functional as F

from dann import sam
from dann.errors import ConfigError
from dann.train import build, run


def test_ascent_is_rho_times_the_gradient_over_its_global_norm_and_restores_exactly():
    a = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    b = torch.nn.Parameter(torch.tensor([[0.5]]))
    untouched = torch.nn.Parameter(torch.tensor([3.0]))  # no gradient: not moved
    a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([[4.0]])
    saved = sam.ascend([a, b, untouched], rho=0.5)
    # ||g|| = 5: e = 0.5 * g / 5
    assert a.tolist() == pytest.approx([1.3, 2.0]) and b.item() == pytest.approx(0.9)
    assert untouched.tolist() == [3.0] and len(saved) == 2
    sam.restore(saved)
    assert a.tolist() == [1.0, 2.0] and b.tolist() == [[0.5]]  # bit-exact


ONE_STEP = [
    "dataset=moons",
    "method=dann",
    "schedule=constant",
    "schedule.value=0.7",
    "optimizer.optim.momentum=0",
    "optimizer.lr_annealing=null",
    "optimizer.sam_rho=0.05",
    "trainer.max_steps=1",
    "trainer.limit_val_batches=0",
    "callbacks=none",
    "test=false",
]


def test_one_step_is_the_hand_computed_sam_update(make_cfg):
    """w' = w - lr * grad of the full loss at (w + e) for the prediction path, e = rho * g / |g|
    with g the label loss's gradient at w; the discriminator is not moved, and takes its
    gradient at the perturbed features."""
    datamodule, module, trainer = build(make_cfg(*ONE_STEP))
    before = copy.deepcopy(module)
    batches = []
    step = module.training_step

    def keep_batch(batch, batch_idx):
        batches.append(batch)
        return step(batch, batch_idx)

    module.training_step = keep_batch
    trainer.fit(module, datamodule=datamodule)
    (x_s, y_s), x_t = batches[0]["source"], batches[0]["target"]
    n, x = len(x_s), torch.cat([x_s, x_t])

    m = before.train()
    path = [*m.feature_extractor.parameters(), *m.classifier.parameters()]
    label = F.cross_entropy(m.classifier(m.feature_extractor(x))[:n], y_s)
    grads = torch.autograd.grad(label, path)
    norm = torch.sqrt(sum((g**2).sum() for g in grads))
    with torch.no_grad():
        for p, g in zip(path, grads, strict=True):
            p.add_(0.05 * g / norm)
    features = m.feature_extractor(x)
    logits = m.classifier(features)
    loss = (
        F.cross_entropy(logits[:n], y_s) + m.method(features, logits, n, 0.7).losses["domain_loss"]
    )
    everything = list(m.parameters())
    full = torch.autograd.grad(loss, everything, allow_unused=True)
    lr = 0.01  # sgd_paper's base rate, no annealing here
    original = dict(before.named_parameters())
    with torch.no_grad():
        for p, g in zip(path, grads, strict=True):
            p.sub_(0.05 * g / norm)  # back to w
    expected = {name: p - lr * g for (name, p), g in zip(original.items(), full, strict=True)}
    for name, p in module.named_parameters():
        torch.testing.assert_close(p, expected[name], rtol=1e-5, atol=1e-6, msg=name)
    # and SAM made a difference: the plain step lands elsewhere
    plain = build(make_cfg(*ONE_STEP, "optimizer.sam_rho=null"))
    plain[2].fit(plain[1], datamodule=plain[0])
    w_sam = module.feature_extractor.net[0].weight  # the mlp's first Linear
    assert not torch.allclose(plain[1].feature_extractor.net[0].weight, w_sam, atol=1e-7)


def test_sam_trains_under_bf16(make_cfg):
    summary = run(
        make_cfg(
            "optimizer.sam_rho=0.05",
            "trainer.precision=bf16-mixed",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=3",
            "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1",
        )
    )
    assert 0.0 <= summary["test/target_acc"] <= 1.0 and summary["test/source_acc"] > 0.0


def test_sam_with_lightnings_optimisation_loop_is_refused(make_cfg):
    with pytest.raises(ConfigError, match="optimizer.sam_rho needs the module's own"):
        run(make_cfg(*ONE_STEP, "+trainer.gradient_clip_val=1.0"))
