"""``tools/infer.py`` for classifiers: the top-k classes of each image, printed and written to ``predictions.json``.

Outputs in ``<project>/classification/<name>``: ``predictions.json`` (a list, one ``Results.to_dict`` per image in
source order: ``{"file": <source path>, "top": [{"label", "name", "prob"}]}``) and, with ``explain=``, a heat map
``<stem>_<method>.png`` per image. No map overwrites another: when the name is already taken in this run (the same
stem in another folder of a glob, or beside it with another extension; names compared without case), the image's map
is ``<stem>_2_<method>.png``, ``<stem>_3_<method>.png`` ..., the first free, in source order.

Several sources (a folder or a glob): an unreadable image (:class:`vision.io.ImageReadError`) is skipped with one
``warning: <path>: <reason>; skipped`` line, the run goes on and its end counts the skipped files; when no image is
readable, it is an error. A single unreadable file is an error. A run that fails before writing anything leaves no
run folder behind.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vision._loader import load_model
from vision.tasks._explain import EXPLAIN_KEYS, check_explain, write_explanation
from vision.tasks._outputs import RunOutputs, count_skipped, read_images, run_folder
from vision.utils import pick_device

__all__ = ["CLASSIFICATION_KEYS", "infer_classification"]

CLASSIFICATION_KEYS: dict[str, Any] = {"topk": 5, **EXPLAIN_KEYS}


def infer_classification(args: dict[str, Any]) -> Path:
    """Top-k classes for each image (:meth:`model.predict` on the decoded images -> ``Results``); prints them and
    writes ``predictions.json`` and, with ``explain=``, the heat maps (module docstring; :mod:`vision.tasks._explain`).

    Returns the run folder. Raises ``OSError`` (an unreadable single file, a folder or glob without a readable image),
    ``ValueError`` (a bad ``explain=`` / ``explain_class=``)."""
    from vision.io import expand_source

    device = pick_device(args["device"])
    model = args.get("_model") or load_model(args["weights"] or None, model=args["model"] or None, device=device)
    files = expand_source(args["source"])
    args = {**args, "explain": check_explain(model, args, detector=False)}  # before anything is printed or written
    method = args.get("explain")
    names = RunOutputs("predictions.json")
    records = []
    skipped: list[Path] = []
    batch = max(1, int(args["batch"]))
    with run_folder(Path(args["project"]) / "classification", args["name"]) as out_dir:
        for start in range(0, len(files), batch):
            read = read_images(files[start : start + batch], skipped, skip=len(files) > 1, layout="hwc")
            if not read:
                continue
            for (path, _), result in zip(read, model.predict([image for _, image in read], topk=int(args["topk"]))):
                result.path = str(path)  # decoded here (unreadable files skipped), named after the source
                records.append(result.to_dict())
                shown = ", ".join(f"{n} ({i}) {p:.3f}" for i, n, p in result.topk)
                print(f"{result.path}: {shown}")
                if method:
                    base = names.claim(path.stem, f"{{}}_{method}.png")
                    x = model.eval_transforms()(result.image)[None].to(device)
                    write_explanation(model, result.image, out_dir / f"{base}_{method}.png", args, model_input=x)
        count_skipped(args["source"], skipped, len(files))
        (out_dir / "predictions.json").write_text(json.dumps(records, indent=2), encoding="utf-8")
    return out_dir
