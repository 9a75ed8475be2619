"""Folding batch norms into the convolutions that feed them, for inference on any network.

A ``BatchNorm2d`` in eval mode is an affine map per channel, so ``bn(conv(x))`` equals one convolution with scaled
weights and a shifted bias (:func:`torch.nn.utils.fusion.fuse_conv_bn_eval`). Which batch norm follows which
convolution is read from the data flow of one forward pass, not from module names or registration order: a pair is
folded when the batch norm's input is the very tensor the convolution returned and each module ran once. That makes
it work on any backbone (our CSP-Darknet, torchvision ResNets, timm models) without knowing its layout.

Example:
    >>> model = torchvision.models.resnet18().eval()
    >>> fused = copy.deepcopy(model)  # folding changes the state-dict keys: keep the original for saving
    >>> fused = fuse_conv_bn(fused, lambda: fused(torch.zeros(1, 3, 64, 64)))  # run: one forward pass to trace
    >>> x = torch.rand(2, 3, 64, 64)
    >>> torch.allclose(fused(x), model(x), atol=1e-4)
    True
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["FoldedCopy", "conv_bn_pairs", "fuse_conv_bn"]


def conv_bn_pairs(model: nn.Module, run: Callable[[], Any]) -> list[tuple[str, str]]:
    """Names ``(conv, bn)`` of every ``Conv2d`` whose output goes straight into a ``BatchNorm2d``.

    Args:
        model: the network (any mode; nothing in it is changed).
        run: calls the network once (e.g. ``lambda: model(example)``); its hooks record the data flow.

    Returns:
        Pairs of qualified module names, in execution order. A convolution or batch norm that runs more than once
        (shared weights) is left out, as is a pair whose channel counts differ.
    """
    produced: dict[int, str] = {}  # id of a convolution's output -> its name
    calls: dict[str, int] = {}
    found: dict[str, str] = {}
    keep: list[Tensor] = []  # outputs stay alive so that their ids are not reused during the pass

    def conv_hook(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
            calls[name] = calls.get(name, 0) + 1
            if isinstance(out, Tensor):
                produced[id(out)] = name
                keep.append(out)

        return hook

    def bn_hook(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, inp: tuple[Any, ...]) -> None:
            calls[name] = calls.get(name, 0) + 1
            if inp and isinstance(inp[0], Tensor) and id(inp[0]) in produced:
                found[name] = produced[id(inp[0])]

        return hook

    handles = []
    modules = dict(model.named_modules())
    for name, m in modules.items():
        if type(m) is nn.Conv2d:
            handles.append(m.register_forward_hook(conv_hook(name)))
        elif type(m) is nn.BatchNorm2d:
            handles.append(m.register_forward_pre_hook(bn_hook(name)))
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    pairs = []
    for bn, conv in found.items():
        c, b = modules[conv], modules[bn]
        if calls.get(conv) == 1 and calls.get(bn) == 1 and c.out_channels == b.num_features and b.track_running_stats:
            pairs.append((conv, bn))
    return pairs


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


@torch.no_grad()
def fuse_conv_bn(model: nn.Module, run: Callable[[], Any]) -> nn.Module:
    """Fold in place every batch norm that directly follows a convolution (see :func:`conv_bn_pairs`).

    The convolution becomes one with the batch norm's scale and shift folded into its weight and bias (exact up to
    float32 rounding) and the batch norm an ``nn.Identity``. The model is put in eval mode (folding uses the running
    statistics); its state-dict keys change, so fuse a copy when the original must still be saved or trained.

    Args:
        model: the network.
        run: calls it once on an example input (e.g. ``lambda: model(torch.zeros(1, 3, 64, 64))``).

    Returns:
        ``model`` itself.
    """
    model.eval()
    modules = dict(model.named_modules())
    for conv, bn in conv_bn_pairs(model, run):
        _set(model, conv, fuse_conv_bn_eval(modules[conv], modules[bn]))
        _set(model, bn, nn.Identity())
    return model


class FoldedCopy:
    """A batch-norm-folded copy of some modules, kept for inference and remade when any of their weights or running
    statistics changed (tensor versions and storage, so in-place updates such as an EMA's or ``load_state_dict`` are
    seen). The copy is not a submodule of anything: state dicts are unchanged.

    Example:
        >>> backbone, head = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)).eval(), nn.Conv2d(8, 2, 1)
        >>> folded = FoldedCopy()
        >>> net = folded.get([backbone, head], example=torch.zeros(1, 3, 64, 64))  # nn.Sequential(backbone, head)
        >>> net is folded.get([backbone, head], example=torch.zeros(1, 3, 64, 64))  # nothing changed: the same copy
        True
    """

    def __init__(self) -> None:
        self.key: Any = None
        self.net: nn.Module | None = None
        self._lock = threading.Lock()  # threads running batch slices (vision.utils.parallel) ask at the same time

    def clear(self) -> None:
        """Forget the copy (frees its memory)."""
        self.key = self.net = None

    def get(
        self,
        modules: list[nn.Module],
        *,
        example: Tensor,
        channels_last: bool = False,
        on_remake: Callable[[], Any] | None = None,
    ) -> nn.Module:
        """``nn.Sequential(*modules)`` folded (:func:`fuse_conv_bn`, traced on ``example``), without gradients, in
        the channels_last memory format when asked (made once when several threads ask); the cached copy while
        nothing changed (``on_remake()`` is called when it is made anew, e.g. to drop CUDA graphs that captured the
        previous copy)."""
        tensors = [t for m in modules for t in (*m.parameters(), *m.buffers())]
        key = (channels_last, tuple((t.data_ptr(), t._version) for t in tensors))
        with self._lock:
            if self.net is None or self.key != key:
                net = copy.deepcopy(nn.Sequential(*modules))
                fuse_conv_bn(net, lambda: net(example)).requires_grad_(False)
                self.net = net.to(memory_format=torch.channels_last) if channels_last else net
                self.key = key
                if on_remake is not None:
                    on_remake()
            return self.net

    def __deepcopy__(self, memo: dict[int, Any]) -> FoldedCopy:  # copies of a model start without a folded copy
        return FoldedCopy()
