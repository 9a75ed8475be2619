"""The detection task: one training/evaluation recipe for every detector (Faster/Mask R-CNN, YOLO, SSD).

Data (``data=``):

- ``synthetic`` (or empty): the built-in :class:`~vision.data.SyntheticShapes` with boxes and masks; its size is set by
  the ``synthetic`` keys (``synthetic.train``, ``synthetic.val``: image counts; ``synthetic.size``; ``synthetic.seed``;
  ``synthetic.max_objects``).
- ``bccd``: the BCCD blood-cell set (:func:`~vision.data.bccd`, train/val splits).
- a YAML file (or the same mapping written in a recipe) describing COCO-format splits::

      path: /data/cells            # optional; relative paths resolve against it (default: the YAML's folder)
      train: {images: images/train, annotations: annotations/train.json}
      val: {images: images/val, annotations: annotations/val.json}     # or [images dir, json]

  Without a ``val`` split (or with an empty one) the run says so in one line and trains without validation.

Augmentation (``augment.name=``): ``detection_train`` (albumentations on the CPU workers, the other ``augment.*`` keys
are its arguments, letterboxing to ``imgsz``), ``gpu`` (:class:`~vision.data.GpuAugment` on the batch in
:meth:`DetectionTask.prepare_batch`: the CPU workers only decode and shrink images larger than ``imgsz``
(``detection_shrink``); ``augment.mosaic`` etc.; mosaic is switched off for the last
``close_mosaic`` epochs) or ``none``. ``augment.normalize``, ``augment.mean`` and ``augment.std`` are refused: every
detector takes images in [0, 1] and normalises them inside the model. Validation images are the original ones: every
detector resizes internally and returns boxes in input pixels, so predictions are compared with the original
annotations. ``cache=ram`` decodes the images of file-based data sets once, before the loader workers start (they
share the memory), instead of every epoch.

Labels: data sets use ``0..K-1``; a model tagged ``"background_class"`` is built with ``num_classes = K + 1`` and its
targets/predictions are shifted by one (:mod:`vision.models.detection.common`); COCO evaluation and drawings use
data-set labels.

Evaluation: pycocotools ``COCOeval`` over the whole validation set gathered from every rank (bbox, and segm for
models that predict masks); the metrics are COCOeval's own ``stats`` (``map`` = AP@[.5:.95], ``map50``, ``map75`` ...,
``mask_map`` ...) and go to the epoch's one row of the log and ``metrics.csv``. Each validated epoch writes to the
run folder ``coco_eval.txt`` (COCOeval's own printed summary; ``coco_summary=true`` also prints it),
``predictions_bbox.json`` (COCO results format; ``predictions_segm.json`` with masks), ``pr_curve.png`` and
``val_predictions.png``; ``vision val`` writes the same files.

Distillation: ``teacher=`` (a run, a weights file, ``NAME.TAG``) trains a YOLO student from a YOLO teacher of any
backbone and width (``distill.alpha``, ``distill.temperature``, ``distill.features``;
:mod:`vision.tasks.detection.distill`).

Example:
    >>> python tools/train.py task=detection model=faster_rcnn model_kwargs.backbone=resnet18 data=synthetic epochs=5
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from vision.engine.replicas import cut_tensors
from vision.engine.task import Task, move_to, register_task
from vision.models.detection.common import (
    as_image_list,
    filter_detections,
    label_offset,
    to_dataset_detections,
    to_model_targets,
)
from vision.tasks._data import registered_split
from vision.tasks._distill import DISTILL_KEYS, check_teacher_classes, refuse_distill_without_teacher
from vision.tasks.detection.data import SYNTHETIC_KEYS, load_data_spec
from vision.tasks.detection.infer import DETECTION_KEYS, infer_detection
from vision.tasks.detection.plots import plot_pr_curves
from vision.utils.keys import ArgumentError, auto_or_flag, check_section, integer, number, one_of

__all__ = ["DetectionTask"]

#: augmentation keys a detection run refuses: every detector normalises its [0, 1] input itself
_NORMALISED_IN_MODEL = ("normalize", "mean", "std")


def _is_main() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _seed_of(*parts: Any) -> int:
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class AugmentedBatch(NamedTuple):
    """A training batch augmented in a loader worker: float images ``[B, 3, S, S]`` and the augmenter's targets."""

    images: Tensor
    targets: Any


class _AugmentInWorkers:
    """Collate + batch augmentation, called inside the loader workers (training on the CPU with ``workers > 0``).

    The augmenter then runs beside the training step, as a CPU data pipeline does, instead of before each step in
    the training process. The workers are started at every epoch (the loader is not persistent), so they see the
    task's current epoch and mosaic state; the augmentation of a batch is seeded by (seed, epoch, image ids) as in
    the training process, so the two places give the same batches.
    """

    def __init__(self, task: DetectionTask) -> None:
        self.task = task

    def __call__(self, samples: list[Any]) -> AugmentedBatch:
        from vision.data import detection_collate

        images, targets = detection_collate(samples)
        return AugmentedBatch(*self.task._augment_batch(images, targets, torch.device("cpu")))


def _cache_in_ram(**splits: Dataset | None) -> None:
    """``cache=ram``: decode the images of the file-based splits (by name: ``train=..., val=...``) once and keep them
    in memory; one line says what was cached, a warning names a split that did not fit (read from its files)."""
    start, held, count = time.perf_counter(), 0, 0
    for name, split in splits.items():
        if split is None:
            continue
        if not hasattr(split, "cache_images"):
            print(f"cache=ram: {type(split).__name__} is not read from image files; nothing to cache", flush=True)
            continue
        try:
            held += split.cache_images()
        except MemoryError as err:
            print(f"warning: {err}; the {name} images are read from their files instead", file=sys.stderr, flush=True)
            continue
        count += len(split)  # type: ignore[arg-type]
    if count:
        print(f"cache=ram: {count} images decoded in {time.perf_counter() - start:.1f} s, {held / 2**20:.0f} MiB held")


@register_task
class DetectionTask(Task):
    """Object detection / instance segmentation with COCO metrics (see the module docstring)."""

    name: ClassVar[str] = "detection"
    infer_keys: ClassVar[dict[str, Any]] = DETECTION_KEYS
    infer = staticmethod(infer_detection)
    main_metric: ClassVar[str] = "map"
    maximize: ClassVar[bool] = True
    defaults: ClassVar[dict[str, Any]] = {
        "imgsz": 640,
        "batch": 8,
        "augment": {"name": "detection_train"},
        "close_mosaic": 0,
        "cache": "none",
        "masks": "auto",
        "synthetic": dict(SYNTHETIC_KEYS),
        "val_samples": 8,
        "sample_conf": 0.3,
        "coco_summary": False,
        "teacher": "",
        "distill": dict(DISTILL_KEYS),
    }
    schema: ClassVar[dict[str, Any]] = {
        "close_mosaic": integer(0),
        "cache": one_of("none", "ram"),
        "masks": auto_or_flag(),
        "val_samples": integer(0),
        "sample_conf": number(0.0, 1.0),
        "synthetic.train": integer(1),
        "synthetic.val": integer(0),
        "synthetic.size": integer(16),
        "synthetic.max_objects": integer(1),
    }

    def __init__(self, args: dict[str, Any]) -> None:
        super().__init__(args)
        self.classes: list[str] = []
        self.label_to_cat_id: dict[int, int] = {}
        self.val_set: Dataset | None = None
        self.coco_gt: Any = None
        self.model: nn.Module | None = None
        self._gpu_aug: nn.Module | None = None
        self._gpu_aug_closed: nn.Module | None = None
        self._epoch = 0
        self._mosaic_off = False
        self.distiller: Any = None

    # ------------------------------------------------------------------------------------------------------ data
    @property
    def offset(self) -> int:
        """1 when the model reserves label 0 for the background, else 0."""
        return label_offset(str(self.args["model"])) if self.args.get("model") else 0

    def _wants_masks(self) -> bool:
        masks = self.args.get("masks", "auto")
        if masks == "auto":
            from vision.registry import resolve_entry

            return "segmentation" in resolve_entry(str(self.args["model"])).tags if self.args.get("model") else False
        return bool(masks)

    def _augment(self) -> tuple[str, dict[str, Any]]:
        aug = dict(self.args.get("augment") or {})
        name = str(aug.pop("name", "detection_train"))
        if name not in ("detection_train", "gpu", "none"):
            raise ArgumentError(f"augment.name={name} is not allowed: it must be detection_train, gpu or none")
        for key in _NORMALISED_IN_MODEL:
            if key in aug:
                raise ArgumentError(
                    f"augment.{key} is not allowed for detection: detectors take images in [0, 1] and "
                    "normalise them inside the model"
                )
        if name == "gpu":
            import inspect

            from vision.data import GpuAugment

            accepted = list(inspect.signature(GpuAugment).parameters)
        else:
            from vision.data.transforms import transform_arguments

            accepted = transform_arguments("detection_train") if name == "detection_train" else []
        check_section("augment", aug, ["name", *accepted], reserved=("size",))
        from vision.data.knobs import check_knobs

        return name, check_knobs(aug, prefix="augment.", recipe=name)

    def build_datasets(self) -> tuple[Dataset, Dataset | None]:
        from vision.data import CocoDetection, build_transform

        name, aug = self._augment()
        size = int(self.args["imgsz"])
        if name == "detection_train":
            train_t = build_transform("detection_train", size=size, **aug)
        else:  # the batch augmenter gets images already shrunk to imgsz in the loader workers (uint8, OpenCV)
            train_t = build_transform("detection_shrink", size=size) if name == "gpu" else None
        masks = self._wants_masks()
        data = self.args.get("data") or "synthetic"
        offered = {"transform": train_t, "masks": masks}
        options = dict(self.args.get("synthetic") or {}) if data == "synthetic" else {}
        train = registered_split(data, "detection", "train", offered, options) if isinstance(data, str) else None
        if train is not None:
            val = registered_split(data, "detection", "val", {**offered, "transform": None}, options)
        else:
            spec = load_data_spec(data)
            train = CocoDetection(*spec["train"], masks=masks, transform=train_t)
            val = CocoDetection(*spec["val"], masks=masks) if "val" in spec else None
        if val is not None and len(val) == 0:  # type: ignore[arg-type]
            val = None
        if val is None:
            self.say_no_validation(f"data={data if isinstance(data, str) else 'mapping'} has no val split")
        if val is not None and val.classes != train.classes:
            raise ValueError(f"val classes {val.classes} differ from train classes {train.classes}")
        self.classes = list(train.classes)
        self.label_to_cat_id = dict(
            getattr(val or train, "label_to_cat_id", {i: i + 1 for i in range(len(self.classes))})
        )
        self.val_set = val
        if self.args.get("cache", "none") == "ram":
            _cache_in_ram(train=train, val=val)
        if name == "gpu":
            from vision.data import GpuAugment

            self._gpu_aug = GpuAugment(size=size, **aug)
            self._gpu_aug_closed = GpuAugment(size=size, **{**aug, "mosaic": 0.0}) if aug.get("mosaic") else None
        return train, val

    def collate_fn(self) -> Any:
        from vision.data import detection_collate

        return detection_collate

    # ------------------------------------------------------------------------------------------------------ model
    def build_model(self) -> nn.Module:
        import vision

        if not self.classes:
            raise RuntimeError("build_datasets() must run before build_model()")
        weights: Any = self.args.get("weights") or None
        num_classes = len(self.classes) + self.offset
        model = vision.create_model(
            str(self.args["model"]), weights=weights, num_classes=num_classes, **dict(self.args["model_kwargs"])
        )
        self.require_methods(
            model,
            {"loss": "(images, targets) -> dict of losses", "predict": "(images) -> detections per image"},
            "; or use your network as a backbone under one of the zoo's heads (model=yolo model_kwargs.backbone=NAME)",
        )
        model.categories = list(self.classes)
        self.model = model
        if self.args.get("teacher"):  # loaded before training starts: a bad teacher fails early
            from vision.tasks.detection.distill import YoloDistiller

            self.distiller = YoloDistiller.from_args(self.args)
            self.distiller.attach(model)
            check_teacher_classes(self.distiller.teacher, self.classes)
        refuse_distill_without_teacher(self.args)
        return model

    def _generator(self, device: torch.device, targets: Sequence[Mapping[str, Any]]) -> torch.Generator:
        ids = [int(t.get("image_id", -1)) for t in targets]
        gen = torch.Generator(device=device)
        gen.manual_seed(_seed_of(self.args.get("seed", 0), self._epoch, ids))
        return gen

    def train_collate_fn(self, device: torch.device, workers: int) -> Any:
        """Training on the CPU with workers and ``augment.name=gpu``: the batch augmenter runs in the loader workers
        (:class:`_AugmentInWorkers`), beside the training step; elsewhere :meth:`collate_fn`."""
        if self._gpu_aug is None or device.type != "cpu" or workers <= 0:
            return self.collate_fn()
        return _AugmentInWorkers(self)

    def _augment_batch(self, images: Any, targets: list[dict[str, Any]], device: torch.device) -> tuple[Any, Any]:
        aug = self._gpu_aug_closed if self._mosaic_off and self._gpu_aug_closed is not None else self._gpu_aug
        assert aug is not None
        aug = aug.to(device)
        uint8 = images.dtype == torch.uint8 if isinstance(images, Tensor) else images[0].dtype == torch.uint8
        if not uint8:
            raise ValueError("augment.name=gpu expects uint8 images from the data set (no CPU transform)")
        # a model whose loss takes padded targets gets them as the augmenter makes them (padded once, no unpad)
        output = "padded" if getattr(self.model, "accepts_padded_targets", False) else "list"
        return aug(images, targets, generator=self._generator(device, targets), output=output)

    def prepare_batch(self, batch: Any, device: torch.device, *, train: bool) -> Any:
        """``(images, targets)`` on ``device``: images float in [0, 1] (GPU-augmented when ``augment.name=gpu``),
        targets with data-set labels (the model's label offset is applied in :meth:`compute_loss`)."""
        if isinstance(batch, AugmentedBatch):  # augmented in a loader worker already
            return batch.images.to(device), move_to(batch.targets, device)
        images, targets = batch
        if isinstance(images, Tensor):
            images = images.to(device, non_blocking=True)
        else:
            images = [i.to(device, non_blocking=True) for i in images]
        targets = [move_to(t, device) for t in targets]
        if train and self._gpu_aug is not None:
            return self._augment_batch(images, targets, device)
        if isinstance(images, Tensor) and images.dtype == torch.uint8:
            return images.float().div_(255.0), targets
        if isinstance(images, list):
            return as_image_list(images), targets
        return images, targets

    def compute_loss(self, model: nn.Module, batch: Any) -> dict[str, Tensor]:
        images, targets = batch
        inner = getattr(model, "module", model)
        if isinstance(targets, Mapping):  # padded by the GPU augmenter: straight to the loss
            offset = label_offset(inner)
            padded = {k: targets[k] for k in ("boxes", "labels", "valid")}
            if offset:
                padded["labels"] = padded["labels"] + offset
            if self.distiller is not None:
                return self.distiller.loss(inner, images, padded)
            return model.loss(images, padded)
        if not getattr(inner, "has_masks", False):
            targets = [{k: v for k, v in t.items() if k != "masks"} for t in targets]
        if self.distiller is not None:
            return self.distiller.loss(inner, images, to_model_targets(targets, label_offset(inner)))
        return model.loss(images, to_model_targets(targets, label_offset(inner)))

    def cut_batch(self, batch: Any, parts: int) -> list[Any] | None:
        """``(images, targets)`` cut into ``parts`` consecutive slices (tensor or list images; padded or per-image
        targets); ``None`` while distilling (the teacher's features are caught by hooks on the one model)."""
        return None if self.distiller is not None else cut_tensors(batch, parts)

    def on_epoch_start(self, epoch: int, model: nn.Module) -> None:
        self._epoch = int(epoch)
        close = int(self.args.get("close_mosaic") or 0)
        self._mosaic_off = close > 0 and epoch >= int(self.args["epochs"]) - close

    # ------------------------------------------------------------------------------------------------------ eval
    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader, device: torch.device, *, autocast: Any) -> dict[str, Any]:
        from vision.tasks.detection.coco_eval import COCOEvaluator, coco_from_dataset

        model.eval()
        if self.coco_gt is None:
            self.coco_gt = coco_from_dataset(self.val_set if self.val_set is not None else loader.dataset)
        offset = label_offset(model)
        masks = bool(getattr(getattr(model, "module", model), "has_masks", False))
        evaluator = COCOEvaluator(
            self.coco_gt, iou_types=("bbox", "segm") if masks else ("bbox",), label_to_cat_id=self.label_to_cat_id
        )
        samples: list[tuple[Tensor, dict[str, Tensor]]] = []
        want = int(self.args.get("val_samples", 8) or 0)
        for batch in loader:
            images, targets = self.prepare_batch(batch, device, train=False)
            with autocast():
                dets = model.predict(images) if hasattr(model, "predict") else model(images)
            dets = to_dataset_detections(dets, offset)
            evaluator.update(dets, [int(t["image_id"]) for t in targets])
            if len(samples) < want:
                imgs = as_image_list(images)
                for img, det in zip(imgs, dets):
                    if len(samples) >= want:
                        break
                    small = filter_detections(det, score_threshold=float(self.args.get("sample_conf", 0.3)))
                    samples.append(((img * 255).round().clamp(0, 255).to(torch.uint8).cpu(),
                                    {k: v.detach().cpu() for k, v in small.items()}))  # fmt: skip
        metrics = evaluator.evaluate()
        metrics["_summary"] = evaluator.summary()  # COCOeval's own printout: to coco_eval.txt (on_epoch_end)
        if self.args.get("coco_summary", False) and _is_main():
            print(metrics["_summary"], flush=True)
        metrics["_results"] = evaluator.results
        metrics["_samples"] = samples
        return metrics

    def scalar_metrics(self, metrics: Mapping[str, Any]) -> dict[str, float]:
        from vision.tasks.detection.coco_eval import STAT_NAMES

        keys = [*STAT_NAMES, *(f"mask_{k}" for k in STAT_NAMES)]
        return {k: float(metrics[k]) for k in keys if k in metrics}

    # ------------------------------------------------------------------------------------------------------ outputs
    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"classes": self.classes, "label_offset": self.offset, "imgsz": int(self.args["imgsz"])}
        if self.label_to_cat_id:  # the data's COCO category id of each label (inference writes them)
            meta["category_ids"] = [int(self.label_to_cat_id[i]) for i in range(len(self.classes))]
        if self.args.get("teacher"):
            meta["teacher"] = str(self.args["teacher"])
        rebuild = getattr(self.model, "rebuild_kwargs", None)
        if rebuild:  # rebuilds the architecture without downloading backbone weights again
            meta["model_kwargs"] = dict(rebuild)
        return meta

    def on_epoch_end(self, run_dir: Path, epoch: int, metrics: Mapping[str, Any], model: nn.Module) -> None:
        from vision.utils.files import save_json

        if metrics.get("_summary"):
            text = f"COCOeval summary, epoch {epoch} ({metrics.get('num_images', '?')} images)\n{metrics['_summary']}"
            (Path(run_dir) / "coco_eval.txt").write_text(text, encoding="utf-8")
        results = metrics.get("_results")
        if results:
            for iou_type, items in results.items():
                save_json(Path(run_dir) / f"predictions_{iou_type}.json", items)
        if not self.args.get("plots", True):
            return
        if "precision" in metrics:
            plot_pr_curves(metrics["precision"], metrics["recall_thresholds"], self.classes, run_dir / "pr_curve.png")
        samples = metrics.get("_samples") or []
        if samples:
            from vision.viz import draw_boxes, make_grid, save_image

            tiles = [
                draw_boxes(img, d["boxes"], d["labels"], d["scores"],
                           masks=(d["masks"][:, 0] > 0.5) if "masks" in d else None, class_names=self.classes)
                for img, d in samples
            ]  # fmt: skip
            save_image(make_grid(tiles), run_dir / "val_predictions.png")

    def inference_hint(self, run_dir: Path) -> str:
        weights = self.trained_weights(run_dir)
        return f"python tools/infer.py weights={weights} source=<images, folder, glob or video> conf=0.25"
