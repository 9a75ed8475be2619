"""Static int8 post-training quantisation of an exported file with onnxruntime's quantiser (QDQ format).

What is quantised (:func:`network_nodes` picks the nodes, :func:`quantize_int8` the types), and why:

- only the network: the nodes inside a module scope of the exported wrapper (``/backbone/...``, ``/model/...``).
  The wrapper's own ops (normalisation, box decoding, NMS; a top-level scope such as ``/Softmax_1``) stay float32.
- only the feature path: nodes with an input computed from the image without going through ``Shape``. The shape
  arithmetic of a dynamic graph (the TF-"same" padding of EfficientNet-Lite: ``Shape -> Div -> Ceil -> Mul -> Add ->
  Concat -> Pad``) is float too: quantised, its pad amounts were rounded and the padded convolutions shifted by a
  pixel.
- the network's outputs stay float (``keep_outputs``): the layers whose result leaves the network (a classifier's
  last ``Gemm``, a detector head's final output convolutions, found by walking back from the graph outputs and the
  wrapper's inputs through reshapes, concatenations and activations) run in float32 with float outputs. An 8-bit
  step on the logits flips the top-1 whenever the two best logits are that close, and box regressions lose
  precision; these layers are small, so the cost in speed is small.
- op types: convolutions, matrix products, pooling, the element-wise ops between them (Add, Mul, Sigmoid: SiLU),
  Concat, Resize, and the clipping activations (Clip = ReLU6, Relu). Quantising Clip/Relu folds them into the
  preceding convolution's output range ([0, 6] instead of the much wider pre-activation range) and removes the
  dequantise/requantise pair a float activation would need.
- on the test photos (tests/deploy/test_int8.py) Lite0 kept fp32's top-1 on 76.5% of the confident views with the
  shape arithmetic quantised and Clip float, 82% with Clip quantised, 88% with the arithmetic float, 100% with both
  (int8 or uint8 weights alike).
- types: activations uint8 (asymmetric), weights int8 (symmetric, per channel): the U8S8 kernels are the fast path of
  onnxruntime on x86 (VNNI). uint8 weights (U8U8) fall back to slow kernels (Lite0's network 4.6x slower than
  fp32, with int8 weights 1.7x faster) for no accuracy gain (both keep the test's confident top-1).
- on x86 CPUs without VNNI (AVX2 / AVX-512 without its VNNI extension) onnxruntime's U8S8 kernels add pairs of
  uint8 x int8 products in int16, which saturates: on such a CPU (an AMD EPYC with AVX2 only) Lite0 kept fp32's top-1
  on 16 of the 17 confident test views and on 61% of all views. Weights reduced to 7 bits (``reduce_range``,
  onnxruntime's remedy for exactly this) cannot saturate: 17 of 17 and 80%; uint8 weights 17 of 17 and 91%, but on
  the slow kernels. ``reduce_range`` defaults to "this CPU is x86 without VNNI" (:func:`saturating_cpu`): the file is
  made for the machine that quantises it; pass ``reduce_range=False`` for a VNNI target.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["network_nodes", "quantize_int8", "saturating_cpu"]


def saturating_cpu() -> bool:
    """Whether this CPU is x86 without VNNI (``avx512_vnni``, ``avx_vnni`` or AMX in ``/proc/cpuinfo``), where
    onnxruntime's U8S8 int8 kernels can saturate (see the module docstring). An x86 CPU whose flags cannot be read
    counts as saturating; other architectures (ARM's dot-product kernels) do not."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return True
    return not {"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags)


#: the op types quantised by default (see the module docstring)
OP_TYPES = ("Conv", "MatMul", "Gemm", "Add", "Mul", "Sigmoid", "Concat", "MaxPool", "GlobalAveragePool", "AveragePool",
            "Resize", "Clip", "Relu")  # fmt: skip
#: the layers at which the walk back from the network's outputs stops (they stay float with ``keep_outputs``)
_LAYERS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
#: ops the walk back crosses: data movement and activations (Mul: the gate of SiLU)
_CROSSED = {"Concat", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Slice", "Split", "Identity",
            "Sigmoid", "Relu", "Clip", "Tanh", "Softmax", "HardSigmoid", "HardSwish", "LeakyRelu", "Mul"}  # fmt: skip


def _is_wrapper(name: str) -> bool:
    # the wrapper's ops carry a top-level scope ("/Softmax_1", "Identity_3"), the network's a nested one
    # ("/backbone/stem/Conv", "/model/head/Conv")
    return name.count("/") <= 1


def network_nodes(graph: Any, *, keep_outputs: bool = True) -> tuple[list[str], list[str]]:
    """``(quantisable, excluded)`` node names of an ``onnx.GraphProto`` written by :func:`vision.deploy.export_onnx`.

    Quantisable: the network's nodes on the feature path (module docstring). Excluded: the wrapper's nodes, the shape
    arithmetic, and with ``keep_outputs`` the layers whose result leaves the network (with the nodes between them and
    the outputs). Nodes are assumed in topological order (as ONNX requires).
    """
    feature = {i.name for i in graph.input}
    for node in graph.node:
        if node.op_type not in ("Shape", "Size") and any(i in feature for i in node.input):
            feature.update(node.output)
    producer = {o: n for n in graph.node for o in n.output}
    kept: set[str] = set()
    if keep_outputs:
        leaving = {o.name for o in graph.output} | {i for n in graph.node if _is_wrapper(n.name) for i in n.input}
        todo = [producer[t] for t in leaving if t in producer and t in feature and not _is_wrapper(producer[t].name)]
        while todo:
            node = todo.pop()
            if node.name in kept:
                continue
            kept.add(node.name)
            if node.op_type in _LAYERS or node.op_type not in _CROSSED:
                continue
            todo += [producer[i] for i in node.input if i in feature and i in producer]
    quantisable, excluded = [], []
    for node in graph.node:
        net = not _is_wrapper(node.name) and node.name not in kept and any(i in feature for i in node.input)
        (quantisable if net else excluded).append(node.name)
    return quantisable, excluded


def quantize_int8(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], calibration: Iterable[np.ndarray], *,
    per_channel: bool = True, weight_type: str = "int8", method: str = "minmax", keep_outputs: bool = True,
    op_types: Iterable[str] = OP_TYPES, reduce_range: bool | None = None,
) -> Path:  # fmt: skip
    """Write a static int8 QDQ copy of the fp32 file ``src`` to ``dst`` (what is quantised and why: module docstring).

    Args:
        src: an fp32 file written by :func:`vision.deploy.export_onnx` (its metadata is copied, ``int8`` set).
        dst: the output file.
        calibration: graph inputs (float32 arrays shaped as the file's input, e.g. ``[B, 3, S, S]``), a few hundred
            images in all, drawn from the data the model will see.
        per_channel: per-channel weight scales (needed by depthwise convolutions, whose channels differ widely).
        weight_type: ``"int8"`` (default: symmetric, onnxruntime's fast U8S8 kernels) or ``"uint8"`` (slow U8U8
            kernels; for x86 CPUs without VNNI where U8S8 may saturate).
        method: calibration of the activation ranges: ``"minmax"`` (default; on Lite0 as accurate as the others and
            the fastest), ``"percentile"`` (99.999%) or ``"entropy"`` (histograms: slower, memory-hungry).
        keep_outputs: keep the layers whose result leaves the network in float32 (default; see the module docstring).
        op_types: the op types quantised (default :data:`OP_TYPES`).
        reduce_range: 7-bit weights, against the saturation of U8S8 kernels on x86 CPUs without VNNI (default: when
            this CPU is one, :func:`saturating_cpu`).

    Returns:
        ``dst`` as a ``Path``.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from vision.deploy.export import set_metadata

    methods = {"percentile": CalibrationMethod.Percentile, "minmax": CalibrationMethod.MinMax,
               "entropy": CalibrationMethod.Entropy}  # fmt: skip
    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    if method not in methods or weight_type not in types:
        raise ValueError(f"method must be one of {sorted(methods)} and weight_type one of {sorted(types)}")
    src, dst = Path(src), Path(dst)
    name = onnx.load(src).graph.input[0].name

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.it, None)
            return None if x is None else {name: np.ascontiguousarray(x, dtype=np.float32)}

    pre = dst.with_suffix(".pre.onnx")
    try:
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    except Exception:
        pre = src
    try:
        _, excluded = network_nodes(onnx.load(pre).graph, keep_outputs=keep_outputs)
        quantize_static(str(pre), str(dst), _Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        nodes_to_exclude=excluded, op_types_to_quantize=list(op_types),
                        activation_type=QuantType.QUInt8, weight_type=types[weight_type],
                        calibrate_method=methods[method],
                        reduce_range=saturating_cpu() if reduce_range is None else bool(reduce_range))  # fmt: skip
    finally:
        if pre != src:
            pre.unlink(missing_ok=True)
    proto = onnx.load(dst)
    meta = {p.key: p.value for p in onnx.load(src).metadata_props} | {"int8": "true"}
    set_metadata(proto, meta)
    onnx.save(proto, dst)
    return dst
