"""``tools/infer.py`` for generators: sample images to PNG files, a grid and ``samples.json``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from vision._loader import load_model

__all__ = ["GENERATION_KEYS", "infer_generation", "rank_world"]


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


def infer_generation(args: dict[str, Any]) -> Path:
    """Sample ``n`` images; write ``grid.png``, ``images/<index>_c<label>.png`` and ``samples.json``.

    ``labels``: unset = class-balanced for conditional models (``0..K-1`` repeated), ``random``, a class index, or a
    list; ``steps``, ``guidance_scale`` (1.0 = off), ``sampler`` (``ddim``/``ddpm``) and ``eta`` apply to diffusion
    models; ``batch`` is the number of images per network call.
    """
    from vision.io import write_image
    from vision.utils import increment_dir, pick_device
    from vision.viz import make_grid, save_image

    device = pick_device(args["device"])
    model = load_model(args["weights"] or None, model=args["model"] or None, device=device)
    if not hasattr(model, "sample"):
        raise ValueError(f"{type(model).__name__} cannot sample images (no .sample method)")
    conditional = int(getattr(model, "num_classes", 0)) > 0
    labels = args["labels"]
    if isinstance(labels, str) and labels.lower() in ("random", "none", "null"):
        labels = None
    elif labels is None and conditional:
        labels = "balanced"
    options = {k: args[k] for k in ("steps", "guidance_scale", "sampler", "eta") if args[k] is not None}
    n = int(args["n"])
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
        suffix = f"_c{label}" if label is not None else ""
        path = write_image(out_dir / "images" / f"{i:05d}{suffix}.png", image)
        name = names[label] if (label is not None and label < len(names)) else (str(label) if label is not None else "")
        records.append({"file": str(path.relative_to(out_dir)), "label": label, "class": name})
        print(f"{path}: " + (f"class {name} ({label})" if label is not None else "unconditional"))
    summary = {
        "model": args["model"] or getattr(model, "name", ""),
        "weights": args["weights"],
        "n": n,
        "seed": int(args["seed"]),
        **options,
        "seconds": round(elapsed, 3),
        "images": records,
    }
    (out_dir / "samples.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print(f"sampled {n} images in {elapsed:.2f}s ({n / max(elapsed, 1e-9):.1f} images/s) on {device}")
    return out_dir
