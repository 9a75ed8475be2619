"""The ``>>>`` examples of a few docstrings run as written (doctest): :mod:`vision.utils.fusion` (``fuse_conv_bn``
takes a ``run`` callable, not ``example=``), :class:`~vision.utils.fusion.FoldedCopy`,
:class:`~vision.models.generation.diffusion.schedule.NoiseSchedule` (``ddim_step`` without ``noise`` at ``eta=0``)
and :mod:`vision.data` (a loader batch through :class:`~vision.data.GpuAugment`, no ``move`` helper)."""

from __future__ import annotations

import copy
import doctest
import importlib

import pytest
import torch
import torchvision
from torch import nn

import vision

EXAMPLES = [
    ("vision.utils.fusion", None),
    ("vision.utils.fusion", "FoldedCopy"),
    ("vision.models.generation.diffusion.schedule", "NoiseSchedule"),
    ("vision.data", None),
]


@pytest.mark.filterwarnings("ignore:This DataLoader will create")  # the vision.data example's num_workers=4
@pytest.mark.parametrize(("module", "attr"), EXAMPLES, ids=[f"{m}.{a}" if a else m for m, a in EXAMPLES])
def test_docstring_example_runs(module: str, attr: str | None) -> None:
    mod = importlib.import_module(module)
    obj = getattr(mod, attr) if attr else mod
    globs = {"torch": torch, "torchvision": torchvision, "copy": copy, "nn": nn, "vision": vision, **vars(mod)}
    test = doctest.DocTestParser().get_doctest(obj.__doc__, globs, f"{module}.{attr or ''}", mod.__file__, 0)
    assert test.examples, f"{module}.{attr or ''} has no example"
    torch.manual_seed(0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    failures: list[str] = []
    runner.run(test, out=failures.append)
    assert runner.failures == 0, "".join(failures)


def test_ddim_step_at_eta_zero_needs_no_noise() -> None:
    from vision.models.generation.diffusion.schedule import NoiseSchedule

    s = NoiseSchedule(timesteps=1000, schedule="cosine")
    x, x0, eps = torch.randn(3, 2, 1, 4, 4).unbind(0)
    with_none = s.ddim_step(x, x0, eps, t=999, t_prev=979, eta=0.0, noise=None)
    assert torch.equal(s.ddim_step(x, x0, eps, t=999, t_prev=979, eta=0.0), with_none)
    ab = s.alpha_bar(979)  # DDIM eq. 12 with sigma = 0
    assert torch.allclose(with_none, ab**0.5 * x0 + (1 - ab) ** 0.5 * eps)
    assert torch.equal(s.ddpm_step(x, x0, t=999, t_prev=998), s.ddpm_step(x, x0, t=999, t_prev=998, noise=None))
