"""Checkpoints: written atomically, resumed exactly, loaded for inference.

A run folder holds ``weights/``:

- ``last.safetensors`` / ``best.safetensors``: the weights to use (the EMA weights when EMA is on), with metadata
  (model name, epoch, class names) in the safetensors header;
- ``last.state.pt``: everything an exact resume needs (raw model and EMA weights, optimiser, scheduler,
  grad-scaler, RNG states, epoch, batch position, best metric), self-contained, so a crash between writing the two
  files can never pair a resume state with weights of another step.

Every file is written to ``<name>.tmp`` and renamed into place, so a killed run never leaves a half-written file.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "atomic_torch_save",
    "capture_rng",
    "find_resume_state",
    "load_resume_state",
    "restore_rng",
    "save_weights",
]


def _replace(tmp: Path, final: Path) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` to ``path.tmp``, fsync, rename."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    torch.save(obj, tmp)
    _replace(tmp, p)
    return p


def save_weights(path: str | os.PathLike[str], state: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]) -> Path:
    """Write a state dict as safetensors atomically; ``metadata`` values are stored as JSON strings."""
    from safetensors.torch import save_file

    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, value in state.items():
        t = value.detach().cpu().contiguous()
        ptr = t.untyped_storage().data_ptr() if t.numel() else -1
        if ptr in seen:  # safetensors refuses shared storage; tied weights are stored twice
            t = t.clone()
        elif ptr != -1:
            seen.add(ptr)
        tensors[key] = t
    save_file(tensors, str(tmp), metadata={k: json.dumps(v) for k, v in metadata.items()})
    _replace(tmp, p)
    return p


def capture_rng() -> dict[str, Any]:
    """All random states that affect training: Python, NumPy, torch CPU and CUDA."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": [*random.getstate()[1], random.getstate()[0], random.getstate()[2]],
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    py = list(state["python"])
    version, gauss = py[-2], py[-1]
    random.setstate((int(version), tuple(int(x) for x in py[:-2]), gauss))
    np_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np_state["keys"].numpy().astype(np.uint32),
            int(np_state["pos"]),
            int(np_state["has_gauss"]),
            float(np_state["cached"]),
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def find_resume_state(target: str | os.PathLike[str]) -> Path:
    """The ``last.state.pt`` of a run folder, or the given state file itself.

    Raises:
        FileNotFoundError: naming what was looked for.
    """
    p = Path(target)
    candidates = [p] if p.is_file() else [p / "weights" / "last.state.pt", p / "last.state.pt"]
    if p.is_file() and p.suffix == ".safetensors":
        candidates = [p.with_name(p.name.replace(".safetensors", ".state.pt"))]
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(f"resume={target}: no resume state found (looked for {', '.join(map(str, candidates))})")


def load_resume_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a ``*.state.pt`` file safely (``weights_only=True``)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"resume state {path} could not be read (corrupt or not a vision-zoo state): {err}") from err
