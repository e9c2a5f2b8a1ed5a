"""keep_host_memory: glibc keeps freed memory for reuse (dann/host.py)."""

import platform
import subprocess
import sys

import pytest

CHECK = "from dann.host import keep_freed_memory; print(keep_freed_memory())"


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_glibc_accepts_both_thresholds():
    # mallopt refuses values out of range (e.g. an mmap threshold above 32 MiB on 64-bit) by
    # returning 0: True means both settings took effect. In a subprocess: they are process-wide.
    # The effect on page faults depends on the process's allocation history, so it is measured
    # by scripts/bench_train.py (fp32 against fp32_malloc_default), not asserted here.
    out = subprocess.run(
        [sys.executable, "-c", CHECK],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "True"


def test_build_sets_it_unless_switched_off(monkeypatch, make_cfg):
    import dann.train

    calls = []
    monkeypatch.setattr(dann.train, "keep_freed_memory", lambda: calls.append(1) or True)
    dann.train.build(make_cfg("trainer.fast_dev_run=true"))
    assert calls == [1]
    dann.train.build(make_cfg("trainer.fast_dev_run=true", "keep_host_memory=false"))
    assert calls == [1]
