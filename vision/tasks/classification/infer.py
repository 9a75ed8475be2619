"""``tools/infer.py`` for classifiers: the top-k classes of each image, printed and written to ``predictions.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vision._loader import load_model
from vision.tasks._explain import EXPLAIN_KEYS, check_explain, write_explanation
from vision.utils import increment_dir, pick_device

__all__ = ["CLASSIFICATION_KEYS", "infer_classification"]

CLASSIFICATION_KEYS: dict[str, Any] = {"topk": 5, **EXPLAIN_KEYS}


def infer_classification(args: dict[str, Any]) -> Path:
    """Top-k classes for each image (:meth:`model.predict` on the files -> ``Results``); prints them and writes
    ``predictions.json`` (``Results.to_dict`` of each image); with ``explain=``, also a heat map
    ``<stem>_<method>.png`` per image (:mod:`vision.tasks._explain`)."""
    from vision.io import expand_source, read_image

    device = pick_device(args["device"])
    model = args.get("_model") or load_model(args["weights"] or None, model=args["model"] or None, device=device)
    files = expand_source(args["source"])
    args = {**args, "explain": check_explain(model, args, detector=False)}  # before anything is printed or written
    out_dir = increment_dir(Path(args["project"]) / "classification", args["name"])
    records = []
    batch = max(1, int(args["batch"]))
    for start in range(0, len(files), batch):
        for result in model.predict([str(f) for f in files[start : start + batch]], topk=int(args["topk"])):
            records.append(result.to_dict())
            shown = ", ".join(f"{n} ({i}) {p:.3f}" for i, n, p in result.topk)
            print(f"{result.path}: {shown}")
            if args.get("explain"):
                path = Path(result.path)
                image = read_image(path)
                x = model.eval_transforms()(image)[None].to(device)
                write_explanation(model, image, out_dir / f"{path.stem}_{args['explain']}.png", args, model_input=x)
    (out_dir / "predictions.json").write_text(json.dumps(records, indent=2), encoding="utf-8")
    return out_dir
