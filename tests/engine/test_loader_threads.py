"""Data-loader thread settings when training on the CPU: workers below the cores, one thread per worker."""

from __future__ import annotations

import os

import cv2
import torch

from vision.engine._parts import cpu_workers, single_threaded_worker


def test_cpu_training_keeps_a_core_for_the_step():
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    said: list[str] = []
    assert cpu_workers(cores + 6, torch.device("cpu"), said.append) == cores - 1
    assert said and f"using {cores - 1}" in said[0]
    assert cpu_workers(0, torch.device("cpu"), said.append) == 0 and len(said) == 1  # nothing to lower, nothing said
    assert cpu_workers(cores + 6, torch.device("cuda"), said.append) == cores + 6  # workers feed the GPU


def test_worker_init_makes_torch_single_threaded_and_opencv_is_set_before_the_fork():
    threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    try:
        single_threaded_worker(0)
        assert torch.get_num_threads() == 1
        cv2.setNumThreads(2)
        cpu_workers(1, torch.device("cpu"), print)  # with workers: one OpenCV thread here, inherited by the children
        assert cv2.getNumThreads() == 1
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv_threads)
