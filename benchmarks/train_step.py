"""Training-step throughput: the engine against a bare hand-written loop, same model, same data, same process.

Both train ``--model`` with SGD on the same GPU-resident batches (bf16 autocast and channels_last on CUDA), so the
difference is the engine's own overhead: the loss wrapper, the non-finite-loss guard, the LR scheduler, the
progress bar and the loss bookkeeping.

    python benchmarks/train_step.py                       # ResNet-50, batch 64, 224 px on CUDA
    python benchmarks/train_step.py --device cpu --model resnet18 --batch 8 --size 64 --steps 10   # a CPU smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

import vision
from vision.engine import Task, Trainer
from vision.engine.config import COMMON_DEFAULTS


class _Indices(Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


class SyntheticTask(Task):
    """Batches are picked from tensors already on the device, so data loading costs the same for both loops."""

    name: ClassVar[str] = "bench"

    def __init__(self, args: dict[str, Any], images: torch.Tensor, labels: torch.Tensor) -> None:
        super().__init__(args)
        self.images, self.labels = images, labels

    def build_datasets(self):
        return _Indices(len(self.images)), None

    def build_model(self):
        return vision.create_model(self.args["model"], num_classes=1000)

    def prepare_batch(self, batch, device, *, train):
        idx = batch.to(device, non_blocking=True)
        return self.images[idx], self.labels[idx]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_loop(args: argparse.Namespace, images: torch.Tensor, labels: torch.Tensor, device: torch.device) -> float:
    torch.manual_seed(0)
    model = vision.create_model(args.model, num_classes=1000).to(device)
    cuda = device.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    ctx = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else contextlib.nullcontext
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0)).to(device)
    model.train()

    def run(steps: int) -> None:
        for s in range(steps):
            idx = order[(s * args.batch) % len(images) :][: args.batch]
            with ctx():
                loss = F.cross_entropy(model(images[idx]).float(), labels[idx])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    run(args.warmup)
    _sync(device)
    t0 = time.perf_counter()
    run(args.steps)
    _sync(device)
    return args.steps * args.batch / (time.perf_counter() - t0)


def engine_loop(args: argparse.Namespace, images: torch.Tensor, labels: torch.Tensor, device: torch.device) -> float:
    cfg = dict(COMMON_DEFAULTS)
    cfg.update(
        model=args.model,
        task="bench",
        batch=args.batch,
        lr=0.01,
        device=str(device),
        workers=0,
        epochs=2,
        project=tempfile.mkdtemp(prefix="vision-bench-"),
        name="train_step",
        exist_ok=True,
        tensorboard=False,
        plots=False,
        warmup_epochs=0,
        data="synthetic",
    )
    trainer = Trainer(cfg, task=SyntheticTask(cfg, images, labels))
    trainer._setup_device()
    trainer.setup()
    per_epoch = trainer.sampler.batches_per_epoch()
    trainer._train_epoch(0, per_epoch - args.warmup)  # warm-up: the last `warmup` batches of an epoch
    _sync(device)
    t0 = time.perf_counter()
    trainer._train_epoch(1, per_epoch - args.steps)
    _sync(device)
    return args.steps * args.batch / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    n = args.batch * max(args.steps, args.warmup)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(n, 3, args.size, args.size, generator=g).to(device)
    if device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 1000, (n,), generator=g).to(device)
    results = {"bare": [], "engine": []}
    for _ in range(args.repeats):  # interleaved, so drifts in clock speed hit both
        results["bare"].append(bare_loop(args, images, labels, device))
        results["engine"].append(engine_loop(args, images, labels, device))
    bare, engine = max(results["bare"]), max(results["engine"])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"{args.model}, batch {args.batch}, {args.size} px, {args.steps} steps, {name}, "
        f"{'bf16 + channels_last' if device.type == 'cuda' else 'fp32'}"
    )
    print(f"bare loop : {bare:9.1f} images/s   (runs: {', '.join(f'{v:.1f}' for v in results['bare'])})")
    print(f"engine    : {engine:9.1f} images/s   (runs: {', '.join(f'{v:.1f}' for v in results['engine'])})")
    print(f"ratio engine/bare: {engine / bare:.3f}")


if __name__ == "__main__":
    main()
