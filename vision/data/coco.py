"""COCO-format detection and instance segmentation (pycocotools), and the BCCD blood-cell set in that format.

Sample contract (shared by every detection dataset of :mod:`vision.data`)::

    image  : uint8 [3, H, W] RGB tensor (without a transform)
    target : {"boxes": float32 [N, 4] xyxy pixels, "labels": int64 [N] in [0, num_classes),
              "image_id": int, "masks": uint8 [N, H, W] (masks=True only), "iscrowd": uint8 [N] (include_crowd only)}

With a transform, ``transform(image, target)`` receives the image as ``uint8 [H, W, 3]`` RGB numpy and the target
with numpy arrays, and returns ``(image, target)``; the target's boxes/labels/masks are then made tensors.
:func:`vision.data.build_transform` detection recipes follow this contract.

Bad samples follow the rules of :mod:`vision.data._bad` (missing/empty files dropped at construction, unreadable
images replaced at load, boxes clipped or dropped), each reported once and listed by ``report()``.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import numbers
import os
from pathlib import Path
from typing import Any

import numpy as np

from vision.data._bad import BadSampleLog, DataError
from vision.data._detection import (
    DetectionTransformFn,
    FileDetectionDataset,
    ImageRecord,
    file_problem,
    image_size,
    sanitize_boxes,
)
from vision.registry import DATASETS

__all__ = ["CocoDetection", "bccd", "find_bccd", "load_json"]


def _valid_segmentation(segm: Any, height: int, width: int) -> str | None:
    """``None`` when ``segm`` is a usable polygon list or RLE, else what is wrong with it."""
    if isinstance(segm, list):
        if not segm:
            return "empty polygon list"
        for ring in segm:
            if not isinstance(ring, list) or len(ring) < 6 or len(ring) % 2:
                return "a polygon needs an even number (>= 6) of coordinates"
        return None
    if isinstance(segm, dict):
        if "counts" not in segm or "size" not in segm:
            return "RLE without 'counts' and 'size'"
        if [int(v) for v in segm["size"]] != [height, width]:
            return f"RLE size {segm['size']} differs from the image size {[height, width]}"
        return None
    return f"unknown segmentation type {type(segm).__name__}"


def _bbox_from_segmentation(segm: Any) -> list[float] | None:
    """The COCO ``[x, y, w, h]`` around a polygon list or an RLE (pycocotools' ``toBbox``), for an annotation that
    gives its segmentation but no ``bbox`` (some export tools); ``None`` when ``segm`` is neither."""
    if isinstance(segm, list) and segm and all(isinstance(r, list) and len(r) >= 6 and len(r) % 2 == 0 for r in segm):
        if not all(_is_number(v) for ring in segm for v in ring):
            return None
        xs = [float(v) for ring in segm for v in ring[0::2]]
        ys = [float(v) for ring in segm for v in ring[1::2]]
        return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
    if isinstance(segm, dict) and "counts" in segm and "size" in segm:
        from pycocotools import mask as mask_utils

        rle = segm
        if isinstance(segm["counts"], list):  # uncompressed RLE
            rle = mask_utils.frPyObjects(segm, *[int(v) for v in segm["size"]])
        return [float(v) for v in mask_utils.toBbox(rle)]
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _bbox_problem(bbox: Any) -> tuple[str, str] | None:
    """``None`` for a usable COCO ``[x, y, w, h]``, else ``(reason, what is wrong)``."""
    if not isinstance(bbox, list | tuple) or len(bbox) != 4:
        return "bad_annotation", "is not a list of four numbers"
    if not all(_is_number(v) for v in bbox):
        return "bad_annotation", "holds a value that is not a number"
    values = [float(v) for v in bbox]
    if not all(math.isfinite(v) for v in values):
        return "box_degenerate", "holds a non-finite value"
    if values[2] <= 0 or values[3] <= 0:
        return "box_degenerate", "has a width or height <= 0"
    return None


def _size_problem(img: dict[str, Any]) -> str | None:
    """``None`` when the image record's ``width``/``height`` (absent: unknown) are whole numbers >= 0."""
    for key in ("width", "height"):
        v = img.get(key, 0)
        if not _is_number(v) or not math.isfinite(v) or v < 0 or v != int(v):
            return f"{key!r} {v!r} is not a whole number >= 0"
    return None


def _reaches_past(anns: list[dict[str, Any]], width: int | None, height: int | None) -> bool:
    """Whether the image's size is unknown or a box (checked by ``_clean``) reaches past its right/bottom edge."""
    if not width or not height:
        return True
    return any(a["bbox"][0] + a["bbox"][2] > width or a["bbox"][1] + a["bbox"][3] > height for a in anns)


def _xyxy(bbox: list[float]) -> np.ndarray:
    x, y, w, h = (float(v) for v in bbox)
    return np.array([x, y, x + w, y + h], np.float32)


def _clipped_annotation(ann: dict[str, Any], box: np.ndarray, clipped: bool) -> dict[str, Any]:
    """``ann`` as the evaluation ground truth: its bbox clipped to the image like the training box (``clipped``),
    the area of a clipped box without segmentation that of the clipped box, a missing area filled in."""
    x0, y0, x1, y1 = (float(v) for v in box)
    area = ann.get("area")
    if clipped:
        ann = {**ann, "bbox": [x0, y0, x1 - x0, y1 - y0]}
    if not _is_number(area) or (clipped and not ann.get("segmentation")):
        ann = {**ann, "area": (x1 - x0) * (y1 - y0)}
    return ann


def load_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; malformed JSON, or a folder, raises :class:`DataError` naming the path (and the line and the
    column), a missing file ``FileNotFoundError`` naming it."""
    if Path(path).is_dir():
        raise DataError(f"'{path}' is a folder, not a COCO JSON file")
    if not Path(path).exists():
        raise FileNotFoundError(f"annotation file '{path}' does not exist")
    try:
        return json.loads(Path(path).read_bytes())  # bytes: UTF-8 (with or without BOM), UTF-16 and UTF-32
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}") from err
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not valid JSON: not UTF-8 text ({err.reason} at byte {err.start})") from err


@DATASETS.register("coco_detection", tags={"detection", "segmentation"}, task="detection")
class CocoDetection(FileDetectionDataset):
    """A COCO instances file (boxes, polygons, RLE) read with pycocotools.

    Boxes go from COCO ``[x, y, w, h]`` to ``xyxy`` pixels; category ids become contiguous labels ``0..K-1`` in
    increasing id order (``cat_ids[label]`` / ``label_to_cat_id`` map back, ``classes`` has the names). Masks (polygon,
    compressed or uncompressed RLE) are decoded with pycocotools ``annToMask``.

    Crowd annotations (``iscrowd=1``) are excluded from the targets by default, as training on them would teach the
    model to fit crowd regions; ``include_crowd=True`` keeps them and adds ``target["iscrowd"]``. Evaluation uses
    :attr:`coco` (the ground truth for ``COCOeval``), where crowds are handled by pycocotools.

    The file is checked before use (see :mod:`vision.data._bad`): an image id given to two different files drops
    both images and their annotations (which cannot be told apart; the same record twice keeps one copy); an image
    record without an integer id, a file name or whole-number sizes >= 0 is reported and skipped with its
    annotations; an annotation naming an unknown image or category id, with a bbox that is not four finite numbers or
    with a width/height <= 0, or repeating an annotation id, is reported (file, annotation id, value) and skipped (one
    without ``bbox`` but with a segmentation gets the polygon's extent or the RLE's ``toBbox``). A
    box is clipped to the image, or dropped when nothing is left; when a box reaches past the annotated size (or the
    size is missing) the real size is read from the image's header, so a wrong ``width``/``height`` is reported as
    ``size_mismatch`` and the boxes are clipped to the real image. :attr:`coco` holds only what was kept: the images
    of :attr:`records` (with their real sizes), their annotations as given but with the clipped boxes, and their crowd
    annotations, so evaluation sees the same ground truth as training. Malformed JSON, an annotation path that is a
    folder, an images folder that does not exist, a category id given to two names, annotations without any category,
    or a file that leaves no image or no box at all raise :class:`~vision.data.DataError` naming the file.

    Args:
        images_dir: folder the ``file_name`` entries are relative to.
        ann_file: path of the json (or the already-loaded dict).
        masks: decode instance masks into ``target["masks"]``.
        transform: detection transform (see the module docstring).
        include_crowd: keep crowd annotations (with ``target["iscrowd"]``).
        drop_empty: drop images left without annotations (default: kept with empty targets).
        check_files: stat every image at construction so missing/empty files are dropped and reported up front (and
            read the header of an image whose size is missing or exceeded by a box); ``False`` trusts the file.
        require_boxes: raise when no usable box is left; ``False`` accepts an image-only file (e.g. test-dev info).

    Example:
        >>> ds = CocoDetection("data/coco/val2017", "data/coco/annotations/instances_val2017.json", masks=True)
        >>> image, target = ds[0]  # uint8 [3, H, W]; target["boxes"] float32 [N, 4], target["masks"] uint8 [N, H, W]
    """

    def __init__(
        self,
        images_dir: str | os.PathLike,
        ann_file: str | os.PathLike | dict[str, Any],
        *,
        masks: bool = False,
        transform: DetectionTransformFn | None = None,
        include_crowd: bool = False,
        drop_empty: bool = False,
        check_files: bool = True,
        require_boxes: bool = True,
    ) -> None:
        from pycocotools.coco import COCO

        self.images_dir = Path(images_dir)
        self.masks, self.transform, self.include_crowd = masks, transform, include_crowd
        self.drop_empty, self.num_empty = drop_empty, 0
        self.images_dropped = self.boxes_dropped = self.boxes_excluded = 0
        source = "<annotation dict>" if isinstance(ann_file, dict) else str(ann_file)
        self._log = BadSampleLog(f"CocoDetection({source})", 1)
        data = ann_file if isinstance(ann_file, dict) else load_json(ann_file)
        clean = self._clean(data, source)
        self._check_images_dir(clean["images"], source)
        cats = {c["id"]: c for c in clean["categories"]}
        self.cat_ids = sorted(cats)
        self.cat_id_to_label = {c: i for i, c in enumerate(self.cat_ids)}
        self.label_to_cat_id = dict(enumerate(self.cat_ids))
        self.classes = [str(cats[c].get("name", c)) for c in self.cat_ids]
        by_image: dict[int, list[dict[str, Any]]] = {img["id"]: [] for img in clean["images"]}
        for ann in clean["annotations"]:
            by_image[ann["image_id"]].append(ann)
        self.records = []
        gt_images, gt_anns = [], []  # the evaluation ground truth: what training keeps (see the class docstring)
        for info in sorted(clean["images"], key=lambda img: img["id"]):
            image_id, anns = info["id"], by_image[info["id"]]
            path = str(self.images_dir / info["file_name"])
            problem = file_problem(path) if check_files else None
            if problem is not None:
                self._log.add(path, problem)
                self.images_dropped += 1
                self.boxes_dropped += len(anns)
                continue
            record = self._record(path, image_id, info, anns, read_size=check_files)
            if len(record.boxes) == 0:
                self.num_empty += 1
                if drop_empty:
                    continue
            self.records.append(record)
            sizes = {"width": record.width, "height": record.height} if record.width and record.height else {}
            gt_images.append({**info, **sizes})
            gt_anns += record.extra["anns"]
            if not include_crowd:  # COCOeval ignores detections on them
                gt_anns += [_clipped_annotation(a, _xyxy(a["bbox"]), False) for a in anns if a.get("iscrowd", 0)]
        coco = COCO()
        coco.dataset = {**clean, "images": gt_images, "annotations": gt_anns}
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            coco.createIndex()
        self.coco = coco
        hint = ""
        if not clean["images"]:
            hint = "the file lists no usable image"
        elif not data.get("annotations"):
            hint = ("the file has no annotations, so there is nothing to train or score against (in Python, "
                    "require_boxes=False accepts an image-only file)")  # fmt: skip
        self._finish(source, require_boxes=require_boxes, hint=hint)

    def _check_images_dir(self, images: list[dict[str, Any]], source: str) -> None:
        """One error for an images folder that is missing (rather than one missing file per image)."""
        if self.images_dir.is_dir() or all(Path(img["file_name"]).is_absolute() for img in images):
            return
        what = "is a file, not a folder" if self.images_dir.exists() else "does not exist"
        raise DataError(f"images folder '{self.images_dir}' of {source} {what}")

    def _clean(self, data: Any, source: str) -> dict[str, Any]:
        """The usable part of a COCO dict; every record left out is reported and counted."""
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise DataError(f"{source}: not a COCO annotation file (no 'images' list at the top level)")
        for key in ("annotations", "categories"):
            if not isinstance(data.get(key, []), list):
                raise DataError(f"{source}: {key!r} is not a list")
        categories = self._without_group_category(self._categories(data, source), data.get("annotations", []))
        cat_ids = {c["id"] for c in categories}
        images, dropped_ids = self._unique_images(data["images"], source)
        files = {img["id"]: str(self.images_dir / img["file_name"]) for img in images}
        annotations, seen = [], set()
        for k, ann in enumerate(data.get("annotations", [])):
            if isinstance(ann, dict) and ann.get("bbox") is None:  # a segmentation without its box (some exporters)
                box = _bbox_from_segmentation(ann.get("segmentation"))
                ann = {**ann, "bbox": box} if box is not None else ann
            aid = ann.get("id") if isinstance(ann, dict) else None
            image_id = ann.get("image_id") if isinstance(ann, dict) else None
            known = _is_int(image_id) and image_id in files
            file = files[image_id] if known else source
            problem = None
            if not isinstance(ann, dict) or not _is_int(aid):
                problem = ("bad_annotation", f"annotations[{k}] has no integer 'id': {ann!r}")
            elif aid in seen:
                problem = ("bad_annotation", f"annotation id {aid} is used again (annotations[{k}]); repeat skipped")
            elif _is_int(image_id) and image_id in dropped_ids:
                problem = ("", "")  # counted with its duplicate image id, reported there
            elif not known:
                problem = ("bad_annotation", f"annotation {aid}: unknown image id {image_id!r}")
            elif not _is_int(ann.get("category_id")) or ann["category_id"] not in cat_ids:
                problem = ("bad_annotation", f"annotation {aid}: unknown category id {ann.get('category_id')!r}")
            elif ann.get("iscrowd", 0) not in (0, 1):
                problem = ("bad_annotation", f"annotation {aid}: iscrowd {ann.get('iscrowd')!r} is not 0 or 1")
            elif (bad := _bbox_problem(ann.get("bbox"))) is not None:
                problem = (bad[0], f"annotation {aid}: bbox {ann.get('bbox')!r} {bad[1]}")
            if problem is None:
                seen.add(aid)
                annotations.append(ann)
                continue
            self.boxes_dropped += 1
            if problem[0]:
                self._log.add(file, problem[0], problem[1])
        return {**data, "images": images, "annotations": annotations, "categories": categories}

    def _categories(self, data: dict[str, Any], source: str) -> list[dict[str, Any]]:
        """The categories with an integer id, one per id. Two names for one id, or annotations without any usable
        category, raise :class:`DataError`: the label space is unknown, so no annotation could be trusted."""
        by_id: dict[int, dict[str, Any]] = {}
        for k, cat in enumerate(data.get("categories", [])):
            if not isinstance(cat, dict) or not _is_int(cat.get("id")):
                self._log.add(source, "bad_annotation", f"categories[{k}] has no integer 'id': {cat!r}; skipped")
                continue
            first = by_id.setdefault(cat["id"], cat)
            if first is cat:
                continue
            if first.get("name") != cat.get("name"):
                raise DataError(
                    f"{source}: category id {cat['id']} is given to both {first.get('name')!r} and "
                    f"{cat.get('name')!r} (categories[{k}]); the class of its annotations is ambiguous: give each "
                    "category its own id"
                )
            detail = f"category id {cat['id']} ({cat.get('name')!r}) is listed twice (categories[{k}]); repeat skipped"
            self._log.add(source, "duplicate_id", detail)
        if not by_id and data.get("annotations"):
            given = data.get("categories")
            what = "has no category with an integer 'id'"
            if not given:
                what = "has no 'categories' list" if given is None else "has an empty 'categories' list"
            raise DataError(
                f"{source}: the file {what}, so the classes of its {len(data['annotations'])} annotation(s) are "
                "unknown; add 'categories': [{'id': 1, 'name': ...}, ...]"
            )
        return list(by_id.values())

    def _without_group_category(self, categories: list[dict[str, Any]], annotations: list[Any]) -> list[dict[str, Any]]:
        """``categories`` without a group entry that is no class: one that no annotation uses and that every other
        category names as its ``supercategory`` (Roboflow's COCO export lists its project so, as id 0). Kept in
        :attr:`group_category` (its name) and said in the summary line; it would otherwise be trained as a class
        that never occurs and shown by inference."""
        if len(categories) < 2:
            return categories
        used = {ann.get("category_id") for ann in annotations if isinstance(ann, dict)}
        for cat in categories:
            others = [c for c in categories if c is not cat]
            if cat["id"] not in used and all(c.get("supercategory") == cat.get("name") for c in others):
                self.group_category = str(cat.get("name"))
                return others
        return categories

    def _unique_images(self, entries: list[Any], source: str) -> tuple[list[dict[str, Any]], set[int]]:
        """Image records with an integer id, a file name and whole-number sizes, one per id (see the class docstring),
        and the ids whose annotations go with a skipped record (given to different files, or to a bad record only):
        those annotations are counted with the record's report, not reported one by one."""
        by_id: dict[int, list[dict[str, Any]]] = {}
        bad_ids: set[int] = set()
        for k, img in enumerate(entries):
            if not isinstance(img, dict) or not _is_int(img.get("id")) or not isinstance(img.get("file_name"), str):
                detail = f"images[{k}] needs an integer 'id' and a 'file_name': {img!r}; image skipped"
            elif (bad := _size_problem(img)) is not None:
                detail = f"images[{k}] (id {img['id']}, {img['file_name']!r}): {bad}; image and its annotations skipped"
                bad_ids.add(img["id"])
            else:
                by_id.setdefault(img["id"], []).append(img)
                continue
            self._log.add(source, "bad_annotation", detail)
            self.images_dropped += 1
        images, duplicate_ids = [], bad_ids - by_id.keys()
        for image_id, group in by_id.items():
            names = list(dict.fromkeys(str(img["file_name"]) for img in group))
            if len(names) == 1:
                images.append(group[0])
                if len(group) > 1:
                    detail = f"image id {image_id} is listed {len(group)} times for {names[0]!r}; repeats skipped"
                    self._log.add(source, "duplicate_id", detail)
                    self.images_dropped += len(group) - 1
                continue
            duplicate_ids.add(image_id)
            self.images_dropped += len(group)
            detail = (
                f"image id {image_id} is used by {' and '.join(map(repr, names))}: its annotations cannot be told "
                "apart, so these images and the annotations of that id are skipped"
            )
            self._log.add(source, "duplicate_id", detail)
        return images, duplicate_ids

    def _record(
        self, path: str, image_id: int, info: dict[str, Any], anns: list[dict[str, Any]], *, read_size: bool
    ) -> ImageRecord:
        """The image's record: its boxes clipped to the image (or dropped), ``extra["anns"]`` the annotations kept
        (bbox clipped likewise), for :attr:`coco`. A box reaching past the annotated size, or an image without one,
        has the real size read from the file header (``read_size``), so a wrong size is blamed, not the boxes."""
        width, height = int(info.get("width", 0)) or None, int(info.get("height", 0)) or None
        if read_size and _reaches_past(anns, width, height) and (real := image_size(path)) is not None:
            if width and height and real != (width, height):
                self._log.add(path, "size_mismatch", f"annotation {width}x{height}, image {real[0]}x{real[1]}")
            width, height = real
        boxes, labels, crowd, kept = [], [], [], []
        for ann in anns:  # ids, category and bbox were checked by _clean
            is_crowd = int(ann.get("iscrowd", 0))
            if is_crowd and not self.include_crowd:
                self.boxes_excluded += 1
                continue
            if self.masks and "segmentation" in ann and width and height:
                problem = _valid_segmentation(ann["segmentation"], height, width)
                if problem is not None:
                    self._log.add(path, "bad_annotation", f"annotation {ann.get('id')}: {problem}")
                    self.boxes_dropped += 1
                    continue
            boxes.append(_xyxy(ann["bbox"]))
            labels.append(self.cat_id_to_label[ann["category_id"]])
            crowd.append(is_crowd)
            kept.append(ann)
        names = [f"annotation {a.get('id')}" for a in kept]
        raw = np.asarray(boxes, np.float32).reshape(-1, 4)
        keep, clipped = sanitize_boxes(self._log, path, raw, width, height, names)
        self.boxes_dropped += int((~keep).sum())
        gt = [_clipped_annotation(a, c, not np.array_equal(r, c)) for a, r, c, k in zip(kept, raw, clipped, keep) if k]
        return ImageRecord(
            file=path,
            image_id=int(image_id),
            width=width or 0,
            height=height or 0,
            boxes=clipped[keep],
            labels=np.asarray(labels, np.int64).reshape(-1)[keep],
            iscrowd=np.asarray(crowd, np.uint8).reshape(-1)[keep],
            extra={"anns": gt},
        )

    def _masks(self, record: ImageRecord, keep: np.ndarray, height: int, width: int) -> np.ndarray:
        index = np.flatnonzero(keep)
        out = np.zeros((len(index), height, width), np.uint8)
        missing = 0
        for i, j in enumerate(index):
            ann = record.extra["anns"][j]
            if not ann.get("segmentation"):
                missing += 1
                x0, y0, x1, y1 = record.boxes[j]
                out[i, int(np.floor(y0)) : int(np.ceil(y1)), int(np.floor(x0)) : int(np.ceil(x1))] = 1
                continue
            m = self.coco.annToMask(ann)
            h, w = min(height, m.shape[0]), min(width, m.shape[1])
            out[i, :h, :w] = m[:h, :w]
        if missing:
            self._log.add(record.file, "no_segmentation", f"{missing} of {len(index)} annotation(s)")
        return out

    def __repr__(self) -> str:
        return f"CocoDetection(images={len(self)}, classes={len(self.classes)}, masks={self.masks})"


def find_bccd(root: str | os.PathLike | None = None) -> Path:
    """The BCCD folder: ``root``, ``$VISION_BCCD``, ``$VISION_DATA/bccd``, or ``../shared/data/bccd`` from the current
    folder or the source checkout. Raises ``FileNotFoundError`` listing where it looked."""
    candidates = [Path(root)] if root is not None else []
    if root is None:
        if os.environ.get("VISION_BCCD"):
            candidates.append(Path(os.environ["VISION_BCCD"]))
        if os.environ.get("VISION_DATA"):
            candidates.append(Path(os.environ["VISION_DATA"]) / "bccd")
        candidates += [Path.cwd().parent / "shared" / "data" / "bccd",
                       Path(__file__).resolve().parents[3] / "shared" / "data" / "bccd"]  # fmt: skip
    for c in candidates:
        if (c / "annotations" / "train.json").is_file():
            return c
    raise FileNotFoundError(
        "BCCD not found (looked in " + ", ".join(str(c) for c in candidates) + "); pass root= or set VISION_BCCD"
    )


@DATASETS.register("bccd", tags={"detection"}, task="detection")
def bccd(
    *,
    split: str = "train",
    root: str | os.PathLike | None = None,
    masks: bool = False,
    transform: DetectionTransformFn | None = None,
) -> CocoDetection:
    """BCCD blood cells (3 classes: RBC, WBC, Platelets; 640x480) as a :class:`CocoDetection` (``split``: train/val).

    With ``masks=True`` each box is its own mask (the set has no segmentation; reported once per file)."""
    if split not in ("train", "val"):
        raise ValueError(f"BCCD split must be 'train' or 'val', got {split!r}")
    folder = find_bccd(root)
    return CocoDetection(folder / "images", folder / "annotations" / f"{split}.json", masks=masks, transform=transform)
