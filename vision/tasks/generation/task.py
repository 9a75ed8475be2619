"""The image-generation task (``task=generation``); its data sets are in :mod:`.data`, sampling to files in
:mod:`.infer`.

Training: ``python tools/train.py recipe=ddpm_digits`` (or ``sngan_digits``, ``dcgan_digits``,
``projected_gan_digits``, ``ddpm_m_digits``). Diffusion models train through the engine's single-optimiser path
(``model.loss(batch)``), GANs through ``model.train_step`` with their own optimisers. The batch handed to the model is
``{"images": float [B, C, S, S] in [-1, 1], "labels": int64 [B]}``.

Data (``data=``):

- ``digits`` (built in): scikit-learn's 8x8 digits upscaled to ``imgsz`` (32), **one channel** — the digits are grey,
  so the models learn and sample ``[1, 32, 32]`` images; ``channels=3`` replicates the grey level instead. The split
  is the one of :class:`vision.data.Digits` (``val_fraction`` 0.2, seed 0): 1438 training and 359 held-out images.
- a folder: ``train/`` and ``val/`` (class folders or flat), ``train/`` alone or one folder of class folders (split
  by ``val_fraction``), or a flat folder of images (no classes: unconditional); ``train/`` beside other folders but
  no ``val/`` is refused, naming them. Images are resized (shorter side) and centre-cropped to ``imgsz``; 3 channels
  unless ``channels=1``.

Models are class-conditional when the data has classes (``conditional=false`` trains them unconditionally); the
builder receives ``num_classes``, ``image_channels`` and ``image_size`` from the data, and the run's weights file
records them so that :func:`vision.load_model` rebuilds the same model.

Evaluation (each validation epoch): ``eval_samples`` images (class-balanced labels, fixed seed ``eval_seed``; DDIM
with ``eval_steps`` steps, at most the model's ``T``, no guidance, for diffusion models) scored by
:class:`vision.tasks.generation.metrics.GenerationEvaluator` against the training images: ``fd_digits`` (the main
metric, lower is better) with its held-out floor, class accuracy, class coverage and nearest-neighbour distances, plus
FID and KID with ``fid=true``. Sample grids (PNG) go to ``<run>/samples/step<N>.png`` every ``sample_every`` optimiser
steps, from the EMA weights when ``ema=true`` (the default).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from vision.engine.distributed import all_gather_objects
from vision.engine.task import Task, register_task
from vision.tasks._data import folder_splits
from vision.tasks.generation.data import REF_MAX, FlatFolder, ImageTensors, RepeatDataset, ResizeCrop, stack_images
from vision.tasks.generation.infer import GENERATION_KEYS, infer_generation, rank_world
from vision.utils.keys import integer, number

__all__ = ["GenerationTask", "sample_kwargs"]


def sample_kwargs(model: nn.Module, *, steps: int | None) -> dict[str, Any]:
    """Evaluation sampling settings: DDIM with ``steps`` steps (at most the model's ``T``: ``eval_steps=50`` on a
    ``timesteps=20`` model visits all 20), eta 0 and no guidance for diffusion models; nothing for one-step
    generators (GANs)."""
    if hasattr(model, "schedule"):
        if steps is not None:
            steps = min(int(steps), int(model.schedule.timesteps))
        return {"sampler": "ddim", "steps": steps, "eta": 0.0, "guidance_scale": 1.0}
    return {}


# ---------------------------------------------------------------------------------------------------- the task
@register_task
class GenerationTask(Task):
    """Image generation with GANs and diffusion models (see the module docstring)."""

    name: ClassVar[str] = "generation"
    infer_keys: ClassVar[dict[str, Any]] = GENERATION_KEYS
    infer = staticmethod(infer_generation)
    main_metric: ClassVar[str] = "fd_digits"
    maximize: ClassVar[bool] = False
    defaults: ClassVar[dict[str, Any]] = {
        "imgsz": 32,
        "batch": 128,
        "lr": 2e-4,
        "optimizer": "adamw",
        "weight_decay": 0.0,
        "workers": 0,
        "ema": True,
        "ema_decay": 0.9995,
        "val_fraction": 0.2,
        "channels": 0,  # 0: the data's own (1 for digits, 3 for folders)
        "conditional": True,
        "repeat": 1,  # passes over the training images per epoch (fewer, longer epochs on tiny data sets)
        "hflip": 0.0,
        "sample_every": 500,  # optimiser steps between sample grids (0: never)
        "sample_grid": 100,
        "eval_samples": 1000,
        "eval_steps": 50,
        "eval_batch": 500,
        "eval_seed": 0,
        "fid": False,
    }
    schema: ClassVar[dict[str, Any]] = {
        "val_fraction": number(0.0, 0.99),
        "channels": integer(0),
        "repeat": integer(1),
        "hflip": number(0.0, 1.0),
        "sample_every": integer(0),
        "sample_grid": integer(1),
        "eval_samples": integer(0),
        "eval_steps": integer(1),
        "eval_batch": integer(1),
    }

    def __init__(self, args: dict[str, Any]) -> None:
        super().__init__(args)
        self.classes: list[str] = []
        self.channels = 1
        self._train_ref: Tensor | None = None
        self._val_ref: Tensor | None = None
        self._evaluator: Any = None

    # ------------------------------------------------------------------------------------------------ data
    @property
    def num_classes(self) -> int:
        return len(self.classes) if (self.classes and self.args.get("conditional", True)) else 0

    def build_datasets(self) -> tuple[Dataset, Dataset | None]:
        from vision.data import Digits, ImageFolder

        data = str(self.args.get("data") or "digits")
        size = int(self.args["imgsz"])
        frac = float(self.args["val_fraction"])
        seed = int(self.args["seed"])
        repeat, hflip = int(self.args.get("repeat", 1)), float(self.args.get("hflip", 0.0))
        requested = int(self.args.get("channels") or 0)
        if requested not in (0, 1, 3):
            raise ValueError(f"channels={requested} must be 0 (the data's own), 1 or 3")
        if data == "digits":
            self.channels = requested or 1
            self.classes = list(Digits.classes)
            train, val = Digits("train", size=size, val_fraction=frac), Digits("val", size=size, val_fraction=frac)
            pick = lambda ds: torch.stack([ds[i][0][: self.channels] for i in range(len(ds))])  # noqa: E731
            self._train_ref, self._val_ref = pick(train), pick(val)
            train_set = ImageTensors(self._train_ref, torch.tensor(train.targets), repeat=repeat, hflip=hflip)
            val_set = ImageTensors(self._val_ref, torch.tensor(val.targets))
            return train_set, val_set
        root = Path(data)
        if not root.is_dir():
            raise FileNotFoundError(f"data={data!r} is neither 'digits' nor a folder of images")
        self.channels = requested or 3
        train_t = ResizeCrop(size, self.channels, hflip)
        eval_t = ResizeCrop(size, self.channels)
        root, val_root = folder_splits(root, data)

        def folder(path: Path, transform: ResizeCrop) -> Dataset:
            has_classes = any(p.is_dir() and not p.name.startswith(".") for p in path.iterdir())
            return ImageFolder(path, transform=transform) if has_classes else FlatFolder(path, transform=transform)

        train_ds, ref_train = folder(root, train_t), folder(root, eval_t)
        self.classes = list(getattr(train_ds, "classes", []))
        if val_root is not None:
            val_ds: Dataset = folder(val_root, eval_t)
            if list(getattr(val_ds, "classes", [])) != self.classes:
                raise ValueError(f"{val_root} has classes {getattr(val_ds, 'classes', [])}, {root} has {self.classes}")
        else:
            order = np.random.default_rng(seed).permutation(len(train_ds))  # type: ignore[arg-type]
            n_val = max(2, round(len(order) * frac))
            keep, held = sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())
            if root.name == "train":
                self.say(f"data={data}: no val/ folder: val_fraction={frac:g} of {root} ({n_val} images) held out "
                         "for validation")  # fmt: skip
            val_ds = torch.utils.data.Subset(ref_train, held)
            train_ds = torch.utils.data.Subset(train_ds, keep)
            ref_train = torch.utils.data.Subset(ref_train, keep)
        if len(self.classes) <= 1:
            self.classes = []  # one class folder (or none): unconditional
        self._train_ref = stack_images(ref_train, REF_MAX, seed)
        self._val_ref = stack_images(val_ds, REF_MAX, seed)
        return RepeatDataset(train_ds, repeat), val_ds

    def build_model(self) -> nn.Module:
        import vision

        kwargs = dict(self.args.get("model_kwargs") or {})
        for key, value in self._data_kwargs().items():
            if key in kwargs and kwargs[key] != value:
                raise ValueError(
                    f"model_kwargs.{key}={kwargs[key]} contradicts the data ({key}={value}); "
                    f"change the data keys (channels, imgsz, conditional) instead"
                )
            kwargs[key] = value
        weights: Any = self.args.get("weights") or None
        model = vision.create_model(self.args["model"], weights=weights, **kwargs)
        needs = {"sample": "(n, labels=, seed=) -> uint8 images [n, C, S, S]"}
        if not callable(getattr(model, "train_step", None)):  # a GAN trains through its own step
            needs["loss"] = "(batch) -> dict of losses (or a GAN's train_step(batch, optimizers, step=, autocast=))"
        self.require_methods(model, needs)
        if self.num_classes:
            model.categories = list(self.classes)
        return model

    def _data_kwargs(self) -> dict[str, int]:
        return {"image_channels": self.channels, "image_size": int(self.args["imgsz"]), "num_classes": self.num_classes}

    def prepare_batch(self, batch: Any, device: torch.device, *, train: bool) -> Any:
        images, labels = batch
        x = images.to(device, non_blocking=True).float().div_(127.5).sub_(1.0)
        if device.type == "cuda" and self.args.get("channels_last", "auto") in ("auto", True):
            x = x.contiguous(memory_format=torch.channels_last)
        return {"images": x, "labels": labels.to(device, non_blocking=True).long()}

    def preflight(self) -> None:
        """``fid=true``: the FID Inception weights must be at hand (cached, or downloaded and verified now), not only
        after the first epoch."""
        if not self.args.get("fid"):
            return
        from vision.hub.download import DownloadError, download
        from vision.tasks.generation.networks import FID_WEIGHTS_SHA256, FID_WEIGHTS_URL

        try:
            download(FID_WEIGHTS_URL, sha256=FID_WEIGHTS_SHA256)
        except DownloadError as err:
            raise FileNotFoundError(
                f"fid=true needs the FID Inception weights ({FID_WEIGHTS_URL}), which are not available: {err}. "
                "Put the file into the cache, or train with fid=false"
            ) from None

    # ------------------------------------------------------------------------------------------------ evaluation
    def _get_evaluator(self, device: torch.device) -> Any:
        if self._evaluator is None:
            from vision.tasks.generation.metrics import GenerationEvaluator, fid_inception_v3

            if self._train_ref is None or self._val_ref is None:
                raise RuntimeError("evaluation needs held-out images: the data has no val split")
            fid_net = fid_inception_v3(device=device) if self.args.get("fid") else None
            digits = str(self.args.get("data") or "digits") == "digits"
            self._evaluator = GenerationEvaluator(
                self._train_ref,
                self._val_ref,
                classify=digits and self.num_classes == 10,
                fid_net=fid_net,
                device=device,
                seed=int(self.args["seed"]),
            )
        return self._evaluator

    def generate(
        self, model: nn.Module, n: int, *, device: torch.device, autocast: Any = None
    ) -> tuple[Tensor, Tensor | None]:
        """``n`` class-balanced evaluation samples, split over the ranks in fixed chunks (the same images whatever
        the number of processes): ``(uint8 [n, C, S, S], labels int64 [n] | None)``."""
        import contextlib

        chunk = max(1, int(self.args.get("eval_batch", 500)))
        seed = int(self.args.get("eval_seed", 0))
        rank, world = rank_world()
        kwargs = sample_kwargs(model, steps=int(self.args.get("eval_steps", 50)))
        k = self.num_classes
        local = []
        for j in range(rank, math.ceil(n / chunk), world):
            start, stop = j * chunk, min(n, (j + 1) * chunk)
            labels = (torch.arange(start, stop) % k) if k else None
            with autocast() if autocast is not None else contextlib.nullcontext():
                images = model.sample(
                    stop - start, labels=labels, seed=seed * 1_000_003 + j, batch_size=chunk, device=device, **kwargs
                )
            local.append((j, images, labels))
        parts = sorted((p for part in all_gather_objects(local) for p in part), key=lambda p: p[0])
        images = torch.cat([p[1] for p in parts])
        labels = torch.cat([p[2] for p in parts]) if k else None
        return images, labels

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader, device: torch.device, *, autocast: Any) -> dict[str, Any]:
        evaluator = self._get_evaluator(device)
        t0 = time.perf_counter()
        images, labels = self.generate(
            model, int(self.args.get("eval_samples", 1000)), device=device, autocast=autocast
        )
        metrics = evaluator(images, labels)
        metrics["sample_time"] = time.perf_counter() - t0
        return metrics

    def scalar_metrics(self, metrics: Mapping[str, Any]) -> dict[str, float]:
        keys = (
            "fd_digits",
            "fd_digits_floor",
            "fd_digits_ratio",
            "class_acc",
            "class_coverage",
            "nn_median",
            "nn_median_heldout",
            "nn_ratio",
            "fid",
            "kid",
            "sample_time",
        )
        return {k: float(metrics[k]) for k in keys if k in metrics}

    # ------------------------------------------------------------------------------------------------ outputs
    def metadata(self) -> dict[str, Any]:
        kwargs = {**dict(self.args.get("model_kwargs") or {}), **self._data_kwargs()}
        if kwargs.get("backbone_weights"):
            kwargs["backbone_weights"] = None  # the weights file holds the (frozen) backbone: no download to rebuild
        meta: dict[str, Any] = {"model_kwargs": kwargs, "data": str(self.args.get("data") or "digits")}
        if self.num_classes:
            meta["classes"] = list(self.classes)
        return meta

    def save_grid(self, model: nn.Module, path: Path, *, device: torch.device | None = None) -> Path:
        """A class-balanced sample grid (one class per column when conditional) written as PNG."""
        from vision.viz import make_grid, save_image

        n = int(self.args.get("sample_grid", 100))
        device = device or next(model.parameters()).device
        labels = "balanced" if self.num_classes else None
        images = model.sample(
            n,
            labels=labels,
            seed=int(self.args.get("eval_seed", 0)),
            device=device,
            **sample_kwargs(model, steps=int(self.args.get("eval_steps", 50))),
        )
        nrow = self.num_classes if 0 < self.num_classes <= 20 else None
        return save_image(make_grid(list(images), nrow=nrow), path)

    def on_step_end(self, run_dir: Path, step: int, model: nn.Module) -> None:
        every = int(self.args.get("sample_every", 0))
        if every > 0 and step % every == 0:
            self.save_grid(model, run_dir / "samples" / f"step{step:07d}.png")

    def inference_hint(self, run_dir: Path) -> str:
        return f"python tools/infer.py weights={self.trained_weights(run_dir)} n=64 seed=0"
