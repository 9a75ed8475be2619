"""What :func:`vision.deploy.export_onnx` changes while it traces a model, so that the TorchScript ONNX exporter
writes what the model computes; on leaving :func:`traceable` the model is as it was.

- Fixed-size graphs (classifier, YOLO, SSD), whose input size is known:

  - an ``nn.AdaptiveAvgPool2d`` whose bins are uneven at that size (AlexNet's 6 x 6 and VGG's 7 x 7 pools on maps
    of another size; the exporter writes only bins of one size) becomes a :class:`FixedAdaptiveAvgPool2d`: the same
    bins as PyTorch's (``start = floor(i * in / out)``, ``end = ceil((i + 1) * in / out)``), two matrix products;
  - a timm position embedding resampled at run time (``dynamic_img_size=True``: an antialiased bicubic resize, which
    the exporter cannot write) is resampled once, by timm, for the export grid and written as a constant.

- R-CNN graphs take any image size:

  - each image is resized to the size PyTorch gives it (:func:`_exact_resize`; torchvision's traced resize could
    be a pixel short);
  - such a position embedding is resampled inside the graph: an ONNX ``Resize`` (cubic with ``a = -0.5``,
    ``exclude_outside``, ``antialias``) that computes what PyTorch's antialiased bicubic computes, up or down. ONNX
    has ``antialias`` from opset 18; at opset 17 the export is refused (``ValueError``: an image whose patch grid is
    smaller than the embedding's would be resampled without it). The ONNX function of PyTorch's operator is
    registered with torch's exporter for the rest of the process (:func:`_register_aa_bicubic`). timm's patch-grid
    size (``math.ceil`` of Python numbers, a constant in a trace) is computed from the traced input shape instead.

- The exporter's own output (it prints the whole TorchScript graph, ~1000 lines, when it fails) is kept off the
  terminal, and a failure is one ``ValueError`` line naming the model and the exporter's reason.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

__all__ = ["FixedAdaptiveAvgPool2d", "adaptive_bins", "traceable"]

#: the timm functions that resample a position embedding (antialiased bicubic)
_RESAMPLERS = ("resample_abs_pos_embed", "resample_abs_pos_embed_nhwc")
#: the operator PyTorch's antialiased bicubic resize traces to
_AA_BICUBIC = "aten::_upsample_bicubic2d_aa"
#: the first opset whose ``Resize`` has ``antialias``
_AA_OPSET = 18


def adaptive_bins(n_in: int, n_out: int) -> Tensor:
    """``[n_out, n_in]`` float32: row ``i`` averages PyTorch's adaptive-pool bin ``floor(i * n_in / n_out)`` to
    ``ceil((i + 1) * n_in / n_out)`` (exclusive)."""
    rows = torch.zeros(n_out, n_in)
    for i in range(n_out):
        start, end = (i * n_in) // n_out, -(-((i + 1) * n_in) // n_out)
        rows[i, start:end] = 1.0 / (end - start)
    return rows


class FixedAdaptiveAvgPool2d(nn.Module):
    """``nn.AdaptiveAvgPool2d(out_size)`` for inputs ``[..., in_h, in_w]`` of one size: ``[..., out_h, out_w]`` as
    ``rows @ x @ cols.T`` with :func:`adaptive_bins` (exportable whatever the two sizes)."""

    def __init__(self, in_size: tuple[int, int], out_size: tuple[int, int]) -> None:
        super().__init__()
        self.register_buffer("rows", adaptive_bins(in_size[0], out_size[0]), persistent=False)
        self.register_buffer("cols", adaptive_bins(in_size[1], out_size[1]).t().contiguous(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return torch.matmul(torch.matmul(self.rows.to(x.dtype), x), self.cols.to(x.dtype))


def _uneven_pools(model: nn.Module, sizes: dict[str, list[tuple[int, int]]]) -> dict[str, nn.Module]:
    """Stand-ins for the adaptive average pools that saw inputs of one size (``sizes``) with uneven bins."""
    swaps: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        seen = set(sizes.get(name, ()))
        if not isinstance(module, nn.AdaptiveAvgPool2d) or len(seen) != 1:
            continue
        (h, w) = seen.pop()
        out = tuple(i if o is None else int(o) for i, o in zip((h, w), _pair(module.output_size)))
        if h % out[0] or w % out[1]:  # the exporter writes even bins itself
            swaps[name] = FixedAdaptiveAvgPool2d((h, w), out)  # type: ignore[arg-type]
    return swaps


@contextlib.contextmanager
def _swapped(model: nn.Module, swaps: dict[str, nn.Module]) -> Iterator[None]:
    """``model``'s submodules named in ``swaps`` replaced, for the ``with`` block."""
    saved = []
    for name, new in swaps.items():
        parent_name, _, leaf = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        saved.append((parent, leaf, parent._modules[leaf]))
        parent._modules[leaf] = new
    try:
        yield
    finally:
        for parent, leaf, old in saved:
            parent._modules[leaf] = old


@contextlib.contextmanager
def _patched(patches: list[tuple[Any, str, Any]]) -> Iterator[None]:
    """Each ``(owner, attribute, value)`` set for the ``with`` block (instance attributes removed afterwards when the
    owner had none of its own)."""
    saved = [(owner, attr, owner.__dict__.get(attr, _MISSING)) for owner, attr, _ in patches]
    for owner, attr, value in patches:
        setattr(owner, attr, value)
    try:
        yield
    finally:
        for owner, attr, old in reversed(saved):
            if old is _MISSING:
                delattr(owner, attr)
            else:
                setattr(owner, attr, old)


_MISSING = object()


def _timm_resamplers() -> list[tuple[Any, str, Callable[..., Tensor]]]:
    """``(module, name, function)`` for every loaded timm module that holds one of timm's resample functions."""
    try:
        from timm.layers import pos_embed
    except ImportError:
        return []
    originals = {getattr(pos_embed, n, None) for n in _RESAMPLERS} - {None}
    found = []
    for mod_name, mod in list(sys.modules.items()):
        if mod is None or not (mod_name == "timm" or mod_name.startswith("timm.")):
            continue
        for n in _RESAMPLERS:
            fn = getattr(mod, n, None)
            if fn in originals:
                found.append((mod, n, fn))
    return found


def _cached(fn: Callable[..., Tensor], cache: dict[tuple[Any, ...], Tensor]) -> Callable[..., Tensor]:
    """``fn`` (a timm resample) computing each (embedding, new size) once, eagerly, and returning that result
    afterwards: a constant in the trace."""

    def resample(posemb: Tensor, new_size: Any, *args: Any, **kwargs: Any) -> Tensor:
        key = (id(posemb), *(int(s) for s in new_size))  # traced sizes: the fixed export grid
        if key not in cache:
            cache[key] = fn(posemb, new_size, *args, **kwargs)
        return cache[key]

    return resample


def _dynamic_embeddings(model: nn.Module) -> bool:
    """Whether ``model`` holds a timm network that resamples its position embedding to each input's grid."""
    return any(getattr(m, "dynamic_img_size", False) and getattr(m, "pos_embed", None) is not None
               for m in model.modules())  # fmt: skip


def _aa_bicubic(g: Any, x: Any, output_size: Any, align_corners: Any, *scales: Any) -> Any:
    """ONNX for ``aten::_upsample_bicubic2d_aa`` with an output size (opset >= 18): a ``Resize`` of PyTorch's
    antialiased bicubic (PIL's kernel: ``a = -0.5``, taps outside the input dropped and the rest renormalised,
    widened when shrinking)."""
    from torch.onnx._internal.torchscript_exporter import symbolic_helper as sh

    if sh._is_none(output_size) or sh._maybe_get_const(align_corners, "b") is True:
        return sh._unimplemented(_AA_BICUBIC, "a scale factor or align_corners=True (only an output size)")
    shape = g.op("Shape", x)
    zero, two = g.op("Constant", value_t=torch.tensor([0])), g.op("Constant", value_t=torch.tensor([2]))
    lead = g.op("Slice", shape, zero, two)  # batch and channels
    size = g.op("Concat", lead, g.op("Cast", output_size, to_i=7), axis_i=0)  # 7: INT64
    empty = g.op("Constant", value_t=torch.tensor([], dtype=torch.float32))
    return g.op("Resize", x, empty, empty, size, mode_s="cubic", cubic_coeff_a_f=-0.5, exclude_outside_i=1,
                antialias_i=1, coordinate_transformation_mode_s="half_pixel")  # fmt: skip


def _grid_size(patch: nn.Module) -> Callable[[Any], tuple[Any, Any]]:
    """timm ``PatchEmbed.dynamic_feat_size`` (``math.ceil(H / p)`` with dynamic padding, else ``H // p``) in integer
    arithmetic, so that a traced input size stays symbolic."""
    ph, pw = _pair(patch.patch_size)
    pad = bool(getattr(patch, "dynamic_img_pad", False))

    def feat_size(img_size: Any) -> tuple[Any, Any]:
        h, w = img_size[0], img_size[1]
        return ((h + ph - 1) // ph, (w + pw - 1) // pw) if pad else (h // ph, w // pw)

    return feat_size


def _exact_resize(original: Callable[..., Any]) -> Callable[..., Any]:
    """torchvision's R-CNN resize (``_resize_image_and_masks``) that, while tracing, computes the new size as the
    eager path does, ``floor(side * min(min_size / short, max_size / long))`` with float64 divisions. torchvision's
    traced path writes ``min_size / short`` as ``min_size * (1 / short)`` in float32 and loses a pixel where the
    product lands on an integer (375 x 500 at ``min_size`` 800: 799 rows, not 800; 400 x 600 at 160: 159), so the
    file's detections differed from PyTorch's on such images."""

    def resize(image: Tensor, min_size: int, max_size: int, target: Any = None, fixed_size: Any = None) -> Any:
        if not torch.jit.is_tracing() or target is not None or fixed_size is not None:
            return original(image, min_size, max_size, target, fixed_size)
        h, w = (torch.as_tensor(d).to(torch.float64) for d in image.shape[-2:])
        lo, hi = (torch.tensor(float(v), dtype=torch.float64) for v in (min_size, max_size))
        scale = torch.minimum(lo / torch.minimum(h, w), hi / torch.maximum(h, w))  # tensor / tensor: one Div
        size = (torch.floor(h * scale).to(torch.int64), torch.floor(w * scale).to(torch.int64))
        return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0], target

    return resize


@contextlib.contextmanager
def _dynamic_size_patches(model: nn.Module, opset: int, name: str) -> Iterator[None]:
    """For a graph of any input size (R-CNN): the image resized to PyTorch's size, position embeddings resampled in
    the graph (module docstring)."""
    from torchvision.models.detection import transform

    resize = [(transform, "_resize_image_and_masks", _exact_resize(transform._resize_image_and_masks))]
    if not _dynamic_embeddings(model):
        with _patched(resize):
            yield
        return
    if opset < _AA_OPSET:
        raise ValueError(f"cannot export {name} at opset {opset}: its backbone resamples its position embeddings to "
                         "each image's patch grid (antialiased bicubic), and an R-CNN file takes any image size, "
                         f"so the file must resample them itself, which ONNX does from opset {_AA_OPSET}: pass "
                         f"opset={_AA_OPSET}")  # fmt: skip
    from timm.layers import PatchEmbed  # a model with such embeddings is a timm model

    patches = [(m, "dynamic_feat_size", _grid_size(m)) for m in model.modules() if isinstance(m, PatchEmbed)]
    _register_aa_bicubic()
    with _patched(resize + patches):
        yield


def _register_aa_bicubic() -> None:
    """Register :func:`_aa_bicubic` for opsets >= 18, once per process. It stays registered: torch's
    ``unregister_custom_op_symbolic`` leaves an empty entry behind, after which every export of the operator fails
    with ``min() arg is an empty sequence``; registered, an export at opset 17 is told that opset 18 supports it."""
    global _AA_REGISTERED
    if not _AA_REGISTERED:
        torch.onnx.register_custom_op_symbolic(_AA_BICUBIC, _aa_bicubic, _AA_OPSET)
        _AA_REGISTERED = True


_AA_REGISTERED = False


@contextlib.contextmanager
def _fixed_size_patches(graph: nn.Module, example: Tensor) -> Iterator[None]:
    """For a graph of one input size: one eager run of ``graph`` on ``example`` records the adaptive pools' input
    sizes and resamples the position embeddings (module docstring)."""
    pools = [n for n, m in graph.named_modules() if isinstance(m, nn.AdaptiveAvgPool2d)
             and _pair(m.output_size) != (1, 1)]  # fmt: skip
    resamplers = _timm_resamplers() if _dynamic_embeddings(graph) else []
    if not pools and not resamplers:
        yield
        return
    sizes: dict[str, list[tuple[int, int]]] = {}
    hooks = [graph.get_submodule(n).register_forward_pre_hook(
        lambda _m, args, n=n: sizes.setdefault(n, []).append(tuple(int(d) for d in args[0].shape[-2:])))
        for n in pools]  # fmt: skip
    cache: dict[tuple[Any, ...], Tensor] = {}
    with _patched([(mod, attr, _cached(fn, cache)) for mod, attr, fn in resamplers]):
        try:
            with torch.no_grad():
                graph(example)
        finally:
            for hook in hooks:
                hook.remove()
        with _swapped(graph, _uneven_pools(graph, sizes)):
            yield


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """File descriptors 1 and 2 sent to a discarded temporary file for the ``with`` block (the exporter's C++
    logging writes there, past ``sys.stdout``)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    try:
        saved = [os.dup(1), os.dup(2)]
    except OSError:  # no such descriptors (a detached process): nothing to keep quiet
        yield
        return
    with tempfile.TemporaryFile() as sink:
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def exporter_reason(err: BaseException) -> str:
    """The exporter's message in one line, without its graph excerpts and its invitation to file a PyTorch issue."""
    text = " ".join(str(err).split()) or type(err).__name__
    text = re.sub(r"\s*\[Caused by the value .*$", "", text)
    text = re.sub(r"\s*Please feel free to request support.*?(\.\s|$)", " ", text).strip()
    return text[:400]


@contextlib.contextmanager
def traceable(graph: nn.Module, example: Tensor, *, dynamic_size: bool, opset: int, name: str) -> Iterator[None]:
    """The ``with`` block traces ``graph`` (an export wrapper) on ``example`` at ``opset``: the changes of the
    module docstring are in place, the exporter's output is discarded, and its failure becomes one ``ValueError``.

    Args:
        graph: the export wrapper (:mod:`vision.deploy._graphs`), eval mode.
        example: its example input (``[B, 3, S, S]``, or ``[3, S, S]`` for R-CNN).
        dynamic_size: whether the graph takes any input height and width (R-CNN).
        opset: the ONNX opset being written.
        name: the model's name, for messages.

    Raises:
        ValueError: the model cannot be exported at ``opset``, or the exporter failed (its reason, one line).
    """
    patches = _dynamic_size_patches(graph, opset, name) if dynamic_size else _fixed_size_patches(graph, example)
    with patches:
        try:
            with _quiet():
                yield
        except (RuntimeError, TypeError, ValueError, NotImplementedError, torch.onnx.errors.OnnxExporterError) as err:
            raise ValueError(f"cannot export {name} to ONNX (opset {opset}): {exporter_reason(err)}") from None
