"""`DALightningModule`: the method-agnostic training step, metrics, optimiser and logging.

One forward of cat([x_source, x_target]) through the feature extractor; label cross-entropy on
the source rows; the method adds its own losses (DANN: domain BCE behind the GRL). lambda and the
learning rate are pure functions of p = global_step / trainer.estimated_stepping_batches.
All constructor arguments are plain dicts/numbers, so `save_hyperparameters` stores plain types
and checkpoints load with `weights_only=True`.

`norm` (the `norm` config group) says how the BatchNorm layers of the prediction path (feature
extractor, label classifier; not the discriminators) treat the two domains (joint,
separate or domain-specific statistics; shared, per-domain or AdaBN statistics at evaluation):
`dann.models.norm` does it, the module only says which rows are which. `loss` adds terms
every method shares: label smoothing on the source label loss, and the weighted terms of
`dann.losses` (target entropy, MCC, BSP, VAT; each logged as train/<term>).

Performance options, read from the backbone config (no effect on results beyond rounding):
`backbone.channels_last=true` keeps 4-D weights and input batches in channels-last memory
(NHWC; faster convolutions on tensor-core GPUs), `backbone.compile=true` (or a backend name,
e.g. `aot_eager`) compiles the feature extractor and the label classifier with `torch.compile`,
in place, so parameter names and checkpoints are unchanged. Per-step scalars are written only at
the steps the logger writes, bypassing self.log there (see `on_train_batch_end`); training
accuracies see each step's predicted classes, in batches of steps (without input checks), and
are logged per epoch.

Two mixins hold the rest, one responsibility each: `dann.optimization.ModuleOptimizer` (the
optimiser, its schedule, the module's own optimiser step, SAM) and
`dann.evaluation.ModuleEvaluation` (validation and test metrics, open-set ones included).
"""

import functools

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import get_class, instantiate
from torch import nn
from torchmetrics.classification import BinaryAccuracy, MulticlassAccuracy

from dann.checkpoints import carry_step_count
from dann.evaluation import ModuleEvaluation
from dann.losses import DEFAULTS as LOSS_DEFAULTS
from dann.losses import READ_LOGITS, TermInputs, shared_terms, term_weights
from dann.methods.base import AdaptationMethod
from dann.models.heads import label_classifier
from dann.models.init import init_weights
from dann.models.norm import (
    SOURCE,
    TARGET,
    DomainBatchNorm,
    convert_batchnorm,
    domain_norms,
    eval_mode,
    set_domains,
)
from dann.optimization import ModuleOptimizer
from dann.step_logging import BatchedAccuracies, learning_rates, log_step_scalars
from dann.teacher import Teacher

BATCH_NORMS = (nn.modules.batchnorm._BatchNorm, DomainBatchNorm)


class DALightningModule(ModuleOptimizer, ModuleEvaluation, pl.LightningModule):
    def __init__(
        self,
        backbone: dict,
        method: dict,
        schedule: dict,
        optimizer: dict,
        num_classes: int,
        norm: dict | None = None,
        loss: dict | None = None,
        label_sets: dict | None = None,
        class_mean_accuracy: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.feature_extractor = instantiate(backbone["features"], _convert_="all")
        width = self.feature_extractor.out_features
        head = backbone["classifier"]
        # num_classes: the pair's; the model tells the source's apart (all, unless label_sets
        # says otherwise: dann/data/label_sets.py), and a method with an unknown output (OSBP)
        # adds one
        # the pair's class index of each class the model tells apart
        self.class_ids = list(label_sets["source"]) if label_sets else list(range(num_classes))
        num_classes = len(self.class_ids)
        outputs = num_classes + int(get_class(method["_target_"]).unknown_output)
        self.classifier = label_classifier(self.feature_extractor, head, outputs)
        self.method: AdaptationMethod = instantiate(
            method, in_features=width, num_classes=num_classes, _convert_="all"
        )
        self.method.attach(self.classifier)
        # backbone.init: he for the paper nets trained from scratch (dann/models/init.py)
        init_weights((self.feature_extractor, self.classifier, self.method), backbone.get("init"))
        self.norm = {"mode": "joint", "eval_stats": "shared", "adabn_samples": None, **(norm or {})}
        # the prediction path only: the discriminators' normalisation is their own choice
        # (backbone.domain_head.norm), never per domain (see dann/models/heads.py)
        prediction_path = (self.feature_extractor, self.classifier)
        for part in prediction_path:
            convert_batchnorm(part, self.norm["mode"], self.norm["eval_stats"])
        # empty: plain BatchNorm (or none), nothing to say
        self._norms = [m for part in prediction_path for m in domain_norms(part)]
        # backbone.domain_head.norm=separate: the discriminators' rows are marked the same way
        self._discriminator_norms = domain_norms(self.method)
        self.loss_options = {"label_smoothing": 0.0, **LOSS_DEFAULTS, **(loss or {})}
        # the shared terms (dann/losses.py): the config's weights, else the method's own
        self.term_weights = term_weights(self.loss_options, self.method.loss_terms())
        # DIRT-T's teacher (the `teacher` term): a frozen copy of the prediction path
        self.teacher = None
        if self.term_weights["teacher"]:
            interval = self.loss_options["teacher_interval"]
            self.teacher = Teacher(self.feature_extractor, self.classifier, interval)
        # the target rows' logits in training: for the method, a term on the predictions, or
        # the classifier's BatchNorm statistics (which would otherwise see the source alone)
        self._classifies_target_rows = bool(
            self.method.uses_target_logits
            or any(self.term_weights[t] for t in READ_LOGITS)
            or any(isinstance(m, BATCH_NORMS) for m in self.classifier.modules())
        )
        self._uses_lambda = self.method.reverses_gradient or self.method.weights_by_lambda
        # a function of p (`_partial_: true`), called every step: unwrapped to a plain
        # functools.partial (Hydra's partial re-checks its target policy on every call, ~0.4 ms)
        partial = instantiate(schedule)
        self.lambda_schedule = functools.partial(partial.func, *partial.args, **partial.keywords)
        self.total_steps: int | None = None
        self.sam_rho = float(optimizer.get("sam_rho") or 0.0)  # dann/sam.py
        self._step_logs: dict[str, torch.Tensor | float] | None = None  # training_step -> batch end

        # training metrics skip the input checks: on a GPU the label range check (torch.unique)
        # waits for the device; the inputs are the module's own predictions and labels
        self.train_source_acc = MulticlassAccuracy(outputs, average="micro", validate_args=False)
        self.train_domain_acc = BinaryAccuracy(validate_args=False)
        for metric in (self.train_source_acc, self.train_domain_acc):
            metric.persistent(True)  # in checkpoints: a run resumed mid-epoch logs the same
        self._train_accuracy = BatchedAccuracies(self.train_source_acc, self.train_domain_acc)
        self._add_eval_metrics(outputs, num_classes, label_sets, class_mean_accuracy)

        self.channels_last = bool(backbone.get("channels_last", False))
        if self.channels_last:  # 4-D weights only; everything else is unaffected
            self.to(memory_format=torch.channels_last)
        compile_ = backbone.get("compile", False)
        if compile_:
            options = {} if compile_ is True else {"backend": str(compile_)}
            # nn.Module.compile: in place, so state_dict keys (and checkpoints) stay the same
            self.feature_extractor.compile(**options)
            self.classifier.compile(**options)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        """Image batches in the memory format the weights use (channels_last on request)."""
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def features(self, x: torch.Tensor, domain: int | None = None) -> torch.Tensor:
        """Features of a batch; `domain` (0 source, 1 target) says whose normalisation
        statistics evaluation uses (see `norm`); training batches say it in training_step."""
        if domain is not None and self._norms:
            if not self.method.forwards_target and self.norm["eval_stats"] != "adabn":
                domain = SOURCE  # a baseline that never trained on target has no target slot
            set_domains(self._norms, None, domain)
        return self.feature_extractor(self._layout(x))

    def forward(self, x: torch.Tensor, domain: int = TARGET) -> torch.Tensor:
        """Class logits for a batch of (normalised) images of `domain` (default: target)."""
        return self.classifier(self.features(x, domain))

    def progress(self, step: int | None = None) -> float:
        """Training progress p in [0, 1] at `step` (default: now); global_step based, so right
        under resume and DDP."""
        return min((self.global_step if step is None else step) / self._total(), 1.0)

    def _total(self) -> int:
        if self.total_steps is None:
            self.total_steps = self._stepping_batches()
        return self.total_steps

    def _stepping_batches(self) -> int:
        total = self.trainer.estimated_stepping_batches
        if total == float("inf") or total < 1:
            raise ValueError(
                "the schedules need a finite run: set trainer.max_epochs or trainer.max_steps"
            )
        return int(total)

    def training_step(self, batch, batch_idx):
        (x_s, y_s), x_t = batch["source"], batch["target"]
        n = len(x_s)
        p = self.progress()
        lambda_ = float(self.lambda_schedule(p))
        sam_saved = self._sam_ascent(x_s, y_s, x_t) if self.sam_rho else None
        features, logits = self._forward_training_batch(x_s, x_t)
        label_loss = self._label_loss(logits[:n], y_s)
        labels = {"source_labels": y_s} if self.method.uses_source_labels else {}
        out = self.method(features, logits, n, lambda_, **labels)
        if self.method.forwards_target:  # else refused by the config check
            if self.teacher is not None:
                self.teacher.refresh_if_due(
                    self.global_step, self.feature_extractor, self.classifier
                )
            batch = TermInputs(
                lambda: torch.cat([x_s, x_t]),
                features,
                logits,
                n,
                self._predict_training,
                self.teacher,
            )
            out.losses.update(shared_terms(self.term_weights, self.loss_options, batch))
        # a method trained on the target alone (DIRT-T's refinement) only reports the label loss
        trained_label_loss = label_loss if self.method.forwards_source else 0.0
        loss = trained_label_loss + sum(out.losses.values())

        # per-step scalars, kept until on_train_batch_end decides whether this step is logged:
        # detached tensors (no .item(), so nothing waits for the GPU) and plain floats
        self._step_logs = {
            "train/loss": loss.detach(),
            "train/label_loss": label_loss.detach(),
            **{f"train/{k}": v.detach() for k, v in out.losses.items()},
            "train/lambda": lambda_ if self._uses_lambda else 0.0,
            **learning_rates(self.trainer.optimizers[0]),
            "train/progress": p,
        }
        # this step's predicted classes (argmax; logit > 0 for "is target"), for the accuracies
        d = out.domain_logits
        self._train_accuracy.add(
            logits[:n].argmax(1), y_s, None if d is None else d > 0, out.domain_targets
        )
        if not self.automatic_optimization:
            # after train/lr is read: the rate this step trains with
            self._optimize(loss, sam_saved)
        return loss

    def _label_loss(self, source_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        smoothing = self.loss_options["label_smoothing"]
        weight = self.method.label_class_weights()  # PADA's class weights: a weighted mean
        return F.cross_entropy(source_logits, labels, weight=weight, label_smoothing=smoothing)

    def _predict_training(self, x: torch.Tensor, num_source: int) -> torch.Tensor:
        """Training-mode logits of inputs whose first `num_source` rows are source, the rest
        target: the extra forwards of VAT."""
        if self._norms:
            if 0 < num_source < len(x):
                set_domains(self._norms, split=num_source)
            else:
                set_domains(self._norms, None, SOURCE if num_source else TARGET)
        return self.classifier(self.features(x))

    def state_dict(self, *args, **kwargs):
        self._train_accuracy.flush()  # the accuracies' states are in it (persistent)
        return super().state_dict(*args, **kwargs)

    def _forward_training_batch(self, x_s, x_t) -> tuple[torch.Tensor, torch.Tensor]:
        """Features and logits of the source rows, then the target rows. A method that trains on
        target images (DANN, ...) forwards them with the source, in training mode, rows [:n]
        marked as source for the BatchNorm layers. A baseline that must not see them
        (source-only, the oracle: `forwards_target = False`) gets the target rows from an
        eval-mode forward without gradient, so no target image reaches a training-mode layer
        (BatchNorm statistics included); its domain classifier still sees them, detached."""
        # the discriminators see source rows then target rows, whatever the method forwards
        set_domains(self._discriminator_norms, split=len(x_s))
        if not self.method.forwards_source:  # DIRT-T's refinement: the target alone
            return self._forward_one_domain(x_s, x_t, trained=TARGET)
        if not self.method.forwards_target:
            return self._forward_one_domain(x_s, x_t, trained=SOURCE)
        if self._norms:
            set_domains(self._norms, split=len(x_s))
        features = self.features(torch.cat([x_s, x_t]))
        if not self._classifies_target_rows:
            return features, self.classifier(features[: len(x_s)])
        return features, self.classifier(features)

    def _forward_one_domain(self, x_s, x_t, trained: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The `trained` domain's rows in training mode, as one domain's batch; the other
        domain's from an eval-mode forward without gradient (with the source's statistics where
        they are per domain), so none of its images reaches a training-mode layer (BatchNorm
        statistics included). Source rows first, then target rows."""
        rows = [x_s, x_t]
        if self._norms:
            set_domains(self._norms, None, trained)
        features, logits = [None, None], [None, None]
        features[trained] = self.features(rows[trained])
        logits[trained] = self.classifier(features[trained])
        if self._norms:
            set_domains(self._norms, None, SOURCE)
        with torch.no_grad(), eval_mode(self.feature_extractor, self.classifier):
            features[1 - trained] = self.features(rows[1 - trained])
            logits[1 - trained] = self.classifier(features[1 - trained])
        return torch.cat(features), torch.cat(logits)

    def on_train_batch_end(self, outputs, batch, batch_idx):
        """Per-step scalars reach the loggers every trainer.log_every_n_steps, at the steps
        Lightning writes its own step metrics, handed straight to the loggers as Lightning's
        writer does (`dann.step_logging`: same step and `epoch`, one device sync for all of them;
        public API only): self.log costs about half a millisecond of Python per value
        (Lightning moves its result state each call), several times a small network's GPU step.
        At the last batch of an epoch (and under fast_dev_run) they go through self.log instead,
        so callback_metrics end every epoch with its last step's values, written by Lightning if
        that step is a logging step."""
        logs, self._step_logs = self._step_logs, None
        if logs:
            log_step_scalars(self, logs, len(batch["source"][0]), batch_idx)

    def on_train_epoch_end(self):
        self._train_accuracy.flush()
        self._log_epoch_metric("train/source_acc", self.train_source_acc)
        self._log_epoch_metric("train/domain_acc", self.train_domain_acc)
        for name, value in self.method.on_train_epoch_end().items():
            # already reduced across processes by the method; sync_dist keeps Lightning's
            # epoch-level logging consistent (and quiet) under DDP, once per epoch
            self.log(f"train/{name}", value, sync_dist=True)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # before Lightning restores its loops from the checkpoint
        carry_step_count(checkpoint.get("loops", {}).get("fit_loop"), self.automatic_optimization)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # the validation metrics this checkpoint was selected on, for the end-of-run summary
        checkpoint["val_metrics"] = {
            k: float(v) for k, v in self.trainer.callback_metrics.items() if k.startswith("val/")
        }
