"""`ModelSummary`: Lightning's model summary table (rich when `rich` is installed, as
Lightning's default), without what it cannot fill in for a domain-adaptation module.

- FLOPs: Lightning counts them only by running `example_input_array`, which a module with a
  source + target batch, a method and metrics does not define: its FLOPs column and total are
  all zeros. Left out when nothing was counted (a module that sets an example input keeps them).
- "Precision bf16-mixed is not supported by the model summary ... Using 32 bits instead": under
  mixed precision the weights are kept in fp32, which is exactly what the size estimate uses, so
  the warning says nothing true; it is silenced for the summary only.

`dann.train` installs it unless the trainer's summary is off or another one is configured.
"""

import logging
import warnings
from typing import Any

from pytorch_lightning.callbacks import ModelSummary as LightningModelSummary
from pytorch_lightning.utilities.imports import _RICH_AVAILABLE
from pytorch_lightning.utilities.model_summary import (
    get_formatted_model_size,
    get_human_readable_count,
)
from pytorch_lightning.utilities.model_summary.model_summary import _format_summary_table

FLOPS = "FLOPs"
log = logging.getLogger("pytorch_lightning.callbacks.model_summary")  # where Lightning's goes


class ModelSummary(LightningModelSummary):
    def _summary(self, trainer, pl_module):
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=r"Precision .*mixed is not supported by the model summary"
            )
            return super()._summary(trainer, pl_module)

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        if total_flops:
            base = LightningModelSummary
            if _RICH_AVAILABLE:
                from pytorch_lightning.callbacks import RichModelSummary as base
            base.summarize(
                summary_data,
                total_parameters,
                trainable_parameters,
                model_size,
                total_training_modes,
                total_flops,
                **summarize_kwargs,
            )
            return
        columns = [c for c in summary_data if c[0] != FLOPS]
        totals = [
            ("Trainable params", get_human_readable_count(int(trainable_parameters))),
            (
                "Non-trainable params",
                get_human_readable_count(int(total_parameters - trainable_parameters)),
            ),
            ("Total params", get_human_readable_count(int(total_parameters))),
            ("Total estimated model params size (MB)", get_formatted_model_size(model_size)),
            ("Modules in train mode", str(total_training_modes["train"])),
            ("Modules in eval mode", str(total_training_modes["eval"])),
        ]
        if _RICH_AVAILABLE:
            _print_rich(columns, totals, summarize_kwargs.get("header_style", "bold magenta"))
            return
        table = _format_summary_table(
            total_parameters,
            trainable_parameters,
            model_size,
            total_training_modes,
            0,
            *columns,
        )
        log.info("\n" + table.rsplit("\n", 1)[0])  # its last line is the FLOPs total


def _print_rich(columns: list[tuple[str, list[str]]], totals, header_style: str) -> None:
    from rich import get_console
    from rich.table import Table

    table = Table(header_style=header_style)
    right = {"Params", "Params per Device", "In sizes", "Out sizes"}
    for name, _ in columns:
        table.add_column(name, justify="right" if name in right else "left", no_wrap=True)
    for row in zip(*(values for _, values in columns), strict=True):
        table.add_row(*row)
    console = get_console()
    console.print(table)
    grid = Table.grid(expand=True)
    grid.add_column()
    for name, value in totals:
        grid.add_row(f"[bold]{name}[/]: {value}")
    console.print(grid)
