"""Save a PNG grid of augmented detection samples with their boxes (and masks) drawn.

Usage::

    python tools/augment_grid.py data=synthetic out=grid.png n=16
    python tools/augment_grid.py data=bccd pipeline=gpu mosaic=0.5 degrees=10 out=runs/bccd_grid.png
    python tools/augment_grid.py data=bccd pipeline=cpu size=512 seed=3

Keys (``key=value``; an unknown key fails with a suggestion):
    data       synthetic | bccd                                       (synthetic)
    split      train | val (bccd)                                     (train)
    root       BCCD folder (default: found like vision.data.find_bccd) ()
    pipeline   gpu (GpuAugment) | cpu (detection_train recipe) | none (gpu)
    out        output PNG path                                        (augment_grid.png)
    n          number of samples                                      (16)
    nrow       tiles per row                                          (ceil(sqrt(n)))
    size       output side in pixels                                  (416)
    masks      draw masks (synthetic data only)                       (true)
    seed       seed of the data and of the augmentation               (0)
    mosaic     mosaic probability (gpu)                               (0.5)
    degrees    rotation range (gpu and cpu)                           (10)
    scale      zoom range "lo,hi"                                     (0.5,1.5)
    device     device of the gpu pipeline                             (cuda if available, else cpu)

A bad key or value (or missing data) prints one ``error:`` line and exits with status 2, as the other tools do.
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path
from typing import Any

import torch

from vision.cli.common import USER_ERRORS, command_line, user_message
from vision.utils.keys import ArgumentError

DEFAULTS: dict[str, Any] = {
    "data": "synthetic",
    "split": "train",
    "root": "",
    "pipeline": "gpu",
    "out": "augment_grid.png",
    "n": 16,
    "nrow": 0,
    "size": 416,
    "masks": True,
    "seed": 0,
    "mosaic": 0.5,
    "degrees": 10.0,
    "scale": (0.5, 1.5),
    "device": "",
}


class UsageError(SystemExit):
    """Exit status 2 after the ``error:`` line (as :func:`vision.cli.common.fail`); ``str()`` is the message, for
    callers of :func:`main`."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


def _value(key: str, text: str) -> Any:
    """``text`` typed like ``DEFAULTS[key]``; a value of the wrong type raises :class:`ArgumentError` naming the key."""
    default = DEFAULTS[key]
    try:
        if isinstance(default, bool):
            return text.lower() in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
        if isinstance(default, tuple):
            return tuple(float(v) for v in text.split(","))
    except ValueError:
        kind = {int: "an integer", float: "a number", tuple: '"lo,hi" numbers'}[type(default)]
        raise ArgumentError(f"{key}={text} is not allowed: {key} must be {kind}") from None
    return text


def parse_args(argv: list[str]) -> dict[str, Any]:
    """``["key=value", ...]`` -> options, typed like :data:`DEFAULTS`.

    Raises:
        ArgumentError: an unknown key (with a suggestion), a value of the wrong type, or a ``data``/``pipeline`` the
            tool does not know; the message names the key.
    """
    opts = dict(DEFAULTS)
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep:
            raise ArgumentError(f"expected key=value, got {arg!r}")
        if key not in DEFAULTS:
            close = difflib.get_close_matches(key, list(DEFAULTS), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ArgumentError(f"unknown key {key!r}.{hint} Valid keys: {', '.join(DEFAULTS)}")
        opts[key] = _value(key, value)
    if opts["data"] not in ("synthetic", "bccd"):
        raise ArgumentError(f"data={opts['data']} is not allowed: data must be synthetic or bccd")
    if opts["pipeline"] not in ("gpu", "cpu", "none"):
        raise ArgumentError(f"pipeline={opts['pipeline']} is not allowed: pipeline must be gpu, cpu or none")
    return opts


def main(argv: list[str] | None = None) -> Path | None:
    """Build the grid and write it; returns the PNG path (``None`` after printing the help).

    Raises:
        UsageError: a bad key or value, or data that cannot be read, after printing one ``error:`` line (exit 2).
    """
    args = command_line(argv, __doc__)
    if args is None:
        return None
    try:
        return _grid(parse_args(args))
    except (*USER_ERRORS, OSError) as err:
        message = user_message(err)
        print(f"error: {message}", file=sys.stderr)
        raise UsageError(message) from None


def _grid(o: dict[str, Any]) -> Path:
    from vision.data import GpuAugment, SyntheticShapes, bccd, build_transform, detection_collate
    from vision.viz import denormalize, draw_boxes, make_grid, save_image

    n, size = o["n"], o["size"]
    transform = None
    if o["pipeline"] == "cpu":
        transform = build_transform(
            "detection_train", size=size, degrees=o["degrees"], scale=o["scale"], seed=o["seed"]
        )
    if o["data"] == "synthetic":
        ds = SyntheticShapes(n, size=size, seed=o["seed"], masks=o["masks"], transform=transform)
    else:
        ds = bccd(split=o["split"], root=o["root"] or None, transform=transform)
    samples = [ds[i % len(ds)] for i in range(n)]
    if o["pipeline"] == "gpu":
        device = o["device"] or ("cuda" if torch.cuda.is_available() else "cpu")
        aug = GpuAugment(size=size, mosaic=o["mosaic"], degrees=o["degrees"], scale=o["scale"]).to(device)
        images, targets = detection_collate(samples)
        images = images.to(device) if isinstance(images, torch.Tensor) else [i.to(device) for i in images]
        targets = [{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in t.items()} for t in targets]
        gen = torch.Generator(device=device).manual_seed(o["seed"])
        out, targets = aug(images, targets, generator=gen)
        samples = [(denormalize(out[i]).cpu(), targets[i]) for i in range(len(targets))]
    tiles = [
        draw_boxes(img, t["boxes"], t["labels"], masks=t.get("masks"), class_names=ds.classes) for img, t in samples
    ]
    path = save_image(make_grid(tiles, nrow=o["nrow"] or None), o["out"])
    print(f"wrote {path} ({n} samples, data={o['data']}, pipeline={o['pipeline']})")
    return path


if __name__ == "__main__":
    main()
