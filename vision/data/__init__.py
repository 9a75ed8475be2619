"""Datasets, CPU augmentation recipes and the batched GPU augmentation pipeline.

Every dataset returns ``uint8`` images (``[3, H, W]`` RGB tensors) unless a transform says otherwise, reports bad
samples once (:class:`BadSampleWarning`, ``dataset.report()``, ``dataset.bad_samples``) and never crashes on one.
Detection datasets return ``(image, target)`` with ``target = {"boxes": float32 [N, 4] xyxy pixels, "labels": int64
[N], "image_id": int}`` plus ``"masks": uint8 [N, H, W]`` when asked for. Datasets register in
:data:`vision.registry.DATASETS` (``image_folder``, ``digits``, ``coco_detection``, ``voc_detection``,
``synthetic_shapes``, ``bccd``).

Example:
    >>> from vision.data import Digits, SyntheticShapes, GpuAugment, build_transform, detection_collate
    >>> ds = Digits("train", size=32, transform=build_transform("classification_train", size=32))
    >>> det = SyntheticShapes(1000, size=256)
    >>> loader = torch.utils.data.DataLoader(det, batch_size=32, collate_fn=detection_collate, num_workers=4)
    >>> images, targets = next(iter(loader))  # uint8 [32, 3, 256, 256]; [{"boxes", "labels", "masks", "image_id"}]
    >>> device = "cuda" if torch.cuda.is_available() else "cpu"
    >>> targets = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]
    >>> x, targets = GpuAugment(size=320, mosaic=0.5).to(device)(images.to(device), targets)
    >>> x.shape, x.dtype  # normalised
    (torch.Size([32, 3, 320, 320]), torch.float32)
"""

from vision.data._bad import REASONS, BadSample, BadSampleWarning, DataError, DataSummaryWarning
from vision.data.classification import Digits, ImageFolder
from vision.data.coco import CocoDetection, bccd, find_bccd
from vision.data.collate import AspectRatioBatchSampler, detection_collate, instance_map, pad_targets
from vision.data.gpu_augment import AugParams, GpuAugment
from vision.data.synthetic import SHAPES, SyntheticShapes
from vision.data.transforms import (
    BOX_FIELDS,
    ClassificationTransform,
    DetectionTransform,
    build_transform,
    list_transforms,
    masks_to_boxes,
)
from vision.data.voc import VOC_CLASSES, VOCDetection

__all__ = [
    "BOX_FIELDS",
    "REASONS",
    "SHAPES",
    "VOC_CLASSES",
    "AspectRatioBatchSampler",
    "AugParams",
    "BadSample",
    "BadSampleWarning",
    "ClassificationTransform",
    "CocoDetection",
    "DataError",
    "DataSummaryWarning",
    "DetectionTransform",
    "Digits",
    "GpuAugment",
    "ImageFolder",
    "SyntheticShapes",
    "VOCDetection",
    "bccd",
    "build_transform",
    "detection_collate",
    "find_bccd",
    "instance_map",
    "list_transforms",
    "masks_to_boxes",
    "pad_targets",
]
