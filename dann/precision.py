"""`trainer.precision=auto`: the numeric precision a run uses, picked by what the device runs
natively, and said in one log line.

- bf16-mixed where bf16 matrix work is native: CUDA GPUs of compute capability 8.0 or newer
  (Ampere and later; `torch.cuda.is_bf16_supported()` is not asked, as it also counts
  emulation and so says yes on a V100 or T4),
  CPUs with AMX-BF16 or AVX512-BF16 (Intel Sapphire Rapids and newer, AMD Zen 4 and newer).
  Convolutional backbones then also run channels-last (`backbone.channels_last` left at null).
- 32-true elsewhere: on CPUs without native bf16, bf16 autocast is emulated and several times
  slower than fp32; GPUs without bf16 (V100, T4) are better served by an explicit 16-mixed.
An explicit `trainer.precision=...` (or `backbone.channels_last=true/false`) always wins.
"""

import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)

CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
NATIVE_BF16_CUDA = (8, 0)  # compute capability: Ampere (A100) and newer


def cpu_bf16_flags(cpuinfo: str | None = None) -> list[str]:
    """The native-bf16 instruction sets this CPU advertises (Linux /proc/cpuinfo flags)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return []
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags |= set(line.split(":", 1)[1].split())
    return [f for f in CPU_BF16_FLAGS if f in flags]


def uses_cuda(accelerator: str) -> bool:
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def auto_precision(accelerator: str) -> tuple[str, str]:
    """(precision, why) for `trainer.accelerator=accelerator`."""
    if uses_cuda(accelerator):
        name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CUDA device"
        if torch.cuda.is_available() and torch.cuda.get_device_capability(0) >= NATIVE_BF16_CUDA:
            return "bf16-mixed", f"{name} supports bf16"
        return "32-true", f"{name} has no native bf16 (use trainer.precision=16-mixed there)"
    flags = cpu_bf16_flags()
    if flags:
        return "bf16-mixed", f"the CPU has native bf16 ({', '.join(flags)})"
    return "32-true", "the CPU has no native bf16 (no AMX-BF16 / AVX512-BF16): bf16 is emulated"


def resolve(precision: str, accelerator: str, channels_last: bool | None) -> tuple[str, bool]:
    """The run's (precision, channels_last): `auto` resolved (and logged), channels_last null
    following the precision (on with bf16)."""
    if str(precision) == "auto":
        precision, why = auto_precision(accelerator)
        layout = " + channels_last" if channels_last is None and precision == "bf16-mixed" else ""
        log.info(
            "precision=auto: %s%s, since %s (set trainer.precision to override)",
            precision,
            layout,
            why,
        )
    if channels_last is None:
        channels_last = str(precision).startswith("bf16")
    return str(precision), bool(channels_last)
