"""keep_host_memory: glibc keeps freed memory for reuse (dann/host.py)."""

import platform
import subprocess
import sys

import pytest

# step-like patterns in a process that has imported the trainer (glibc's adaptive thresholds
# depend on the allocation history): blocks of 100 KiB to 16 MiB, 100-200 MiB in all, allocated,
# touched and freed, five rounds each. Prints the page faults of all rounds.
PATTERN = """
import resource, sys, torch
import dann.train
from dann.host import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
total = 0
for kib, n in [(1024, 200), (8192, 25), (16384, 12), (100, 1000)]:
    def round_():
        blocks = [torch.ones(kib * 256) for _ in range(n)]
        del blocks
    round_()
    before = faults()
    for _ in range(5):
        round_()
    total += faults() - before
print(total)
"""


def page_faults(mode: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", PATTERN, mode], capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_keeping_freed_memory_stops_page_faults_of_a_repeated_step():
    default, kept = page_faults("default"), page_faults("keep")
    # ~200 MiB freed and re-allocated per round: ~50,000 page faults per round by default
    assert default > 100_000, (default, kept)
    assert kept < default / 10, (default, kept)


def test_build_sets_it_unless_switched_off(monkeypatch, make_cfg):
    import dann.train

    calls = []
    monkeypatch.setattr(dann.train, "keep_freed_memory", lambda: calls.append(1) or True)
    dann.train.build(make_cfg("trainer.fast_dev_run=true"))
    assert calls == [1]
    dann.train.build(make_cfg("trainer.fast_dev_run=true", "keep_host_memory=false"))
    assert calls == [1]
