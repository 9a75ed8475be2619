"""Check an exported file against the PyTorch model on real images, with onnxruntime.

- classifier: per image the same top-5 labels (in order), and logits within ``1e-4 + 1e-5 * max|logit|`` of the
  reference (absolute, plus a relative part for float32 rounding: logits of magnitude ~300 differ by ~1e-4 between
  two correct fp32 implementations). The summary reports the two criteria separately;
- detector: per image each PyTorch detection matched by its own ONNX detection of the same label at IoU >= 0.99,
  scores within ``1e-3``, and no ONNX detection left over. Two exceptions, for every kind of detector, counted and
  printed as near ties:

  - of NMS: two overlapping boxes of the same class whose scores differ by less than float32 noise (``1e-5``) may
    come out of NMS in either order, so the survivor may be the other box; such a pair matches when the two boxes
    overlap at more than NMS's own IoU threshold;
  - at the cut-off: each side's list ends at a cut-off score, its last kept score when it holds ``max_det``
    detections, else the score threshold. A detection within the score tolerance (``1e-3``) of the other side's
    cut-off may be missing there: float32 differences reorder near-equal scores (an untrained or briefly trained
    model has hundreds around one value), so another box falls in or out at the cut. Every detection clearly above
    the cut-off must still match; the counts may differ only by such near ties.

  Zero detections on both sides of every image compare nothing: the result says so (``compared`` False, still
  ``ok``) rather than claim that boxes matched.

The PyTorch reference is the same computation on the same input as the file's:

- YOLO: the model's own network, decoding and NMS (:meth:`YOLO.detect`, i.e. :func:`vision.ops.multiclass_nms`)
  on the very tensor the file is given: the letterboxed ``S x S`` canvas of :meth:`OnnxModel.prepare` (the whole
  square, padded with grey 114), boxes mapped back to each image the same way. This is not ``YOLO.predict``, which
  pads a batch only to the smallest canvas of multiples of the stride: on non-square images the file's detections,
  and a validation mAP, differ slightly from ``YOLO.predict``'s (see :mod:`vision.deploy.runtime`). The check
  verifies that the graph computes what the PyTorch model computes on the same input, not that difference of
  canvas;
- SSD: ``model.predict`` with the model's resize set to the file's ``S x S`` for the call (a file exported with
  ``imgsz`` other than the model's own size is compared at its own size);
- R-CNN: torchvision's exact path (``predict(fast=False)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torchvision.ops import box_iou

from vision.deploy.runtime import OnnxModel

__all__ = ["CheckResult", "check_export", "logit_tolerance", "match_detections", "reference_predict"]


def logit_tolerance(ref: Tensor) -> float:
    """The largest ``|logit difference|`` accepted for one image's reference logits: ``1e-4 + 1e-5 * max|ref|``."""
    return 1e-4 + 1e-5 * float(ref.abs().max())


@dataclass
class CheckResult:
    """Outcome of :func:`check_export`: ``ok``, one line per image in ``lines``, and the worst differences."""

    ok: bool
    lines: list[str] = field(default_factory=list)
    max_diff: float = 0.0
    min_iou: float = 1.0
    #: False when there was nothing to compare (a detector with 0 detections on both sides of every image)
    compared: bool = True

    def summary(self) -> str:
        """One line: ``onnxruntime check: PASS ...``, ``FAIL ...`` or ``nothing compared ...``."""
        verdict = "FAIL" if not self.ok else "PASS" if self.compared else "nothing compared"
        n = sum(line.startswith("image ") for line in self.lines)
        return f"onnxruntime check: {verdict} on {n} images ({self.lines[-1] if self.lines else 'no images'})"


def _cut_off(scores: Tensor, score_threshold: float | None, max_det: int | None) -> float | None:
    """Where a list of detection ``scores`` [N] was cut: its last kept score when it holds ``max_det``, else the
    ``score_threshold``; ``None`` when neither is known."""
    if max_det is not None and len(scores) >= max_det > 0:
        return float(scores.min())
    return score_threshold


def match_detections(ref: dict[str, Tensor], got: dict[str, Tensor], *, iou: float = 0.99, score_tol: float = 1e-3,
                     tie_tol: float = 1e-5, nms_iou: float = 0.5, score_threshold: float | None = None,
                     max_det: int | None = None) -> tuple[bool, float, float, str]:  # fmt: skip
    """Match detections ``got`` to the reference ``ref`` (both ``{"boxes" [N, 4], "scores" [N], "labels" [N]}``).

    Every reference detection needs its own detection of the same label at IoU >= ``iou`` with a score within
    ``score_tol``, or a near tie of NMS: a detection of the same label with a score within ``tie_tol`` at IoU >
    ``nms_iou`` (the NMS threshold: either box may survive). ``score_threshold`` and ``max_det`` (the post-processing
    both sides ran) place each side's cut-off (:func:`_cut_off`): a detection whose score is within ``score_tol`` of
    the other side's cut-off may be missing there (a near tie at the cut); every other detection of either side must
    be matched. Without them every detection must be matched and the counts must be equal.

    Returns ``(ok, min IoU of the matches, max score difference, message)``; the message counts the near ties.

    Example:
        >>> ok, min_iou, max_diff, msg = match_detections(ref, got, score_threshold=0.25, max_det=300)
    """
    n, m = len(ref["scores"]), len(got["scores"])
    cut_ref = _cut_off(ref["scores"], score_threshold, max_det)
    cut_got = _cut_off(got["scores"], score_threshold, max_det)
    if n != m and (cut_ref is None or cut_got is None):
        return False, 0.0, float("inf"), f"{n} detections in PyTorch, {m} in ONNX"
    if n == 0 and m == 0:
        return True, 1.0, 0.0, "0 detections in both"
    ious = box_iou(ref["boxes"].float(), got["boxes"].float()).reshape(n, m)
    ious[ref["labels"][:, None] != got["labels"][None, :]] = -1
    used = torch.zeros(m, dtype=torch.bool)
    worst_iou, worst_score, ties, cut_ties, missing = 1.0, 0.0, 0, [0, 0], 0
    for i in ref["scores"].argsort(descending=True, stable=True).tolist():  # the clearly kept ones first
        row = ious[i].clone()
        row[used] = -1
        diff = (got["scores"] - ref["scores"][i]).abs()
        cand = ((row >= iou) & (diff <= score_tol)).nonzero().flatten()
        tie = ((row > nms_iou) & (diff <= tie_tol)).nonzero().flatten()
        if len(cand):
            j = int(cand[row[cand].argmax()])
            worst_iou = min(worst_iou, float(row[j]))
        elif len(tie):
            j, ties = int(tie[row[tie].argmax()]), ties + 1
        elif cut_got is not None and float(ref["scores"][i]) <= cut_got + score_tol:
            cut_ties[0] += 1  # at ONNX's cut-off: it may have fallen out there
            continue
        else:  # no match: the nearest free box of its label says how far off it is
            missing += 1
            if m:
                j = int(row.argmax())
                worst_iou, worst_score = min(worst_iou, float(row[j])), max(worst_score, float(diff[j]))
            else:
                worst_iou = min(worst_iou, 0.0)
            continue
        worst_score = max(worst_score, float(diff[j]))
        used[j] = True
    left = got["scores"][~used]
    near = left <= cut_ref + score_tol if cut_ref is not None else torch.zeros_like(left, dtype=torch.bool)
    cut_ties[1], extra = int(near.sum()), int((~near).sum())
    ok = worst_iou >= iou and worst_score <= score_tol and missing == 0 and extra == 0
    msg = f"{n} detections" if n == m else f"{n} detections in PyTorch, {m} in ONNX"
    msg += f", min IoU {worst_iou:.4f}, max score diff {worst_score:.2e}"
    if ties:
        msg += f", {ties} near tie(s) of NMS"
    if any(cut_ties):
        cut = min(c for c in (cut_ref, cut_got) if c is not None)
        msg += (f", {max(cut_ties)} near tie(s) at the cut-off score {cut:.4f} (within {score_tol:g}): "
                f"{cut_ties[0]} detection(s) only in PyTorch, {cut_ties[1]} only in ONNX")  # fmt: skip
    if missing:
        msg += f", {missing} PyTorch detection(s) above the cut-off unmatched"
    if extra:
        msg += f", {extra} ONNX detection(s) above the cut-off not in PyTorch"
    return ok, worst_iou, worst_score, msg


def _post_processing(model: nn.Module, onnx_model: OnnxModel) -> tuple[float | None, float, int | None]:
    """``(score threshold, NMS IoU threshold, max detections)`` both sides ran: the file's metadata (YOLO, SSD), else
    the R-CNN box head's own (its graph runs the same); ``(None, 0.5, None)`` when neither says."""
    meta = onnx_model.metadata
    if "max_det" in meta:
        return float(meta["score_threshold"]), float(meta.get("iou_threshold", 0.5)), int(meta["max_det"])
    heads = getattr(model, "roi_heads", None)
    if heads is not None and hasattr(heads, "detections_per_img"):
        return float(heads.score_thresh), float(heads.nms_thresh), int(heads.detections_per_img)
    return None, float(meta.get("iou_threshold", 0.5)), None


@torch.no_grad()
def reference_predict(model: nn.Module, onnx_model: OnnxModel, images: Sequence[Tensor]) -> list[dict[str, Tensor]]:
    """The PyTorch model's detections that the file must reproduce (module docstring), labels in data-set space."""
    from vision.ops.letterbox import unletterbox

    if onnx_model.kind == "yolo":
        x, info = onnx_model.prepare(images)
        b, s, lab, cnt = model.detect(x, score_threshold=float(onnx_model.metadata["score_threshold"]),
                                      iou_threshold=float(onnx_model.metadata["iou_threshold"]),
                                      max_det=int(onnx_model.metadata["max_det"]), amp=False)  # fmt: skip
        sizes = torch.tensor([[im.shape[-2], im.shape[-1]] for im in images], dtype=torch.float32)
        b = unletterbox(b, torch.tensor(info), sizes)
        return [{"boxes": b[i, :n], "scores": s[i, :n], "labels": lab[i, :n]} for i, n in enumerate(cnt.tolist())]
    if onnx_model.kind == "ssd":
        meta, transform = onnx_model.metadata, model.transform
        saved = transform.fixed_size
        transform.fixed_size = (onnx_model.imgsz, onnx_model.imgsz)  # SSDGraph's size: resize, default boxes, clip
        try:
            dets = model.predict(list(images), score_threshold=float(meta["score_threshold"]),
                                 iou_threshold=float(meta["iou_threshold"]), max_det=int(meta["max_det"]))  # fmt: skip
        finally:
            transform.fixed_size = saved
    else:
        dets = [model.predict([im], fast=False)[0] for im in images]
    return [{**d, "labels": d["labels"] - 1} for d in dets]


@torch.no_grad()
def check_export(model: nn.Module, onnx_model: OnnxModel, images: Sequence[Tensor]) -> CheckResult:
    """Compare ``onnx_model`` with ``model`` on ``images`` (float ``[3, H, W]`` in [0, 1], real photos).

    Returns a :class:`CheckResult` with one line per image (criteria in the module docstring).
    """
    model = model.cpu().float().eval()
    result = CheckResult(ok=True)
    if onnx_model.kind == "classifier":
        transform = onnx_model.eval_transforms()
        x = torch.stack([transform(im) for im in images])
        ref, got = model(x).float(), onnx_model(x).float()
        k = min(5, ref.shape[-1])
        all_same = all_close = True
        for i in range(len(images)):
            diff = float((ref[i] - got[i]).abs().max())
            tol = logit_tolerance(ref[i])
            same = torch.equal(ref[i].topk(k).indices, got[i].topk(k).indices)
            all_same, all_close = all_same and same, all_close and diff <= tol
            result.ok &= same and diff <= tol
            result.max_diff = max(result.max_diff, diff)
            result.lines.append(f"image {i}: top-{k} {'same' if same else 'DIFFERENT'}, max |logit diff| {diff:.2e} "
                                f"(tolerance {tol:.1e}){'' if same and diff <= tol else '  <- FAIL'}")  # fmt: skip
        result.lines.append(f"max |logit diff| {result.max_diff:.2e}, logits within 1e-4 + 1e-5 * max|logit| on "
                            f"every image: {all_close}, top-{k} identical on every image: {all_same}")  # fmt: skip
        return result
    thr, nms_iou, max_det = _post_processing(model, onnx_model)
    refs = reference_predict(model, onnx_model, images)
    gots = onnx_model.predict(list(images))
    for i, (r, g) in enumerate(zip(refs, gots)):
        ok, worst_iou, worst_score, msg = match_detections(r, g, nms_iou=nms_iou, score_threshold=thr,
                                                           max_det=max_det)  # fmt: skip
        result.ok &= ok
        result.min_iou = min(result.min_iou, worst_iou)
        result.max_diff = max(result.max_diff, worst_score)
        result.lines.append(f"image {i}: {msg}{'' if ok else '  <- FAIL'}")
    total, total_got = sum(len(r["scores"]) for r in refs), sum(len(g["scores"]) for g in gots)
    if total == 0 and total_got == 0:
        result.compared = False
        at = f"conf={thr:g}" if onnx_model.kind != "rcnn" else f"the model's box_score_thresh={thr:g}"
        hint = "lower conf= to compare" if onnx_model.kind != "rcnn" else "lower it to compare"
        result.lines.append(f"0 detections on both sides at {at if thr is not None else 'its score threshold'}: "
                            f"boxes not compared; {hint}")  # fmt: skip
        return result
    result.lines.append(f"{total} detections, min IoU {result.min_iou:.4f} (>= 0.99), max score diff "
                        f"{result.max_diff:.2e} (<= 1e-3), every detection above the cut-off matched: "
                        f"{result.ok}")  # fmt: skip
    return result
