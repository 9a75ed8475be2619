"""``vision._heap``: importing vision keeps freed memory mapped (glibc), so repeated CPU work stops page-faulting."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from vision._heap import keep_freed_memory

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

# two 40 MiB tensors made and freed per round (above the 32 MiB that glibc's own mmap threshold can rise to, so by
# default each is a fresh mapping whatever the address-space layout); the page faults of the fourth round are printed
ROUNDS = """
import resource
import torch
import vision

def round_():
    xs = [torch.ones(10 << 20) for _ in range(2)]
    del xs

for _ in range(3):
    round_()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
round_()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(**env: str) -> int:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES", "VISION_MALLOC"))}
    out = subprocess.run([sys.executable, "-c", ROUNDS], env={**clean, **env}, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_freed_memory_is_reused_instead_of_faulted_in_again():
    default, kept = _faults(VISION_MALLOC="0"), _faults()
    assert default > 8000  # 80 MiB handed back to the OS each round: ~20k pages touched anew
    assert kept < 1000


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_a_users_own_glibc_setting_wins():
    assert _faults(MALLOC_TRIM_THRESHOLD_="0", MALLOC_MMAP_THRESHOLD_="131072") > 8000


@pytest.mark.parametrize(
    "env", [{"VISION_MALLOC": "0"}, {"MALLOC_TRIM_THRESHOLD_": "1"}, {"MALLOC_MMAP_THRESHOLD_": "1"},
            {"MALLOC_TOP_PAD_": "1"}, {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"}],
)  # fmt: skip
def test_opt_outs(env):
    assert keep_freed_memory(env) is False


def test_applies_on_glibc_only():
    assert keep_freed_memory({}) is GLIBC
