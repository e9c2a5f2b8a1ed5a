"""Do the adaptation methods adapt? A claim about learning, checked for every method (DANN, DAAN,
CDAN, CDAN+E) and for each of three seeds (no seed picked), with two negative controls each
must fail: the same recipe with no reversed gradient (lambda = 0) and with the reversal on the
features negated. (That no method but the oracle sees target labels is
tests/test_target_labels.py.)"""

import pytest
import torch
import yaml
from conftest import TOY_RECIPE, compose_cfg
from hydra.utils import get_class

from dann.config_check import CONFIGS
from dann.data.registry import DomainData, PairData, PairSpec, Split, register_pair
from dann.grl import GradientReversal, grad_reverse
from dann.train import run

SEEDS = (1, 2, 3)
MARGIN = 0.1  # each method's target accuracy over source-only's, for every seed
# one per line; each gets the zero_reversal control, and a method with a gradient reversal
# layer (reverses_gradient) the negated_reversal one too. A method whose loss lambda weights
# (weights_by_lambda: DAN, CORAL, ...) is switched off by lambda = 0, its control.
METHODS = (
    "dann",
    "daan",
    "cdan",
    "cdan_e",
    "dan",
    "jan",
    "mcc",
    "bsp",
)
# Not listed, measured (docs/methods.md): CORAL (blind to this mean shift), MDD, AFN and VADA
# (its VAT radius, 3.5, is sized for images) do not beat source-only at every seed with their
# papers' settings; none is tuned on this test.
# BSP's penalty is not weighted by lambda: at lambda = 0 it still acts (alone it reaches
# 0.73 / 0.59 / 0.75), so its negative control is the negated reversal only.
NOT_A_CONTROL = {("bsp", "zero_reversal")}
# the paper's sigmoid warm-up to lambda = 4, so that the reversed domain gradient outweighs x1's
# label value (for DANN the same run as its domain loss weighted 4: Adam does not see the scale)
ADAPT = ("schedule=grl_sigmoid", "schedule.lambda_max=4")
CONTROLS = {
    # target data passes through the same network, but no gradient from a discriminator
    "zero_reversal": ("schedule=constant", "schedule.value=0"),
    # the features help the discriminators instead of fooling them (GRL negated below)
    "negated_reversal": ADAPT,
}


def _spurious(n: int, spurious_in_target: bool, seed: int) -> Split:
    """Two classes, balanced. x0 ~ N(+-1.5, 1) carries the label in both domains (Bayes accuracy
    0.93 from x0 alone); x1 ~ N(+-1, 1) is a second cue in the source, but in the target it says
    nothing and sits at N(4, 1), so a classifier that uses it calls most target points class 1
    (source-only scores about 0.55-0.65 on the target). Features that drop x1 look the same in
    both domains; that is what the domain classifier behind the GRL pushes them to do."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    sign = 2.0 * y - 1.0
    x0 = 1.5 * sign + torch.randn(n, generator=g)
    noise = torch.randn(n, generator=g)
    x1 = 4.0 + noise if spurious_in_target else sign + noise
    return Split(torch.stack([x0, x1], dim=1), y)


@register_pair("test_spurious")
def load_spurious(spec: PairSpec) -> PairData:
    def domain(name: str, target: bool, offset: int) -> DomainData:
        return DomainData(
            name, *(_spurious(500, target, 10 * offset + i) for i in range(3))
        )  # train, val, test

    return PairData(domain("spurious-source", False, 1), domain("spurious-target", True, 2), 2)


@pytest.fixture(scope="module")
def target_acc(tmp_path_factory, data_dir):
    """target_acc(method, seed, *overrides) -> test/target_acc of a 40-epoch run (Adam with the
    paper's annealing: a settled last iterate, not one mid-oscillation of the adversarial game).
    One torch thread: these networks are tiny, and a second thread only waits on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    def acc(method: str, seed: int, *overrides: str) -> float:
        cfg = compose_cfg(
            [
                *TOY_RECIPE,
                "dataset.name=test_spurious",
                f"method={method}",
                f"seed={seed}",
                *overrides,
            ],
            tmp_path_factory.mktemp(method),
            data_dir,
        )
        return run(cfg)["test/target_acc"]

    yield acc
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def source_only(target_acc) -> dict[int, float]:
    """The baseline every method and control is measured against, per seed (run once)."""
    return {seed: target_acc("source_only", seed) for seed in SEEDS}


def test_source_only_is_fooled_by_the_spurious_cue(source_only):
    # otherwise no method could beat it by the margin, and the claims below would say nothing
    assert all(acc < 0.93 - 2 * MARGIN for acc in source_only.values()), source_only


@pytest.mark.parametrize("method", METHODS)
def test_each_method_beats_source_only_for_every_seed(target_acc, source_only, method):
    acc = {seed: target_acc(method, seed, *ADAPT) for seed in SEEDS}
    short = {s: (acc[s], source_only[s]) for s in SEEDS if acc[s] <= source_only[s] + MARGIN}
    assert not short, f"{method} (target acc, source-only's) at the seeds it fails: {short}"


def _controls(method: str) -> list[str]:
    target = yaml.safe_load((CONFIGS / "method" / f"{method}.yaml").read_text())
    while "_target_" not in target:  # a variant of another method's config (cdan_e: cdan)
        parent = next(d for d in target["defaults"] if d != "_self_")
        target = {**yaml.safe_load((CONFIGS / "method" / f"{parent}.yaml").read_text()), **target}
        target["defaults"] = [d for d in target.get("defaults", []) if d != parent]
    reverses = get_class(target["_target_"]).reverses_gradient
    controls = [c for c in CONTROLS if reverses or c != "negated_reversal"]
    return [c for c in controls if (method, c) not in NOT_A_CONTROL]


@pytest.mark.parametrize("method, control", [(m, c) for m in METHODS for c in _controls(m)])
def test_without_the_reversed_gradient_no_seed_beats_source_only(
    target_acc, source_only, method, control, monkeypatch
):
    """The claim above can fail, and does for each seed when the gradient the discriminators
    send into the features is zero (lambda = 0), or not reversed: with the GRL in front of them
    negated, the features help the discriminators tell the domains apart. (CDAN+E's second
    reversal, into the entropy weights, is left as it is: this control is about the features.)"""
    if control == "negated_reversal":
        monkeypatch.setattr(
            GradientReversal, "forward", lambda self, x: grad_reverse(x, -self.lambda_)
        )
    acc = {seed: target_acc(method, seed, *CONTROLS[control]) for seed in SEEDS}
    beats = {s: (acc[s], source_only[s]) for s in SEEDS if acc[s] > source_only[s] + MARGIN}
    assert not beats, f"{method} with {control} still adapts at seeds {beats}"
