"""Explanation maps for ``tools/infer.py ... explain=gradcam|eigencam``: heat maps written beside the results.

The maps come from pytorch-grad-cam (https://github.com/jacobgil/pytorch-grad-cam): Grad-CAM
(https://arxiv.org/abs/1610.02391) weighs the target layer's activations by the gradient of a class score; EigenCAM
(https://arxiv.org/abs/2008.00299) takes their first principal component and needs no gradient. The target layer is
the module producing the backbone's declared last level (``stages[-1]``; the last convolution of a model without
declared stages).

- Classifiers: the class is ``explain_class=`` (an index or a name) or the predicted one; the map covers the
  centre crop the model saw and is placed where that crop lies in the original image.
- YOLO detectors: one map per image; the class score explained is the highest class logit over all anchors (Grad-CAM:
  of ``explain_class`` or of the best class; EigenCAM: class-free). The image is resized to the model's square
  ``imgsz`` for the map.

:func:`check_explain` checks both keys before the task writes anything: ``explain=`` must name a method, the model
must be one the maps cover, the source must hold no video (maps are written for images only), and
``explain_class=`` needs ``explain=gradcam`` (EigenCAM is class-free) and must name one of the model's classes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "EXPLAIN_KEYS",
    "check_explain",
    "class_index",
    "explain_map",
    "overlay",
    "target_layer",
    "write_explanation",
]

#: ``tools/infer.py`` keys of the classification and detection tasks
EXPLAIN_KEYS: dict[str, Any] = {"explain": "", "explain_class": None}
METHODS = ("gradcam", "eigencam")


def _is_yolo(model: nn.Module) -> bool:
    return all(hasattr(model, a) for a in ("forward_raw", "backbone", "neck", "head"))


def target_layer(model: nn.Module) -> nn.Module:
    """The module producing the backbone's declared last level (``stages[-1]``'s last module), else the model's last
    ``Conv2d``."""
    body = model.backbone if _is_yolo(model) else model
    stages = getattr(body, "stages", None)
    if stages:
        return body.get_submodule(stages[-1].modules[-1])
    convs = [m for m in body.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no declared stages and no convolution to explain")
    return convs[-1]


class _YoloScores(nn.Module):
    """A YOLO as a 'classifier' for the CAM library: ``[B, 3, H, W] -> [B, K]`` highest class logit over anchors."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model.forward_raw(x)[1].amax(1)


def class_index(value: Any, names: list[str] | None, num_classes: int) -> int | None:
    """``explain_class=`` (``None``, an index or a class name) -> a class index; ``ValueError`` naming the value."""
    if value is None or value == "":
        return None
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        index = int(text)
        if not 0 <= index < num_classes:
            raise ValueError(f"explain_class={index} is outside [0, {num_classes})")
        return index
    if names and text in names:
        return list(names).index(text)
    known = f" ({', '.join(names[:20])}{', ...' if len(names) > 20 else ''})" if names else ""
    raise ValueError(
        f"explain_class={text!r} is neither a class index in [0, {num_classes}) nor one of the model's class "
        f"names{known}"
    )


def _unset(value: Any) -> bool:
    return value is None or value is False or (isinstance(value, str) and not value.strip())


def check_explain(
    model: nn.Module, args: Mapping[str, Any], *, detector: bool, videos: Sequence[str | Path] = ()
) -> str:
    """Check ``explain=`` and ``explain_class=`` for ``model`` before anything is written; return the method
    (``"gradcam"``, ``"eigencam"``, or ``""`` when ``explain=`` is unset).

    Args:
        model: the loaded model (its class names bound ``explain_class=``).
        args: the inference keys.
        detector: the model runs under the detection task (maps cover YOLO detectors only).
        videos: the video files of the source: ``explain=`` is refused for them (maps are written for images).

    Raises:
        ArgumentError: one line naming the key at fault and what it allows.
        RuntimeError: ``explain=`` without pytorch-grad-cam installed.

    Example:
        >>> method = check_explain(model, {"explain": "gradcam", "explain_class": "cat"}, detector=False)
    """
    import importlib.util

    from vision.utils.keys import ArgumentError

    chosen = args.get("explain_class")
    if _unset(args.get("explain")):
        if not _unset(chosen):
            raise ArgumentError(
                f"explain_class={chosen} needs explain=gradcam: it picks the class the heat map explains"
            )
        return ""
    method = str(args["explain"]).strip().lower()
    if method not in METHODS:
        raise ArgumentError(f"explain={args['explain']} is not allowed: explain must be one of {', '.join(METHODS)}")
    if videos:
        raise ArgumentError(
            f"explain={method} does not apply to videos ({Path(videos[0]).name}): heat maps are written for images "
            "only; leave explain= out, or pass images"
        )
    if detector and not _is_yolo(model):
        name = getattr(model, "name", "") or type(model).__name__
        raise ArgumentError(f"explain={method} does not apply to {name}: detector maps cover YOLO models only")
    try:
        target_layer(model)
    except ValueError as err:
        raise ArgumentError(f"explain={method}: {err}") from None
    if not _unset(chosen):
        if method == "eigencam":
            raise ArgumentError(
                f"explain_class={chosen} does not apply to explain=eigencam: EigenCAM maps the activations' first "
                "principal component, which no class changes; use explain=gradcam to explain a class"
            )
        names = getattr(model, "categories", None)
        try:
            class_index(chosen, names, int(getattr(model, "num_classes", 0) or (len(names) if names else 0)))
        except ValueError as err:
            raise ArgumentError(str(err)) from None
    if importlib.util.find_spec("pytorch_grad_cam") is None:
        raise RuntimeError("explain= needs pytorch-grad-cam: pip install 'vision-zoo[compress]'")
    return method


def explain_map(model: nn.Module, x: Tensor, *, method: str = "gradcam", target_class: int | None = None) -> np.ndarray:
    """Heat maps of ``model`` for the batch ``x``.

    Args:
        model: a classifier (``x`` normalised ``[B, 3, H, W]``) or a YOLO (``x`` in [0, 1], sides multiples of 32).
        x: the model input.
        method: ``gradcam`` or ``eigencam``.
        target_class: the class explained (default: the top-scoring class of each image).

    Returns:
        float32 ``[B, H, W]`` in [0, 1], at the input's resolution.
    """
    try:
        from pytorch_grad_cam import EigenCAM, GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError:
        raise RuntimeError("explain= needs pytorch-grad-cam: pip install 'vision-zoo[compress]'") from None
    if method not in METHODS:
        raise ValueError(f"explain={method!r} is not one of {', '.join(METHODS)}")
    was_training = model.training
    model.eval()
    wrapped = _YoloScores(model) if _is_yolo(model) else model
    cam_class = GradCAM if method == "gradcam" else EigenCAM
    targets = [ClassifierOutputTarget(int(target_class))] * x.shape[0] if target_class is not None else None
    try:
        with torch.enable_grad(), cam_class(model=wrapped, target_layers=[target_layer(model)]) as cam:
            maps = cam(input_tensor=x, targets=targets)
    finally:
        model.train(was_training)
    return np.asarray(maps, dtype=np.float32)


def overlay(image: Tensor, heat: np.ndarray, *, box: tuple[int, int, int, int] | None = None) -> Tensor:
    """The heat map ``heat [h, w]`` in [0, 1] drawn (JET colours, 50 %) over ``image`` uint8 ``[3, H, W]``, resized
    into ``box`` (``x0, y0, x1, y1`` pixels; default: the whole image). Returns uint8 ``[3, H, W]``."""
    import cv2
    from pytorch_grad_cam.utils.image import show_cam_on_image

    H, W = int(image.shape[1]), int(image.shape[2])
    x0, y0, x1, y1 = box or (0, 0, W, H)
    canvas = np.zeros((H, W), np.float32)
    canvas[y0:y1, x0:x1] = cv2.resize(heat.astype(np.float32), (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    rgb = image.permute(1, 2, 0).cpu().numpy().astype(np.float32) / 255.0
    drawn = show_cam_on_image(rgb, canvas, use_rgb=True, image_weight=0.5)
    return torch.from_numpy(drawn).permute(2, 0, 1).contiguous()


def _crop_box(height: int, width: int, preprocess: Any) -> tuple[int, int, int, int]:
    """Where a classifier's centre crop lies in the original image (``x0, y0, x1, y1``)."""
    if preprocess is None or not preprocess.crop:
        return 0, 0, width, height
    scale = preprocess.resize_size / min(height, width)
    ch, cw = preprocess.input_size
    x0 = max(0.0, (width * scale - cw) / 2) / scale
    y0 = max(0.0, (height * scale - ch) / 2) / scale
    return round(x0), round(y0), round(min(width, x0 + cw / scale)), round(min(height, y0 + ch / scale))


def write_explanation(
    model: nn.Module, image: Tensor, path: Path, args: dict[str, Any], *, model_input: Tensor | None = None
) -> Path:
    """Write the ``explain=`` heat map of ``image`` (uint8 ``[3, H, W]``) as an overlay to ``path`` and return it.

    ``model_input`` is the classifier's prepared input ``[1, 3, h, w]`` (YOLO: made here from ``image``).
    """
    from vision.io import write_image

    device = next(model.parameters()).device
    names = getattr(model, "categories", None)
    num = int(getattr(model, "num_classes", 0) or (len(names) if names else 0))
    target = class_index(args.get("explain_class"), names, num)
    if _is_yolo(model):
        import torch.nn.functional as F

        size = -(-int(model.imgsz) // model.size_divisibility) * model.size_divisibility
        x = F.interpolate(image[None].float().div(255.0), size=(size, size), mode="bilinear", align_corners=False)
        heat = explain_map(model, x.to(device), method=str(args["explain"]), target_class=target)[0]
        drawn = overlay(image, heat)
    else:
        if model_input is None:
            raise ValueError(
                f"explain=: {type(model).__name__} is not a YOLO detector; maps cover classifiers and YOLO"
            )
        heat = explain_map(model, model_input.to(device), method=str(args["explain"]), target_class=target)[0]
        card = getattr(model, "card", None)
        drawn = overlay(image, heat, box=_crop_box(image.shape[1], image.shape[2], card.preprocess if card else None))
    write_image(path, drawn)
    return path
