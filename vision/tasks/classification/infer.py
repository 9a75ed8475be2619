"""``tools/infer.py`` for classifiers: the top-k classes of each image, printed and written to ``predictions.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from vision._loader import load_model
from vision.utils import increment_dir, pick_device

__all__ = ["CLASSIFICATION_KEYS", "infer_classification"]

CLASSIFICATION_KEYS: dict[str, Any] = {"topk": 5}


def infer_classification(args: dict[str, Any]) -> Path:
    """Top-k classes for each image; prints them and writes ``predictions.json``."""
    from vision.io import expand_source, read_image

    device = pick_device(args["device"])
    model = args.get("_model") or load_model(args["weights"] or None, model=args["model"] or None, device=device)
    files = expand_source(args["source"])
    transform = model.eval_transforms()
    out_dir = increment_dir(Path(args["project"]) / "classification", args["name"])
    results = []
    batch = max(1, int(args["batch"]))
    for start in range(0, len(files), batch):
        chunk = files[start : start + batch]
        x = torch.stack([transform(read_image(f)) for f in chunk]).to(device)
        for path, top in zip(chunk, model.predict(x, topk=int(args["topk"]))):
            results.append(
                {"file": str(path), "top": [{"label": i, "name": n, "prob": round(p, 6)} for i, n, p in top]}
            )
            shown = ", ".join(f"{n} ({i}) {p:.3f}" for i, n, p in top)
            print(f"{path}: {shown}")
    (out_dir / "predictions.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    return out_dir
