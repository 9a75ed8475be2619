"""Detection ops: NMS (Triton kernel on CUDA, exact vectorised path elsewhere)."""

from vision.ops.nms import batched_nms, multiclass_nms, nms

__all__ = ["batched_nms", "multiclass_nms", "nms"]
