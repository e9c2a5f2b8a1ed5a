"""`dann` as a library: every name in `dann.__all__` imports, `import dann` stays light, and the
"Use the GRL in your own model" code (docs/methods.md) runs as written and does what it says."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import dann

README = Path(__file__).resolve().parents[1] / "docs" / "methods.md"
HEADING = "## Use the GRL in your own model"


def readme_blocks() -> list[str]:
    """The python code blocks under HEADING, up to the next heading."""
    text = README.read_text()
    assert HEADING in text, f"README has no section {HEADING!r}"
    section = re.split(r"\n#{1,2} ", text.split(HEADING, 1)[1])[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def run_readme() -> dict:
    torch.manual_seed(0)
    namespace: dict = {"__name__": "readme"}
    for block in readme_blocks():
        exec(compile(block, str(README), "exec"), namespace)
    return namespace


@pytest.mark.parametrize("name", dann.__all__)
def test_every_public_name_imports(name):
    namespace: dict = {}
    exec(f"from dann import {name}", namespace)
    assert namespace[name] is getattr(dann, name)


def test_star_import_gives_the_public_api():
    namespace: dict = {}
    exec("from dann import *", namespace)
    assert set(dann.__all__) <= set(namespace)
    assert {"GradientReversal", "grad_reverse", "grl_sigmoid", "lr_annealing", "DANN"} <= set(
        dann.__all__
    )


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'GradientReversl'"):
        dann.GradientReversl  # noqa: B018


def test_import_dann_loads_no_heavy_module_and_the_grl_needs_torch_only():
    heavy = ("torch", "pytorch_lightning", "lightning", "hydra", "torchvision")
    code = (
        f"import sys, dann; before = [m for m in {heavy} if m in sys.modules]; "
        "from dann import GradientReversal, grl_sigmoid, DANN; "
        f"after = [m for m in {heavy} if m in sys.modules]; print(before, after)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] ['torch']", out.stdout + out.stderr


def test_readme_has_the_three_examples():
    blocks = readme_blocks()
    assert len(blocks) == 3
    assert "GradientReversal" in blocks[0] and "LightningModule" in blocks[2]


def test_readme_loop_reverses_lambda_times_the_domain_heads_gradient():
    ns = run_readme()
    assert ns["label_loss"].item() < 0.3  # the loop trains: chance is ln 2 = 0.693
    grl, features, domain_head = ns["grl"], ns["features"], ns["domain_head"]
    steps = ns["steps"]
    # lambda came from the schedule at the last step's progress
    assert grl.lambda_ == pytest.approx(dann.grl_sigmoid((steps - 1) / steps))
    assert grl.lambda_ > 0.9
    f = features(torch.randn(8, 2)).detach()
    target = torch.cat([torch.zeros(4), torch.ones(4)])

    def grad_at_features(through_grl: bool) -> torch.Tensor:
        x = f.clone().requires_grad_()
        logits = domain_head(grl(x) if through_grl else x).squeeze(1)
        F.binary_cross_entropy_with_logits(logits, target).backward()
        return x.grad

    reversed_, plain = grad_at_features(True), grad_at_features(False)
    assert plain.abs().sum() > 0
    torch.testing.assert_close(reversed_, -grl.lambda_ * plain)


def test_readme_method_and_lightning_examples_wire_lambda_from_progress():
    ns = run_readme()
    assert set(ns["out"].losses) == {"domain_loss"}
    # the domain loss is the BCE of the head's logits with the 64 source rows as 0, the 64
    # target rows as 1; the step trained the domain head (every parameter got a gradient)
    out = ns["out"]
    assert out.domain_targets.tolist() == [0.0] * 64 + [1.0] * 64
    bce = F.binary_cross_entropy_with_logits(out.domain_logits, out.domain_targets)
    torch.testing.assert_close(out.losses["domain_loss"], bce)
    method = ns["method"]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.parameters())
    assert ns["method"].grl.lambda_ == pytest.approx(dann.grl_sigmoid(0.5))
    trainer = ns["trainer"]
    assert trainer.global_step == 5
    # the last of the 5 steps ran at p = 4 / 5
    assert trainer.lightning_module.method.grl.lambda_ == pytest.approx(dann.grl_sigmoid(0.8))


# the first release of a dependency with an API dann uses: its declared lower bound must not
# admit an older one (pyproject.toml says which lower bounds were installed and run together)
FIRST_WITH = {
    "pytorch-lightning": ("2.6", "pytorch_lightning.callbacks", "WeightAveraging"),
    "hydra-core": ("1.3.2", "hydra.utils", "get_object"),
    "lightning-utilities": ("0.10", "lightning_utilities.core.apply_func", "apply_to_collection"),
}


@pytest.mark.parametrize("package", sorted(FIRST_WITH))
def test_declared_lower_bounds_admit_no_release_without_the_apis_used(package):
    import importlib

    from packaging.requirements import Requirement
    from packaging.version import Version

    tomllib = pytest.importorskip("tomllib", reason="reads pyproject.toml with Python 3.11+")
    first, module, name = FIRST_WITH[package]
    assert hasattr(importlib.import_module(module), name)
    pyproject = tomllib.loads((README.parents[1] / "pyproject.toml").read_text())
    declared = {r.name: r for r in map(Requirement, pyproject["project"]["dependencies"])}
    assert package in declared, f"dann imports {module} but does not declare {package}"
    spec = declared[package].specifier
    lowest = [Version(s.version) for s in spec if s.operator in (">=", ">", "==", "~=")]
    assert lowest and min(lowest) >= Version(first), f"{package}{spec} admits ones before {first}"
