"""Faster R-CNN and Mask R-CNN on any backbone (torchvision's RPN and RoI heads over our FPN), torchvision's four
fixed-name COCO models, and the fast batched post-processing path."""

from vision.models.detection.rcnn.model import FasterRCNN, MaskRCNN

__all__ = ["FasterRCNN", "MaskRCNN"]
