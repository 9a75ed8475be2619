"""Loader workers forked after the training process used OpenCV's thread pool start (a run used to hang at its
second epoch: the first epoch's validation drew samples with OpenCV, then the forked worker waited forever in
``cv2.setNumThreads`` for pool threads that do not exist in a child)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import cv2, numpy as np, torch
    from torch.utils.data import DataLoader
    from vision.engine._parts import cpu_workers, single_threaded_worker

    torch.set_num_threads(1)  # a core left for a worker (cpu_workers gives none when the step takes every core)
    cv2.setNumThreads(2)  # the default on 2 cores: drawing starts a pool of threads
    for _ in range(3):
        cv2.GaussianBlur(np.zeros((1500, 1500, 3), np.uint8), (31, 31), 0)
    workers = max(1, cpu_workers(2, torch.device("cpu"), print))

    def load(i):
        return cv2.resize(np.full((64, 64, 3), i, np.uint8), (32, 32)).mean()

    ds = [i for i in range(8)]
    loader = DataLoader(ds, batch_size=4, num_workers=workers, worker_init_fn=single_threaded_worker,
                        collate_fn=lambda b: [load(i) for i in b])
    for epoch in range(2):  # a fresh worker each epoch, as in training
        assert [len(b) for b in loader] == [4, 4]
        cv2.GaussianBlur(np.zeros((1500, 1500, 3), np.uint8), (31, 31), 0)  # the parent draws between epochs
    print("ok")
    """
)


@pytest.mark.timeout(180)
def test_workers_start_after_the_parent_used_opencv_threads():
    try:
        done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("a loader worker hung at start (OpenCV thread pool inherited across fork)")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("ok")
