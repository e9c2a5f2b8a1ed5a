"""Target oracle (the upper bound, "train on target" in the paper's Table 2): the source-only
network trained on the *labelled target* training set. It uses target labels, so it is a
reference number only, never a domain-adaptation result.

The method itself is `SourceOnly` (no gradient from the domain classifier reaches the features);
`trains_on_target_labels` tells the datamodule to make the labelled training stream the target
training set (see `DomainAdaptationDataModule(train_on_target_labels=...)`).
"""

from dann.methods.source_only import SourceOnly


class TargetOracle(SourceOnly):
    trains_on_target_labels = True
    # its labelled stream is the target's: an "unknown" target class has no output to train
    settings = ("closed", "partial")
