"""Detection ops: NMS (Triton kernel on CUDA, exact vectorised path elsewhere), paired IoU/CIoU, batched mask paste."""

from vision.ops.iou import paired_ciou, paired_iou
from vision.ops.letterbox import letterbox_info, unletterbox
from vision.ops.masks import paste_masks
from vision.ops.nms import batched_nms, multiclass_nms, nms
from vision.ops.targets import pad_targets

__all__ = [
    "batched_nms",
    "letterbox_info",
    "multiclass_nms",
    "nms",
    "pad_targets",
    "paired_ciou",
    "paired_iou",
    "paste_masks",
    "unletterbox",
]
