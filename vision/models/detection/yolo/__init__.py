"""YOLO: anchor-free decoupled head over a PAN-FPN on any backbone; model, head, task-aligned assigner, losses,
box decoding and input/output plumbing (letterbox, CUDA-graph replay), one module each."""

from vision.models.detection.yolo.model import YOLO

__all__ = ["YOLO"]
