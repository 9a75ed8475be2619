"""benchmarks/heap.py end to end on a tiny case: both settings run in their own processes and are compared."""

from __future__ import annotations

import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "heap.py"


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_heap_benchmark_compares_both_settings_on_identical_detections():
    argv = [sys.executable, str(SCRIPT), "--cases", "2x96", "--threads", "1", "--rounds", "1", "--iters", "2"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip().splitlines()[-1]
    found = re.search(r"glibc defaults +[\d.]+ ms +(\d+) faults/call \| vision +[\d.]+ ms +(\d+) faults/call", line)
    assert found, line
    assert "detections identical" in line
