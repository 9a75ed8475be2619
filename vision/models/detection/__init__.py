"""Detectors: YOLO, Faster/Mask R-CNN and SSD on any registry backbone, with the shared input/output contract of
:mod:`vision.models.detection.common` (images in ``[0, 1]``, absolute ``xyxy`` boxes, :class:`Detections`)."""

from vision.models.detection.common import Detections

__all__ = ["Detections"]
