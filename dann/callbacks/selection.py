"""`SelectionValidators`: unsupervised model-selection scores every validation epoch, and the
end-of-run report of what each would have picked.

Each validation epoch it gathers the source and target validation features/logits (the
module's `validation_step` returns them) and logs, next to the oracle `val/target_acc`:
`val/reverse_acc`, `val/dev_risk`, `val/entropy`, `val/im`, `val/bnm`, `val/class_ami`,
`val/snd`, and the two rules `val/source_1se_step` (the latest epoch within one standard error
of the best source accuracy) and `val/step` (the last epoch) (see `dann.selection`). The
`selection` config group points the checkpoint at one of them.

After each validation it records every `val/*` metric of the epoch; `report()` then says, for
each validator, the epoch it would pick and the oracle target accuracy there, next to the best
target accuracy of any epoch: what selecting without target labels costs. The history covers
every validation epoch of the run: restoring a checkpoint (`trainer.test(ckpt_path=best)`
restores callback state) merges its history into the one in memory instead of cutting it back.
"""

import logging

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from dann import selection
from dann.data.datamodule import DOMAINS

log = logging.getLogger(__name__)

ORACLE = "val/target_acc"
H_SCORE = "val/target_h_score"  # logged where the target holds unknown classes (dann/open_set.py)
SOURCE_ACC = "val/source_acc"
SCORES = (
    "val/reverse_acc",
    "val/dev_risk",
    "val/entropy",
    "val/im",
    "val/bnm",
    "val/class_ami",
    "val/snd",
)


class SelectionValidators(pl.Callback):
    def __init__(self, max_samples: int = 2000, seed: int = 0):
        """`max_samples`: per domain, the first ones of the (unshuffled) validation sets."""
        self.max_samples = max_samples
        self.seed = seed
        self.history: list[dict] = []  # per validation epoch: {"epoch", "step", val/* metrics}
        self._outputs: dict[str, list[dict]] = {}

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._outputs = {d: [] for d in DOMAINS}

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if trainer.sanity_checking or not outputs:
            return
        kept = self._outputs[DOMAINS[dataloader_idx]]
        if sum(len(o["labels"]) for o in kept) < self.max_samples:
            kept.append({k: v.float() if v.is_floating_point() else v for k, v in outputs.items()})

    def _gathered(self, pl_module, domain: str) -> dict[str, torch.Tensor]:
        parts = self._outputs[domain]
        out = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        if pl_module.trainer.world_size > 1:  # every rank scores the same, whole, sample
            out = {k: pl_module.all_gather(v).flatten(0, 1) for k, v in out.items()}
        return {k: v[: self.max_samples].cpu() for k, v in out.items()}

    def scores(self, source: dict, target: dict) -> dict[str, float]:
        """The validators from source (features, logits, labels) and target (features, logits)."""
        fs, ft = source["features"].numpy(), target["features"].numpy()
        if not (np.isfinite(fs).all() and np.isfinite(ft).all()):  # a diverged model
            return dict.fromkeys(SCORES, float("nan"))
        source_losses = F.cross_entropy(source["logits"], source["labels"], reduction="none")
        num_classes = source["logits"].shape[1]
        predicted = torch.cat([source["logits"], target["logits"]]).argmax(1).numpy()
        return {
            "val/reverse_acc": selection.reverse_validation_acc(
                fs, source["labels"].numpy(), ft, target["logits"].argmax(1).numpy(), self.seed
            ),
            "val/dev_risk": selection.dev_risk(fs, source_losses.numpy(), ft, self.seed),
            "val/entropy": selection.prediction_entropy(target["logits"]),
            "val/im": selection.information_maximization(target["logits"]),
            "val/bnm": selection.batch_nuclear_norm(target["logits"]),
            "val/class_ami": selection.class_ami(
                np.concatenate([fs, ft]), predicted, num_classes, self.seed
            ),
            "val/snd": selection.soft_neighborhood_density(target["logits"]),
        }

    def rules(self, source: dict, step: int) -> dict[str, float]:
        """`val/source_1se_step`: `step` if this epoch's source accuracy (on the gathered sample)
        is within one standard error of the best so far, else -1; `val/step`: `step`."""
        acc = float((source["logits"].argmax(1) == source["labels"]).float().mean())
        best = max([acc, *(h[SOURCE_ACC] for h in self.history if SOURCE_ACC in h)])
        qualifies = selection.within_one_standard_error(acc, best, len(source["labels"]))
        return {"val/source_1se_step": float(step if qualifies else -1), "val/step": float(step)}

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not all(self._outputs.values()):
            return
        source, target = (self._gathered(pl_module, d) for d in DOMAINS)
        scores = {**self.scores(source, target), **self.rules(source, trainer.global_step)}
        for name, value in scores.items():
            # every rank scored the same gathered sample; the mean over ranks is that value
            pl_module.log(name, value, sync_dist=True)
        self._outputs = {}

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        self.history.append(
            {"epoch": trainer.current_epoch, "step": trainer.global_step, **metrics}
        )

    def report(self) -> dict[str, dict]:
        """For each validator: the epoch it picks and the oracle target accuracy there."""
        rows = {}
        for name, (metric, mode) in selection.VALIDATORS.items():
            epochs = [h for h in self.history if np.isfinite(h.get(metric, np.nan))]
            pick = selection.picked_epoch(epochs, metric, mode)
            if pick is None or not all(ORACLE in h for h in epochs):
                continue
            rows[name] = {
                "metric": metric,
                "epoch": pick["epoch"],
                "score": pick[metric],
                "target_acc": pick[ORACLE],
            }
            # open-set / universal: the H-score there, and how far below the run's best it is
            if all(H_SCORE in h for h in epochs):
                best = max(h[H_SCORE] for h in epochs)
                rows[name]["target_h_score"] = pick[H_SCORE]
                rows[name]["target_h_score_cost"] = best - pick[H_SCORE]
        return rows

    def state_dict(self) -> dict:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict) -> None:
        """Merge, never cut back: a checkpoint restored for testing holds the history up to its
        own epoch, the one in memory every epoch since; a resumed run starts from the saved one.
        """
        merged = {(h["epoch"], h.get("step")): h for h in state_dict.get("history", [])}
        merged.update({(h["epoch"], h.get("step")): h for h in self.history})
        self.history = sorted(merged.values(), key=lambda h: (h.get("step") or 0, h["epoch"]))


def format_report(rows: dict[str, dict]) -> str:
    """The report as a small text table (printed at the end of a run)."""
    if not rows:
        return "(no validation epochs recorded)"
    best = rows.get("target_oracle", {}).get("target_acc")
    open_set = all("target_h_score" in r for r in rows.values())
    header = f"{'validator':<22} {'metric':<16} {'epoch':>5} {'val target_acc':>14}  cost"
    lines = [header + ("     val H-score  cost below the run's best" if open_set else "")]
    for name, r in rows.items():
        cost = f"{best - r['target_acc']:+.4f}" if best is not None else ""
        label = name + (" (oracle)" if name == "target_oracle" else "")
        line = f"{label:<22} {r['metric']:<16} {r['epoch']:>5} {r['target_acc']:>14.4f}  {cost}"
        if open_set:
            line += f"  {r['target_h_score']:>14.4f}  {r['target_h_score_cost']:+.4f}"
        lines.append(line)
    return "\n".join(lines)
