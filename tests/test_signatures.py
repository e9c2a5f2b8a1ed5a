"""Arguments read from source must equal the imported signature, without importing it."""

import inspect
import subprocess
import sys

import pytest

from dann.signatures import source_arguments


@pytest.mark.parametrize(
    "target",
    ["pytorch_lightning.Trainer", "torch.optim.SGD", "torch.optim.Adam"],
)
def test_source_arguments_equal_the_imported_signature(target):
    from hydra.utils import get_object

    obj = get_object(target)
    expected = set(inspect.signature(obj.__init__).parameters) - {"self"}
    assert source_arguments(target) == expected


def test_unknown_or_kwargs_targets_answer_none():
    assert source_arguments("no_such_package.Thing") is None
    assert source_arguments("pytorch_lightning.NoSuchName") is None
    # **kwargs (options passed on to the pair): the caller must import it to know
    assert source_arguments("dann.data.datamodule.DomainAdaptationDataModule") is None


def test_reading_trainer_arguments_imports_neither_torch_nor_lightning():
    code = (
        "import sys; from dann.signatures import source_arguments;"
        "a = source_arguments('pytorch_lightning.Trainer');"
        "print('max_epochs' in a, 'torch' in sys.modules, 'pytorch_lightning' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False", "False"]
