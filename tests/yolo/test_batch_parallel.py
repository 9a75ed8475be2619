"""Batch slices in parallel threads on the CPU (``vision.utils.parallel.split_batch``) and YOLO's use of it."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import Tensor, nn

import vision
from vision.utils.parallel import split_batch


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.SiLU(), nn.Conv2d(8, 4, 3, stride=2, padding=1)).eval()


def test_slices_run_in_threads_and_join_in_batch_order(two_threads: None) -> None:
    net, x = _net(), torch.rand(5, 3, 16, 16)
    seen: list[tuple[str, int, int]] = []

    def fn(part: Tensor) -> tuple[Tensor, list[Tensor]]:
        seen.append((threading.current_thread().name, part.shape[0], torch.get_num_threads()))
        out = net(part)
        return out, [out.flatten(1).sum(1)]

    with torch.no_grad():
        got, (sums,) = split_batch(fn, x)
        want = net(x)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(sums, want.flatten(1).sum(1))
    assert sorted(n for _, n, _ in seen) == [2, 3]  # two slices of the 5 images
    assert len({name for name, _, _ in seen}) == 2  # ... in two threads
    assert all(t == 1 for _, _, t in seen)  # one intra-op thread each
    assert torch.get_num_threads() == 2  # the caller's count restored


def test_callers_grad_mode_holds_in_the_workers(two_threads: None) -> None:
    net, x = _net(), torch.rand(4, 3, 8, 8)
    with torch.no_grad():
        assert not split_batch(net, x).requires_grad
    with torch.inference_mode():
        assert split_batch(net, x).is_inference()
    out = split_batch(net, x)
    assert out.requires_grad
    out.sum().backward()  # the graph of both slices reaches the weights
    assert net[0].weight.grad is not None


def test_plain_call_when_nothing_to_gain(two_threads: None) -> None:
    names: list[str] = []

    def fn(part: Tensor) -> Tensor:
        names.append(threading.current_thread().name)
        return part * 2

    split_batch(fn, torch.rand(1, 3))  # one image
    split_batch(fn, torch.rand(4, 3), min_per_slice=4)  # too few per slice
    torch.set_num_threads(1)
    split_batch(fn, torch.rand(4, 3))  # one intra-op thread
    torch.set_num_threads(2)
    split_batch(lambda part: split_batch(fn, part), torch.rand(4, 3))  # nested: the inner call runs inline
    assert names.count(threading.current_thread().name) == 4
    assert len(names) == 5


def test_a_failing_slice_raises_and_restores_the_thread_count(two_threads: None) -> None:
    def fn(part: Tensor) -> Tensor:
        if part[0, 0] < 0:
            raise ValueError("bad slice")
        return part

    x = torch.ones(4, 2)
    x[2:] = -1  # the second slice (run in a worker) fails
    with pytest.raises(ValueError, match="bad slice"):
        split_batch(fn, x)
    assert torch.get_num_threads() == 2
    with pytest.raises(TypeError, match="must return tensors"):
        split_batch(lambda part: part.shape[0], x)


def test_yolo_predict_in_slices_equals_the_plain_call(two_threads: None) -> None:
    torch.manual_seed(0)
    model = vision.create_model("yolo_n", num_classes=3, imgsz=128).eval()
    images = [torch.rand(3, 96 + 16 * i, 128) for i in range(4)]
    calls: list[str] = []
    model.head.register_forward_pre_hook(lambda *_: calls.append(threading.current_thread().name))
    sliced = model.predict(images, score_threshold=0.05)
    assert any(name.startswith("vision-batch") for name in calls)  # the folded copy keeps the hook: a slice ran there
    # the two slices asked for the folded copy at once on this first call: it was made (traced) once, then ran twice
    assert len(calls) == 3
    torch.set_num_threads(1)  # the plain path
    plain = model.predict(images, score_threshold=0.05)
    assert sum(len(d["boxes"]) for d in plain) > 0
    for got, want in zip(sliced, plain):
        assert got["labels"].tolist() == want["labels"].tolist()
        torch.testing.assert_close(got["boxes"], want["boxes"], atol=1e-3, rtol=1e-4)
        torch.testing.assert_close(got["scores"], want["scores"], atol=1e-5, rtol=1e-4)


def test_classifier_predict_in_slices_equals_the_plain_call(two_threads: None) -> None:
    torch.manual_seed(0)
    model = vision.create_model("resnet18", num_classes=10).eval()
    x = torch.randn(4, 3, 32, 32)
    calls: list[str] = []
    model.register_forward_pre_hook(lambda *_: calls.append(threading.current_thread().name))
    sliced = model.predict(x, topk=3)
    assert len(calls) == 2 and any(name.startswith("vision-batch") for name in calls)
    torch.set_num_threads(1)
    plain = model.predict(x, topk=3)
    assert [c for row in sliced for c, _, _ in row] == [c for row in plain for c, _, _ in row]
    assert [p for row in sliced for _, _, p in row] == pytest.approx([p for row in plain for _, _, p in row])
