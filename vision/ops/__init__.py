"""Detection ops: NMS (Triton kernel on CUDA, exact vectorised path elsewhere), paired IoU/CIoU, batched mask paste."""

from vision.ops.iou import paired_ciou, paired_iou
from vision.ops.masks import paste_masks
from vision.ops.nms import batched_nms, multiclass_nms, nms

__all__ = ["batched_nms", "multiclass_nms", "nms", "paired_ciou", "paired_iou", "paste_masks"]
