"""Through `train.run`: no method but the target oracle ever gets a target label in its
training batches (the target stream carries images only; the labelled stream is the source)."""

import pytest
import pytorch_lightning as pl
import torch

from dann.train import run


class BatchSpy(pl.Callback):
    """Records what each training batch holds (the batches the methods are trained on)."""

    seen: list[dict] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        BatchSpy.seen.append(batch)


def _grey(images: torch.Tensor) -> torch.Tensor:
    """Per image: are its channels equal up to a constant (a grey MNIST digit repeated to RGB,
    then shifted by the per-channel mean)? MNIST-M's colour backgrounds are not."""
    diff = images[:, 0] - images[:, 1]
    return diff.flatten(1).std(dim=1) < 1e-5


@pytest.mark.parametrize(
    "method", ["dann", "source_only", "daan", "cdan", "cdan_e", "target_oracle"]
)
def test_no_method_but_the_oracle_trains_on_target_labels(make_cfg, method):
    BatchSpy.seen = []
    cfg = make_cfg(
        f"method={method}",
        "trainer.fast_dev_run=true",
        "+callbacks.spy._target_=test_target_labels.BatchSpy",
    )
    run(cfg)
    assert BatchSpy.seen
    for batch in BatchSpy.seen:
        assert set(batch) == {"source", "target"}
        (x_labelled, y), x_target = batch["source"], batch["target"]
        assert isinstance(x_target, torch.Tensor) and x_target.dim() == 4  # images, no labels
        assert len(y) == len(x_labelled)
        assert _grey(x_target).float().mean() < 0.2  # the unlabelled stream is MNIST-M
        if method == "target_oracle":  # the upper bound: its labelled stream is the target
            assert _grey(x_labelled).float().mean() < 0.2
        else:  # every labelled image is a source (MNIST) digit
            assert _grey(x_labelled).all()
