"""Deployment: export to ONNX with decoding and NMS inside, run exported files, check them, quantise them.

- :func:`export_onnx` writes the file (graphs in :mod:`vision.deploy._graphs`, metadata in
  :mod:`vision.deploy.export`);
- :func:`load_onnx` returns an :class:`OnnxModel` that behaves like the PyTorch model for inference and evaluation;
- :func:`check_export` compares a file with the PyTorch model on real images;
- :func:`quantize_int8` writes a statically quantised (QDQ) copy calibrated on real images.
"""

from vision.deploy.check import CheckResult, check_export
from vision.deploy.export import export_onnx
from vision.deploy.quantize import quantize_int8
from vision.deploy.runtime import OnnxModel, load_onnx

__all__ = ["CheckResult", "OnnxModel", "check_export", "export_onnx", "load_onnx", "quantize_int8"]
