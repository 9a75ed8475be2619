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
from torch import nn

__all__ = [
    "atomic_torch_save",
    "capture_rng",
    "find_resume_state",
    "load_resume_state",
    "load_run_model",
    "read_safetensors_metadata",
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


def read_safetensors_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON-decoded metadata of a safetensors file written by :func:`save_weights`."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        raw = f.metadata() or {}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


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


def load_run_model(run: str | os.PathLike[str], *, weights: str | None = None, model: str | None = None) -> nn.Module:
    """Rebuild the model of a training run and load its weights.

    Args:
        run: the run folder (holding ``args.yaml`` and ``weights/``).
        weights: a weights file inside the run (default ``weights/best.safetensors``, else ``last``).
        model: override the architecture name (default: the one in ``args.yaml``).
    """
    import yaml

    import vision
    from vision.hub.download import load_state_dict_file

    run = Path(run)
    args = yaml.safe_load((run / "args.yaml").read_text(encoding="utf-8")) or {}
    path = Path(weights) if weights and Path(weights).is_file() else None
    if path is None:
        for name in ("best.safetensors", "last.safetensors"):
            if (run / "weights" / name).is_file():
                path = run / "weights" / name
                break
    if path is None:
        raise FileNotFoundError(f"no weights in {run / 'weights'} (best.safetensors or last.safetensors)")
    meta = read_safetensors_metadata(path) if path.suffix == ".safetensors" else {}
    name = model or meta.get("model") or args.get("model")
    kwargs = dict(meta.get("model_kwargs") or args.get("model_kwargs") or {})
    classes = meta.get("classes")
    if classes:
        kwargs["num_classes"] = len(classes)
    net = vision.create_model(name, **kwargs)
    state = load_state_dict_file(path)
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"{path} does not fit {name}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    if classes and hasattr(net, "categories"):
        net.categories = list(classes)
    if hasattr(net, "card") and meta.get("preprocess"):
        from vision.hub.cards import Preprocess, WeightsCard

        pre = meta["preprocess"]
        net.card = WeightsCard(
            url="",
            sha256=None,
            num_params=sum(p.numel() for p in net.parameters()),
            num_classes=len(classes) if classes else None,
            categories=tuple(classes) if classes else None,
            preprocess=Preprocess(
                input_size=tuple(pre["input_size"]),
                resize_size=int(pre["resize_size"]),
                interpolation=pre.get("interpolation", "bilinear"),
                mean=tuple(pre["mean"]),
                std=tuple(pre["std"]),
                crop=bool(pre.get("crop", True)),
            ),
            source=str(run),
        )
    return net
