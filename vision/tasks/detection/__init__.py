"""Detection: training hooks, data specs (synthetic, BCCD, COCO YAML), inference on images and videos, COCOeval
evaluation, PR curves and sample plots."""

from vision.tasks.detection.task import DetectionTask

__all__ = ["DetectionTask"]
