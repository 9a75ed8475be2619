"""The classification task: ImageFolder or the built-in digits, albumentations recipes, top-k/P/R/F1/AUC metrics."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from vision.backbones.classifier import EvalTransform
from vision.engine.distributed import all_gather_objects
from vision.engine.replicas import cut_tensors
from vision.engine.task import Task, register_task
from vision.hub.cards import Preprocess
from vision.tasks._data import folder_splits, registered_split, split_datasets
from vision.tasks._distill import DISTILL_KEYS, check_teacher_classes, refuse_distill_without_teacher
from vision.tasks.classification.infer import CLASSIFICATION_KEYS, infer_classification
from vision.tasks.classification.metrics import classification_metrics
from vision.utils.keys import ArgumentError, check_section, number, one_of
from vision.utils.parallel import split_batch

__all__ = ["ClassificationTask"]


def _takes_keyword(fn: Any, name: str) -> bool:
    """Whether ``fn`` accepts the keyword ``name`` (by name or through ``**kwargs``)."""
    import inspect

    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True  # not introspectable: let the call decide
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in params)


@register_task
class ClassificationTask(Task):
    """Image classification.

    ``data``: ``digits`` (scikit-learn's handwritten digits, built in) or a folder: either with ``train/`` and
    ``val/`` class folders, ``train/`` alone, or a single ImageFolder; the last two are split deterministically by
    ``val_fraction`` (``0``: no validation, said in one line). A folder with ``train/`` beside other folders but no
    ``val/`` (e.g. ``valid/``, ``test/``) is refused, naming them, rather than trained without validation.

    ``label_smoothing`` goes to the model's ``loss(batch, label_smoothing=...)``; ``augment.name`` takes the
    classification recipes only (``classification_*`` of :func:`vision.data.transforms.list_transforms`).

    ``teacher=`` (a run, a weights file, ``NAME.TAG`` or a name) trains the model as a student by knowledge
    distillation (``distill.alpha``, ``distill.temperature``; :mod:`vision.tasks.classification.distill`).
    """

    name: ClassVar[str] = "classification"
    infer_keys: ClassVar[dict[str, Any]] = CLASSIFICATION_KEYS
    infer = staticmethod(infer_classification)
    main_metric: ClassVar[str] = "top1"
    maximize: ClassVar[bool] = True
    defaults: ClassVar[dict[str, Any]] = {
        "val_fraction": 0.2,
        "label_smoothing": 0.0,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "augment": {"name": "classification_train", "scale": [0.5, 1.0], "hflip": 0.5, "color_jitter": 0.3},
        "head_init_std": 0.01,  # fine-tuning (pretrained weights=, new head): the head starts this small
        "cache": "none",  # ram: an image folder's images decoded once (ImageFolder.cache_images)
        "teacher": "",
        "distill": dict(DISTILL_KEYS),
    }
    schema: ClassVar[dict[str, Any]] = {
        "val_fraction": number(0.0, 0.99),
        "label_smoothing": number(0.0, 0.99),
        "head_init_std": number(0.0, lo_open=True),
        "cache": one_of("none", "ram"),
    }

    def __init__(self, args: dict[str, Any]) -> None:
        super().__init__(args)
        self.classes: list[str] = []
        self.distiller: Any = None

    # ------------------------------------------------------------------------------------------------------ data
    def _transforms(self) -> tuple[Any, Any]:
        from vision.data import build_transform

        size = int(self.args["imgsz"])
        aug = dict(self.args.get("augment") or {})
        name = aug.pop("name", "classification_train")
        from vision.data.knobs import check_knobs
        from vision.data.transforms import list_transforms, transform_arguments

        fits = [n for n in list_transforms() if n.startswith("classification_")]
        if name not in fits:
            what = "a recipe of another task" if name in list_transforms() else "not a transform recipe"
            raise ArgumentError(f"augment.name={name} is {what}; a classifier takes: {', '.join(fits)}")
        check_section("augment", aug, ["name", *transform_arguments(name)], reserved=("size", "mean", "std"))
        aug = check_knobs(aug, prefix="augment.", recipe=name)
        common = {"mean": tuple(self.args["mean"]), "std": tuple(self.args["std"])}
        train = build_transform(name, size=size, **common, **aug)
        return train, EvalTransform(self.preprocess())

    def preprocess(self) -> Preprocess:
        """The evaluation preprocessing of this run: the shorter side resized to ``imgsz`` (bilinear, antialiased),
        centre-cropped to ``imgsz``, normalised with the run's ``mean``/``std``. The validation split goes through it
        and the weights record it (:meth:`metadata`), so ``predict`` sees what validation scored."""
        size = int(self.args["imgsz"])
        return Preprocess(input_size=(size, size), resize_size=size, interpolation="bilinear",
                          mean=tuple(self.args["mean"]), std=tuple(self.args["std"]), crop=True)  # fmt: skip

    def build_datasets(self) -> tuple[Dataset, Dataset | None]:
        from vision.data import ImageFolder

        data = str(self.args["data"] or "digits")
        train_t, val_t = self._transforms()
        offered = {"size": int(self.args["imgsz"]), "val_fraction": float(self.args["val_fraction"])}
        train = registered_split(data, "classification", "train", {**offered, "transform": train_t})
        if train is not None:
            val = registered_split(data, "classification", "val", {**offered, "transform": val_t})
            self.classes = list(train.classes)
            if val is None or len(val) == 0:
                self.say_no_validation(f"data={data} has no validation images")
            if self.args.get("cache") == "ram":
                self.say(f"cache=ram: data={data} is not read from image files; nothing to cache")
            return train, val
        root = Path(data)
        if not root.is_dir():
            raise FileNotFoundError(
                f"data={data!r} is neither a registered dataset ({', '.join(split_datasets('classification'))}) "
                "nor a folder of images"
            )
        root, val_root = folder_splits(root, data)
        if val_root is not None:
            train = ImageFolder(root, transform=train_t)
            val = ImageFolder(val_root, transform=val_t)
            if val.classes != train.classes:
                raise ValueError(f"{val_root} has classes {val.classes}, {root} has {train.classes}")
            self.classes = list(train.classes)
            self._cache_in_ram((train, None), (val, None))
            return train, val
        full_train = ImageFolder(root, transform=train_t)
        full_val = ImageFolder(root, transform=val_t)
        self.classes = list(full_train.classes)
        rng = np.random.default_rng(int(self.args["seed"]))
        order = rng.permutation(len(full_train))
        fraction = float(self.args["val_fraction"])
        n_val = round(len(order) * fraction)
        if n_val == 0:
            self.say_no_validation(f"data={data}: val_fraction={fraction:g} holds out no image of {root}")
        elif root.name == "train":
            self.say(f"data={data}: no val/ folder: val_fraction={fraction:g} of {root} ({n_val} images) held out "
                     "for validation")  # fmt: skip
        train_idx, val_idx = sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())
        self._cache_in_ram((full_train, train_idx), (full_val, val_idx))  # each image once, in the split it is in
        return Subset(full_train, train_idx), Subset(full_val, val_idx)

    def _cache_in_ram(self, *splits: tuple[Any, list[int] | None]) -> None:
        """``cache=ram``: decode the images of each ``(ImageFolder, indices)`` once (``None``: all of them); one line
        says what is held, a warning line names a split that does not fit (read from its files as without)."""
        if self.args.get("cache") != "ram":
            return
        start, held, count = time.perf_counter(), 0, 0
        for folder, indices in splits:
            try:
                held += folder.cache_images(indices)
            except MemoryError as err:
                self.say(f"warning: {err}; the images of {folder.root} are read from their files instead")
                continue
            count += len(folder) if indices is None else len(indices)
        if count:
            self.say(f"cache=ram: {count} images decoded in {time.perf_counter() - start:.1f} s, "
                     f"{held / 2**20:.0f} MiB held")  # fmt: skip

    # ------------------------------------------------------------------------------------------------------ model
    def build_model(self) -> nn.Module:
        import vision

        weights: Any = self.args["weights"] or None
        model = vision.create_model(
            self.args["model"], weights=weights, num_classes=len(self.classes), **dict(self.args["model_kwargs"])
        )
        model.categories = list(self.classes)
        head = tuple(getattr(model, "new_head_prefixes", ()) or ())
        if head:  # pretrained body, new head: start the head small (initial loss near log(classes))
            std = float(self.args.get("head_init_std", 0.01))
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if any(name.startswith(h + ".") or name == h for h in head):
                        nn.init.normal_(p, std=std) if p.ndim > 1 else nn.init.zeros_(p)
            self.say(f"fine-tuning: new head {', '.join(head)} initialised with std {std:g}")
        smoothing = float(self.args.get("label_smoothing") or 0.0)
        if smoothing and not self.args.get("teacher") and not _takes_keyword(model.loss, "label_smoothing"):
            raise ArgumentError(
                f"label_smoothing={smoothing:g}: {self.args['model']}.loss() takes no label_smoothing; leave it at 0"
            )
        if self.args.get("teacher"):  # loaded before training starts: a bad teacher fails early
            from vision.tasks.classification.distill import ClassifierDistiller

            self.distiller = ClassifierDistiller.from_args(self.args)
            check_teacher_classes(self.distiller.teacher, self.classes)
        refuse_distill_without_teacher(self.args)
        return model

    def prepare_batch(self, batch: Any, device: torch.device, *, train: bool) -> Any:
        images, labels = batch
        return images.to(device, non_blocking=True), labels.to(device, non_blocking=True)

    def compute_loss(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        if self.distiller is not None:
            return self.distiller.loss(model, batch)
        smoothing = float(self.args.get("label_smoothing") or 0.0)
        return model.loss(batch, label_smoothing=smoothing) if smoothing else model.loss(batch)

    def cut_batch(self, batch: Any, parts: int) -> list[Any] | None:
        """``(images, labels)`` cut into ``parts`` consecutive slices; ``None`` while distilling."""
        return None if self.distiller is not None else cut_tensors(batch, parts)

    # ------------------------------------------------------------------------------------------------------ eval
    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader, device: torch.device, *, autocast: Any) -> dict[str, Any]:
        model.eval()
        distributed = isinstance(model, nn.parallel.DistributedDataParallel)
        probs, labels, loss_sum = [], [], 0.0
        for batch in loader:
            images, target = self.prepare_batch(batch, device, train=False)
            with autocast():
                logits = model(images) if distributed else split_batch(model, images)  # slices in threads on the CPU
            logits = logits.float()
            loss_sum += float(F.cross_entropy(logits, target, reduction="sum"))
            probs.append(logits.softmax(-1).cpu().numpy())
            labels.append(target.cpu().numpy())
        local = (
            np.concatenate(probs) if probs else np.zeros((0, len(self.classes)), np.float32),
            np.concatenate(labels) if labels else np.zeros((0,), np.int64),
            loss_sum,
        )
        parts = all_gather_objects(local)
        all_probs = np.concatenate([p[0] for p in parts])
        all_labels = np.concatenate([p[1] for p in parts])
        metrics = classification_metrics(all_probs, all_labels)
        metrics["val_loss"] = sum(p[2] for p in parts) / max(1, len(all_labels))
        return metrics

    def scalar_metrics(self, metrics: Mapping[str, Any]) -> dict[str, float]:
        keys = ("top1", "top5", "precision", "recall", "f1", "auc", "val_loss")
        return {k: float(metrics[k]) for k in keys if k in metrics}

    # ------------------------------------------------------------------------------------------------------ outputs
    def metadata(self) -> dict[str, Any]:
        pre = self.preprocess()
        return {
            "classes": self.classes,
            "preprocess": {
                "input_size": list(pre.input_size),
                "resize_size": pre.resize_size,
                "interpolation": pre.interpolation,
                "mean": list(pre.mean),
                "std": list(pre.std),
                "crop": pre.crop,
            },
            **({"teacher": str(self.args["teacher"])} if self.args.get("teacher") else {}),
        }

    def on_epoch_end(self, run_dir: Path, epoch: int, metrics: Mapping[str, Any], model: nn.Module) -> None:
        if "confusion" in metrics and self.args.get("plots", True):
            from vision.engine.reporting import plot_confusion

            plot_confusion(np.asarray(metrics["confusion"]), self.classes, run_dir / "confusion_matrix.png")

    def inference_hint(self, run_dir: Path) -> str:
        return f"python tools/infer.py weights={self.trained_weights(run_dir)} source=<image, folder or glob>"
