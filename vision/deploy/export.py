"""Export a model to ONNX: the graph (see :mod:`vision.deploy._graphs`) plus what a deployer needs in the file's
``metadata_props``: ``task``, ``names`` (JSON list of data-set class names), ``kind`` (``classifier`` / ``yolo`` /
``ssd`` / ``rcnn``), ``imgsz``, ``batch``, ``preprocess`` (JSON: ``mode`` ``letterbox`` / ``resize`` / ``crop`` /
``none``, ``mean``, ``std``, ``fill``, ``resize_size``, ``interpolation``; ``normalized_in_graph``), ``outputs``,
``model``, ``version`` (vision-zoo), ``int8``.

The TorchScript-based exporter is used (``dynamo=False``): the detector graphs contain data-dependent shapes
(NonMaxSuppression) that it traces reliably. It writes opsets 17 to :func:`max_opset` (20 with the torch versions
this package supports); a higher ``opset`` is refused before anything is traced.

A classifier exported at ``imgsz=S`` other than its card's input size keeps the card's crop ratio, as timm does:
``input_size = [S, S]`` and ``resize_size = floor(S * resize / input)`` (``floor(S / crop_pct)``); a card without a
crop resizes straight to ``S``. An R-CNN graph resizes each image inside itself, so its height and width axes are
always dynamic (any image size), whatever ``dynamic`` says; an R-CNN on a backbone whose position embeddings follow
the input size (timm ViTs) needs ``opset >= 18`` (antialiased ``Resize``), and is refused below.

While tracing, the model is adapted where the exporter cannot write what it computes (uneven adaptive average pools,
timm's run-time position-embedding resampling; :mod:`vision.deploy._traceable`) and the exporter's own output is
discarded: a failure is one ``ValueError`` line. The model is left as it was found.

R-CNN files also carry the box head's ``score_threshold``, ``iou_threshold`` and ``max_det`` (what their graph
applies), as YOLO and SSD files do.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vision.deploy._graphs import ClassifierGraph, RCNNGraph, SSDGraph, YOLOGraph
from vision.deploy._traceable import traceable

__all__ = ["DETECTION_OUTPUTS", "export_onnx", "max_opset", "model_kind"]

#: output names of the YOLO / SSD graphs
DETECTION_OUTPUTS = ("boxes", "scores", "labels", "num_dets")

#: the lowest opset written (the graphs need opset 17's operators)
MIN_OPSET = 17


def max_opset() -> int:
    """The highest opset the installed torch's TorchScript ONNX exporter writes (20 when torch does not say)."""
    try:
        from torch.onnx import _constants
    except ImportError:  # pragma: no cover - a torch without the module
        return 20
    return int(getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 20))


def model_kind(model: nn.Module) -> str:
    """``"classifier"``, ``"yolo"``, ``"ssd"`` or ``"rcnn"``; ``ValueError`` for a model that cannot be exported."""
    from vision.models.detection.rcnn.model import _RCNNMixin
    from vision.models.detection.ssd import SSD
    from vision.models.detection.yolo import YOLO

    if isinstance(model, YOLO):
        return "yolo"
    if isinstance(model, SSD):
        return "ssd"
    if isinstance(model, _RCNNMixin):
        return "rcnn"
    if getattr(model, "task", "classification") == "classification" and hasattr(model, "num_classes"):
        return "classifier"
    raise ValueError(f"cannot export {type(model).__name__} (task {getattr(model, 'task', None)!r}): ONNX export "
                     "supports classifiers, YOLO, SSD, Faster and Mask R-CNN")  # fmt: skip


def _names(model: nn.Module) -> list[str]:
    names = getattr(model, "categories", None)
    if names:
        return [str(n) for n in names]
    offset = int(bool(getattr(model, "background_class", False)))
    return [str(i) for i in range(int(model.num_classes) - offset)]


def _preprocess(model: nn.Module, kind: str, imgsz: int) -> dict[str, Any]:
    if kind == "classifier":
        card = getattr(model, "card", None)
        from vision.hub.cards import Preprocess

        pre = card.preprocess if card is not None else Preprocess()
        # the card's crop ratio at the exported size (timm: floor(S / crop_pct)), in integers: no float rounding
        resize = imgsz * int(pre.resize_size) // min(pre.input_size) if pre.crop else imgsz
        return {"mode": "crop" if pre.crop else "resize", "input_size": [imgsz, imgsz], "resize_size": resize,
                "interpolation": pre.interpolation, "mean": list(pre.mean), "std": list(pre.std),
                "normalized_in_graph": False}  # fmt: skip
    if kind == "yolo":
        mean = model.mean.flatten().tolist() if model.normalize else [0.0, 0.0, 0.0]
        std = model.std.flatten().tolist() if model.normalize else [1.0, 1.0, 1.0]
        return {"mode": "letterbox", "input_size": [imgsz, imgsz], "fill": 114, "stride": model.size_divisibility,
                "mean": mean, "std": std, "normalized_in_graph": True}  # fmt: skip
    t = model.transform
    if kind == "ssd":
        return {"mode": "resize", "input_size": [imgsz, imgsz], "interpolation": "bilinear",
                "mean": list(t.image_mean), "std": list(t.image_std), "normalized_in_graph": True}  # fmt: skip
    return {"mode": "none", "min_size": list(t.min_size), "max_size": t.max_size, "mean": list(t.image_mean),
            "std": list(t.image_std), "normalized_in_graph": True}  # fmt: skip


def default_imgsz(model: nn.Module) -> int:
    """The export input size a model is meant for (YOLO ``imgsz``, SSD size, classifier crop, R-CNN ``max_size``)."""
    kind = model_kind(model)
    if kind == "yolo":
        return int(model.imgsz)
    if kind == "ssd":
        return int(model.transform.fixed_size[0])
    if kind == "rcnn":
        return int(model.transform.max_size)
    card = getattr(model, "card", None)
    return int(card.preprocess.input_size[0]) if card is not None else 224


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    imgsz: int | None = None,
    batch: int = 1,
    dynamic: bool = False,
    opset: int = 17,
    score_threshold: float | None = None,
    iou_threshold: float | None = None,
    max_det: int | None = None,
) -> Path:
    """Write ``model`` (eval mode, CPU, float32) as an ONNX file with decoding and NMS inside.

    Args:
        model: a classifier, YOLO, SSD or Faster / Mask R-CNN (``vision.load_model``'s result).
        path: the ``.onnx`` file to write.
        imgsz: square input side ``S`` (YOLO, SSD, classifier; rounded up to YOLO's stride); default the model's.
            Ignored for R-CNN, which resizes inside the graph.
        batch: the batch size of the example input (fixed unless ``dynamic``; R-CNN graphs take one image).
        dynamic: a dynamic batch axis. No effect on R-CNN, whose graph takes one image of any height and width.
        opset: ONNX opset, 17 to :func:`max_opset` (``ValueError`` otherwise, before anything is traced).
        score_threshold, iou_threshold, max_det: detector post-processing (default: the model's own).

    Returns:
        The written path. Metadata as in the module docstring.

    Raises:
        ValueError: a model that is not exportable, an ``opset`` out of range or too low for the model, or a
            failure of the exporter (one line: the model, the opset and the exporter's reason).
    """
    import onnx

    import vision

    top = max_opset()
    if not MIN_OPSET <= opset <= top:
        raise ValueError(f"opset must be in [{MIN_OPSET}, {top}] (the TorchScript ONNX exporter of torch "
                         f"{torch.__version__}), got {opset}")  # fmt: skip
    model = model.cpu().float().eval()
    kind = model_kind(model)
    S = int(imgsz or default_imgsz(model))
    if kind == "yolo":
        stride = model.size_divisibility
        S = -(-S // stride) * stride
    graph, inputs, outputs, axes = _graph(model, kind, S, batch, score_threshold, iou_threshold, max_det)
    graph.eval()  # torch.onnx.export restores the wrapper's mode afterwards: a wrapper in train mode would leave the
    # model in train mode (batch norms then update their statistics on the next call)
    name = "image" if kind == "rcnn" else "images"
    if kind == "rcnn":  # the graph resizes each image itself: a fixed example size would refuse every other size
        axes = {"image": {1: "height", 2: "width"}}
    elif dynamic:
        axes = {n: {0: "batch"} for n in (name, *outputs)}
    buf = io.BytesIO()
    title = str(getattr(model, "name", "") or type(model).__name__)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about data-dependent shapes are expected here
        with traceable(graph, inputs, dynamic_size=kind == "rcnn", opset=opset, name=title):
            torch.onnx.export(graph, (inputs,), buf, input_names=[name],
                              output_names=list(outputs), dynamic_axes=axes or None, opset_version=opset,
                              do_constant_folding=True, dynamo=False)  # fmt: skip
    proto = onnx.load_from_string(buf.getvalue())
    meta = {
        "task": "classification" if kind == "classifier" else "detection",
        "kind": kind,
        "names": json.dumps(_names(model)),
        "imgsz": str(S),
        "batch": "1" if kind == "rcnn" else "dynamic" if dynamic else str(batch),
        "preprocess": json.dumps(_preprocess(model, kind, S)),
        "outputs": ",".join(outputs),
        "model": str(getattr(model, "name", type(model).__name__)),
        "version": vision.__version__,
        "int8": "false",
    }
    if kind in ("yolo", "ssd"):
        meta |= {"score_threshold": str(graph.thr), "iou_threshold": str(graph.iou), "max_det": str(graph.max_det)}
    elif kind == "rcnn":  # the box head's, which the graph runs
        heads = model.roi_heads
        meta |= {"score_threshold": str(float(heads.score_thresh)), "iou_threshold": str(float(heads.nms_thresh)),
                 "max_det": str(int(heads.detections_per_img))}  # fmt: skip
    ids = getattr(model, "category_ids", None)
    if kind != "classifier" and ids and len(ids) == len(_names(model)):  # the training data's COCO category ids
        meta["category_ids"] = json.dumps([int(i) for i in ids])
    set_metadata(proto, meta)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, out)
    return out


def set_metadata(proto: Any, meta: dict[str, str]) -> None:
    """Replace the ``metadata_props`` of an ``onnx.ModelProto`` by ``meta``."""
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def _graph(
    model: nn.Module, kind: str, S: int, batch: int, thr: float | None, iou: float | None, max_det: int | None
) -> tuple[nn.Module, torch.Tensor, tuple[str, ...], dict[str, dict[int, str]]]:
    if kind == "classifier":
        return ClassifierGraph(model), torch.rand(batch, 3, S, S), ("logits",), {}
    if kind == "rcnn":
        outs = ("boxes", "scores", "labels", "masks") if model.has_masks else ("boxes", "scores", "labels")
        return RCNNGraph(model), torch.rand(3, S, S), outs, {}
    if kind == "yolo":
        post = (model.score_threshold, model.iou_threshold, model.max_det)
        cls: Any = YOLOGraph
    else:
        post = (model.score_thresh, model.nms_thresh, model.detections_per_img)
        cls = SSDGraph
    graph = cls(
        model,
        size=S,
        score_threshold=post[0] if thr is None else thr,
        iou_threshold=post[1] if iou is None else iou,
        max_det=post[2] if max_det is None else max_det,
    )
    return graph, torch.rand(batch, 3, S, S), DETECTION_OUTPUTS, {}
