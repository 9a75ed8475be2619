"""The CPU step's batch as parallel parts (vision.engine.replicas): the gradient it gives, its independence from load
and scheduling, where it is used and where not."""

from __future__ import annotations

import copy
import subprocess
import sys
import time

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from vision.cli.train import main as train_main
from vision.engine import Trainer
from vision.engine.config import resolve_args
from vision.engine.replicas import CpuReplicas, cut_tensors, draws_random_numbers, make_replicas, plan_parts
from vision.engine.task import Task


class _Net(nn.Module):
    def __init__(self, norm: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.BatchNorm2d(8) if norm else nn.Identity()
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(F.relu(self.norm(self.conv(x))).mean((2, 3))))

    def loss(self, batch):
        images, labels = batch
        return {"ce": F.cross_entropy(self(images), labels), "l2": self(images).pow(2).mean() * 0.01}


class _Task(Task):
    name = "toy"

    def cut_batch(self, batch, parts):
        return cut_tensors(batch, parts)


def _batch(n: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 12, 12, generator=g), torch.randint(0, 5, (n,), generator=g)


def _backward(loss: torch.Tensor) -> None:
    loss.backward()


def _grads(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters()]


def _reference(model: nn.Module, batch, parts: int) -> list[torch.Tensor]:
    """The parts one after the other on one thread: part 0 on the model, the others on copies, summed in order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        copies = [model] + [copy.deepcopy(model) for _ in range(parts - 1)]
        for m, part in zip(copies, cut_tensors(batch, parts)):
            (sum(m.loss(part).values()) / parts).backward()
        for c in copies[1:]:
            for p, q in zip(model.parameters(), c.parameters()):
                p.grad.add_(q.grad)
    finally:
        torch.set_num_threads(threads)
    return _grads(model)


@pytest.mark.parametrize("parts", [2, 4])
def test_the_gradient_is_the_ordered_sum_of_the_parts_computed_one_by_one(parts):
    torch.manual_seed(0)
    model, batch = _Net(), _batch()
    ref_model = copy.deepcopy(model)
    replicas = CpuReplicas(model, _Task({}), parts, threads=1)
    losses, loss = replicas.step(batch, _backward)
    expected = _reference(ref_model, batch, parts)
    for got, want in zip(_grads(model), expected):
        assert torch.equal(got, want)
    # the reported losses are the parts' means; the copies hold no gradient afterwards
    assert set(losses) == {"ce", "l2"} and torch.isclose(loss, losses["ce"] + losses["l2"])
    assert all(p.grad is None for c in replicas.copies for p in c.parameters())
    # batch norm keeps the first part's running statistics (as DDP keeps rank 0's): the reference's model ran part 0
    assert torch.equal(model.norm.running_mean, ref_model.norm.running_mean)
    assert not torch.equal(model.norm.running_mean, torch.zeros(8))


def test_without_batch_norm_the_parts_give_the_whole_batch_gradient():
    torch.manual_seed(0)
    model, batch = _Net(norm=False), _batch()
    whole = copy.deepcopy(model)
    sum(whole.loss(batch).values()).backward()
    CpuReplicas(model, _Task({}), 2, threads=1).step(batch, _backward)
    for got, want in zip(_grads(model), _grads(whole)):
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-7)
    assert not torch.equal(_grads(model)[0], torch.zeros_like(_grads(model)[0]))


def test_the_copies_follow_the_model_and_gradients_accumulate():
    torch.manual_seed(0)
    model = _Net()
    replicas = CpuReplicas(model, _Task({}), 2, threads=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for seed in range(3):  # after each optimizer step the copies compute with the new weights
        replicas.step(_batch(seed=seed), _backward)
        opt.step()
        opt.zero_grad(set_to_none=True)
        replicas.step(_batch(seed=9), _backward)
        for p, q in zip(model.parameters(), replicas.copies[0].parameters()):
            assert torch.equal(p, q)
        opt.zero_grad(set_to_none=True)
    ref = copy.deepcopy(model)
    replicas.step(_batch(seed=1), _backward)
    replicas.step(_batch(seed=2), _backward)  # accumulates onto the first step's gradient
    one = _reference(copy.deepcopy(ref), _batch(seed=1), 2)
    two = _reference(copy.deepcopy(ref), _batch(seed=2), 2)
    for got, a, b in zip(_grads(model), one, two):
        assert torch.allclose(got, a + b, rtol=1e-6, atol=1e-8)


def test_the_result_does_not_depend_on_a_busy_neighbour():
    torch.manual_seed(0)
    start, batch = _Net(), _batch(64)
    quiet = copy.deepcopy(start)
    CpuReplicas(quiet, _Task({}), 2, threads=1).step(batch, _backward)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        loaded = copy.deepcopy(start)
        CpuReplicas(loaded, _Task({}), 2, threads=1).step(batch, _backward)
    finally:
        busy.kill()
        busy.wait()
    for a, b in zip(_grads(quiet), _grads(loaded)):
        assert torch.equal(a, b)


def test_the_callers_thread_count_is_restored_even_after_a_failure():
    threads = torch.get_num_threads()
    model = _Net()
    replicas = CpuReplicas(model, _Task({}), 2, threads=1)

    def fail(loss):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        replicas.step(_batch(), fail)
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize(
    ("requested", "threads", "batch", "expected"),
    [
        ("auto", 2, 16, (2, 1)),
        ("auto", 2, 4, (1, 2)),  # parts of fewer than 4 images: one part
        ("auto", 1, 16, (1, 1)),
        ("auto", 8, 16, (4, 2)),  # at most 4 parts, the threads shared out
        ("auto", 8, 12, (3, 2)),
        ("auto", 3, 10, (2, 1)),  # a divisor of the batch
        (1, 8, 16, (1, 8)),
        (3, 6, 12, (3, 2)),
    ],
)
def test_plan_parts(requested, threads, batch, expected):
    assert plan_parts(requested, threads=threads, local_batch=batch) == expected


def test_plan_parts_refuses_a_count_that_does_not_divide_the_batch():
    with pytest.raises(ValueError, match=r"cpu_replicas=3 does not divide the batch of 16"):
        plan_parts(3, threads=2, local_batch=16)


def test_cut_tensors():
    images, labels = torch.arange(12).view(6, 2), list("abcdef")
    padded = {"boxes": torch.zeros(6, 3, 4), "valid": torch.ones(6, 3, dtype=torch.bool)}
    cut = cut_tensors((images, labels, padded), 3)
    assert [c[1] for c in cut] == [["a", "b"], ["c", "d"], ["e", "f"]]
    assert torch.equal(cut[1][0], images[2:4]) and cut[2][2]["boxes"].shape == (2, 3, 4)
    assert cut_tensors((images, labels), 4) is None  # 6 images do not divide into 4
    assert cut_tensors((images, labels[:5]), 2) is None  # items of different lengths
    assert cut_tensors((images, 3.0), 2) is None


class _Loader:
    def __init__(self, batch):
        self.dataset = list(zip(*batch))

    @staticmethod
    def collate_fn(items):
        return torch.stack([i for i, _ in items]), torch.stack([t for _, t in items])


def _make(model, requested="auto", **kw):
    lines: list[str] = []
    options = {"local_batch": 16, "single_cpu_process": True, "plain_step": True, **kw}
    got = make_replicas(model, _Task({}), requested=requested, loader=_Loader(_batch()), device=torch.device("cpu"),
                        log=lines.append, **options)  # fmt: skip
    return got, lines


def test_make_replicas_uses_parts_only_for_a_model_that_draws_no_random_numbers(two_threads):
    plain, dropping = _Net(), _Net(dropout=0.2)
    state = torch.get_rng_state()
    got, lines = _make(plain)
    assert isinstance(got, CpuReplicas) and got.parts == 2 and "cpu_replicas=2" in lines[0]
    got, lines = _make(dropping)
    assert got is None and lines == []  # auto: the usual step, silently
    got, lines = _make(dropping, requested=2)
    assert got is None and "draws random numbers" in lines[0]
    assert torch.equal(torch.get_rng_state(), state), "the probe leaves the random state as it was"
    assert draws_random_numbers(_Net(dropout=0.2), _Task({}), _batch()) is True
    assert draws_random_numbers(_Net(), _Task({}), _batch()) is False


def test_make_replicas_stays_out_of_other_steps(two_threads):
    assert _make(_Net(), single_cpu_process=False)[0] is None  # CUDA or DDP
    got, lines = _make(_Net(), requested=2, plain_step=False)  # a model's own train_step, compile
    assert got is None and "ignored" in lines[0]
    assert _make(_Net(), requested=1)[0] is None

    class Whole(_Task):
        def cut_batch(self, batch, parts):
            return None

    lines: list[str] = []
    got = make_replicas(_Net(), Whole({}), requested=2, local_batch=16, single_cpu_process=True, plain_step=True,
                        loader=_Loader(_batch()), device=torch.device("cpu"), log=lines.append)  # fmt: skip
    assert got is None and "cannot be cut" in lines[0]


TRAIN = ["model=tiny_convnet", "task=classification", "data=digits", "imgsz=16", "batch=32", "fraction=0.1",
         "workers=0", "epochs=1", "tensorboard=false", "plots=false"]  # fmt: skip


@pytest.mark.parametrize("value", ["0", "two", "1.5"])
def test_a_bad_cpu_replicas_is_one_error_line(tiny_model, tmp_path, capsys, value):
    with pytest.raises(SystemExit) as exit_info:
        train_main([*TRAIN, f"project={tmp_path}", f"cpu_replicas={value}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2
    assert err == [f"error: cpu_replicas={value} is not allowed: cpu_replicas must be auto or an integer >= 1"]


def test_cpu_replicas_that_does_not_divide_the_batch_is_refused_before_a_run_folder(tiny_model, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_main([*TRAIN, f"project={tmp_path}", "cpu_replicas=3"])
    assert exit_info.value.code == 2
    assert "error: cpu_replicas=3 does not divide the batch of 32 images per process" in capsys.readouterr().err
    assert not (tmp_path / "classification").exists()


def test_a_cpu_run_says_how_it_cuts_its_steps(tiny_model, tmp_path, capsys, two_threads):
    Trainer(resolve_args([*TRAIN, f"project={tmp_path}"])).fit()
    assert (
        "cpu_replicas=2: each step's batch runs as 2 parts of 16 images on 1 thread(s) each" in capsys.readouterr().out
    )
