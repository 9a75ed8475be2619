"""Choosing the device a run or an inference uses."""

from __future__ import annotations

import torch

__all__ = ["pick_device"]


def pick_device(spec: str | None) -> torch.device:
    """``"auto"``/``""`` -> CUDA when available else CPU; otherwise ``torch.device(spec)`` checked to exist."""
    if spec in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(str(spec))
    except RuntimeError as err:
        raise ValueError(f"device={spec!r} is not a device (use auto, cpu, cuda or cuda:N)") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={spec!r} asked for CUDA but no CUDA device is available")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device={spec!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    return device
