"""Intra-op threads fitted to the cores other processes leave free (``vision.utils.parallel``), used by the plain
(one-image) path of ``split_batch``."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from torch import Tensor

from vision.utils import parallel
from vision.utils.parallel import CpuShare, fitted_threads, split_batch


class _Fake:
    """Scripted ``(busy, own)`` CPU seconds and a wall clock for :class:`CpuShare`."""

    def __init__(self) -> None:
        self.wall, self.busy, self.own = 0.0, 100.0, 5.0
        self.reads = 0

    def read(self) -> tuple[float | None, float]:
        self.reads += 1
        return self.busy, self.own

    def advance(self, seconds: float, busy: float, own: float) -> None:
        self.wall += seconds
        self.busy += busy
        self.own += own


@pytest.fixture
def two_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "usable_cpus", lambda: {0, 1})
    monkeypatch.delenv("VISION_FIT_THREADS", raising=False)


def test_share_is_busy_cpu_time_minus_our_own_per_wall_second() -> None:
    fake = _Fake()
    share = CpuShare(window=0.25, read=fake.read, clock=lambda: fake.wall)
    assert share.busy_elsewhere() == 0.0  # one sample: nothing to compare with yet
    fake.advance(0.5, busy=0.9, own=0.4)  # the CPUs were busy 0.9 s, 0.4 s of it ours: 0.5 s elsewhere in 0.5 s
    assert share.busy_elsewhere() == pytest.approx(1.0)
    fake.advance(0.1, busy=5.0, own=0.0)  # inside the window: the last estimate, no new read
    reads = fake.reads
    assert share.busy_elsewhere() == pytest.approx(1.0)
    assert fake.reads == reads
    fake.advance(0.4, busy=0.0, own=0.5)  # over the 0.5 s since the last sample: 5.0 busy, 0.5 ours
    assert share.busy_elsewhere() == pytest.approx(9.0)
    fake.advance(1.0, busy=0.2, own=0.5)  # our own time counted beyond the busy ticks: never negative
    assert share.busy_elsewhere() == 0.0


def test_a_forked_child_starts_its_own_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _Fake()
    share = CpuShare(window=0.25, read=fake.read, clock=lambda: fake.wall)
    share.busy_elsewhere()
    fake.advance(0.5, busy=0.9, own=0.4)
    assert share.busy_elsewhere() == pytest.approx(1.0)
    # in a child the own CPU time restarts: compared with the parent's sample, the parent's time would look foreign
    monkeypatch.setattr(parallel.os, "getpid", lambda: -1)
    fake.advance(0.5, busy=1.0, own=-fake.own)
    assert share.busy_elsewhere() == 0.0  # no estimate before the child's second sample
    fake.advance(0.5, busy=0.5, own=0.5)
    assert share.busy_elsewhere() == pytest.approx(0.0)


def test_share_is_zero_where_proc_stat_cannot_be_read() -> None:
    clock = iter(range(10))
    share = CpuShare(read=lambda: (None, 1.0), clock=lambda: float(next(clock)))
    assert share.busy_elsewhere() == 0.0
    assert share.busy_elsewhere() == 0.0


def test_busy_seconds_counts_only_our_cpus_and_not_idle_or_iowait(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text(
        "cpu  900 0 90 5000 50 0 9 0 0 0\n"
        "cpu0 100 1 10 2000 20 2 3 4 0 0\n"  # busy: 100 + 1 + 10 + 2 + 3 + 4 = 120 ticks
        "cpu1 800 0 80 3000 30 0 6 0 0 0\n"  # busy: 886 ticks
        "intr 12345 0 0\nctxt 999\n",
        encoding="ascii",
    )
    tick = parallel.os.sysconf("SC_CLK_TCK")
    assert parallel._busy_seconds({0}, str(stat)) == pytest.approx(120 / tick)
    assert parallel._busy_seconds({0, 1}, str(stat)) == pytest.approx(1006 / tick)
    assert parallel._busy_seconds({0}, str(tmp_path / "missing")) is None


def _share_with(busy_elsewhere: float) -> CpuShare:
    share = CpuShare()
    share.busy_elsewhere = lambda: busy_elsewhere  # type: ignore[method-assign]
    return share


def test_fitted_threads_leave_the_busy_cores_alone(two_cpus: None, monkeypatch: pytest.MonkeyPatch) -> None:
    assert fitted_threads(2, _share_with(0.1)) == 2
    assert fitted_threads(2, _share_with(0.7)) == 1  # one core mostly taken
    assert fitted_threads(2, _share_with(1.9)) == 1  # never below one
    assert fitted_threads(1, _share_with(0.0)) == 1  # never above the caller's count
    monkeypatch.setattr(parallel, "usable_cpus", lambda: set(range(16)))
    assert fitted_threads(8, _share_with(3.0)) == 8  # 13 cores free
    assert fitted_threads(16, _share_with(3.0)) == 13
    monkeypatch.setenv("VISION_FIT_THREADS", "0")
    assert fitted_threads(16, _share_with(3.0)) == 16


@pytest.mark.parametrize(("elsewhere", "want"), [(0.0, 2), (1.0, 1)])
def test_one_image_runs_with_the_fitted_threads_and_restores_the_count(
    two_cpus: None, two_threads: None, monkeypatch: pytest.MonkeyPatch, elsewhere: float, want: int
) -> None:
    monkeypatch.setattr(parallel, "_share", _share_with(elsewhere))
    seen: list[tuple[str, int]] = []

    def fn(part: Tensor) -> Tensor:
        seen.append((threading.current_thread().name, torch.get_num_threads()))
        return part * 2

    x = torch.rand(1, 3)
    torch.testing.assert_close(split_batch(fn, x), x * 2)
    assert seen == [(threading.current_thread().name, want)]
    assert torch.get_num_threads() == 2

    def failing(part: Tensor) -> Tensor:
        raise ValueError("bad image")

    with pytest.raises(ValueError, match="bad image"):
        split_batch(failing, x)
    assert torch.get_num_threads() == 2


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="reads /proc/stat (Linux)")
def test_a_busy_process_is_seen() -> None:
    share = CpuShare(window=0.2)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)  # the interpreter has started and is spinning
        share.busy_elsewhere()
        time.sleep(0.6)
        assert share.busy_elsewhere() >= 0.5  # about one core
    finally:
        busy.kill()
        busy.wait()
