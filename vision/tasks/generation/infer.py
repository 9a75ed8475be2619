"""``tools/infer.py`` for generators: sample images to PNG files, a grid and ``samples.json``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from torch import nn

from vision._loader import load_model
from vision.utils.keys import ArgumentError

__all__ = ["GENERATION_KEYS", "check_labels", "infer_generation", "rank_world"]


def rank_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


GENERATION_KEYS: dict[str, Any] = {
    "n": 64,
    "seed": 0,
    "labels": None,
    "steps": None,
    "guidance_scale": None,
    "sampler": None,
    "eta": None,
    "nrow": 0,
}


def check_labels(labels: Any, model: nn.Module, n: int) -> Any:
    """``labels=`` checked against ``model`` before anything is sampled or written: ``None`` (class-balanced for a
    conditional model), ``random``, ``"balanced"`` or a list of ``n`` class indices (one index is repeated ``n`` times;
    ``-1`` is the null label, i.e. an unconditional sample, for a diffusion model trained with label dropout). The
    indices are checked by :func:`~vision.models.generation.common.resolve_labels`, as the sampler will. Raises
    :class:`~vision.utils.keys.ArgumentError` naming ``labels=`` and the valid range."""
    from vision.models.generation.common import resolve_labels

    k = int(getattr(model, "num_classes", 0) or 0)
    if isinstance(labels, str) and labels.strip().lower() in ("random", "none", "null"):
        return None
    if labels is None:
        return "balanced" if k > 0 else None
    if isinstance(labels, str) and labels.strip().lower() == "balanced":
        labels = "balanced"
    elif k > 0 and isinstance(labels, str):
        labels = labels.split(",")  # "1,2,3"; each item is checked by resolve_labels
    try:
        resolve_labels(labels, n, k, None, null=getattr(model, "null_refusal", "it has no null label"))
    except ValueError as err:
        raise ArgumentError(str(err)) from None
    return labels


def infer_generation(args: dict[str, Any]) -> Path:
    """Sample ``n`` images; write ``grid.png``, ``images/<index>_c<label>.png`` and ``samples.json``.

    ``labels``: unset = class-balanced for conditional models (``0..K-1`` repeated), ``random``, a class index, or a
    list (:func:`check_labels`; ``-1``, the null label of a diffusion model trained with label dropout, makes an
    unconditional sample: ``images/<index>.png``, recorded with ``"label": null``); ``steps``, ``guidance_scale``
    (1.0 = off), ``sampler`` (``ddim``/``ddpm``) and ``eta`` apply to diffusion models, and ``samples.json`` records
    the settings that ran (the model's defaults where a key was left out); ``batch`` is the number of images per
    network call. Every key is checked before anything is sampled or written.
    """
    from vision.io import write_image
    from vision.utils import increment_dir, pick_device
    from vision.viz import make_grid, save_image

    device = pick_device(args["device"])
    model = load_model(args["weights"] or None, model=args["model"] or None, device=device)
    if not hasattr(model, "sample"):
        raise ValueError(f"{type(model).__name__} cannot sample images (no .sample method)")
    conditional = int(getattr(model, "num_classes", 0)) > 0
    n = int(args["n"])
    labels = check_labels(args["labels"], model, n)
    options = {k: args[k] for k in ("steps", "guidance_scale", "sampler", "eta") if args[k] is not None}
    settings = model.sampling_settings(**options) if hasattr(model, "sampling_settings") else options
    t0 = time.perf_counter()
    images, used = model.sample(
        n, labels=labels, seed=int(args["seed"]), batch_size=max(1, int(args["batch"])), return_labels=True, **options
    )
    elapsed = time.perf_counter() - t0
    out_dir = increment_dir(Path(args["project"]) / "generation", args["name"])
    nrow = int(args["nrow"]) or (
        model.num_classes if conditional and labels == "balanced" and n >= model.num_classes else None
    )
    save_image(make_grid(list(images), nrow=nrow), out_dir / "grid.png")
    names = list(getattr(model, "categories", None) or [])
    records = []
    for i, image in enumerate(images):
        label = int(used[i]) if used is not None else None
        if label is not None and label >= model.num_classes:  # the null label: an unconditional sample
            label = None
        suffix = f"_c{label}" if label is not None else ""
        path = write_image(out_dir / "images" / f"{i:05d}{suffix}.png", image)
        name = (names[label] if label < len(names) else str(label)) if label is not None else None
        records.append({"file": str(path.relative_to(out_dir)), "label": label, "class": name})
        print(f"{path}: " + (f"class {name} ({label})" if label is not None else "unconditional"))
    summary = {
        "model": args["model"] or getattr(model, "name", ""),
        "weights": args["weights"],
        "n": n,
        "seed": int(args["seed"]),
        **settings,
        "seconds": round(elapsed, 3),
        "images": records,
    }
    (out_dir / "samples.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print(f"sampled {n} images in {elapsed:.2f}s ({n / max(elapsed, 1e-9):.1f} images/s) on {device}")
    return out_dir
