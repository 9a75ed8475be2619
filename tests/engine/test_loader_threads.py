"""Data-loader thread settings when training on the CPU: workers only on cores the step leaves free, one thread per
worker."""

from __future__ import annotations

import os

import cv2
import torch

from vision.engine._parts import cpu_workers, single_threaded_worker


def test_cpu_training_workers_only_take_the_cores_the_step_leaves_free():
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = torch.get_num_threads()
    said: list[str] = []
    try:
        torch.set_num_threads(cores)  # the step's threads on every core: loading in this process
        assert cpu_workers(2, torch.device("cpu"), said.append) == 0
        assert said == [f"workers=2 on {cores} CPU cores with {cores} training threads: using 0 (the loading runs in "
                        "this process)"]  # fmt: skip
        torch.set_num_threads(1)  # one thread for the step: workers on the other cores
        assert cpu_workers(cores + 6, torch.device("cpu"), said.append) == cores - 1
        assert f"using {cores - 1}" in said[-1]
        assert cpu_workers(0, torch.device("cpu"), said.append) == 0 and len(said) == 2  # nothing lowered, nothing said
        assert cpu_workers(cores + 6, torch.device("cuda"), said.append) == cores + 6  # workers feed the GPU
    finally:
        torch.set_num_threads(threads)


def test_worker_init_makes_torch_single_threaded_and_opencv_is_set_before_the_fork():
    threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    try:
        single_threaded_worker(0)
        assert torch.get_num_threads() == 1
        cv2.setNumThreads(2)
        torch.set_num_threads(1)  # a core left for a worker
        cpu_workers(1, torch.device("cpu"), print)  # with workers: one OpenCV thread here, inherited by the children
        assert cv2.getNumThreads() == 1
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv_threads)
