"""``vision info <backbone>`` shows the declared levels, and a built backbone returns exactly those maps."""

from __future__ import annotations

import math
import re

import pytest
import torch

import vision
from vision.cli.main import main


def _levels(text: str) -> list[tuple[str, int, int]]:
    return [(n, int(c), int(s)) for n, c, s in re.findall(r"^  (C\S+)\s+(\d+)\s+(\d+)$", text, flags=re.M)]


@pytest.mark.parametrize("name", ["alexnet", "timm/convnext_atto", "timm/vit_tiny_patch16_224"])
def test_info_shows_the_levels_a_backbone_returns(name, capsys):
    assert main(["info", name]) == 0
    out = capsys.readouterr().out
    levels = _levels(out)
    assert levels, out
    assert ("single-scale" in out) == (len({s for _, _, s in levels}) == 1)
    body = vision.create_backbone(name, out_indices=range(len(levels))).eval()
    H, W = 122, 170  # a multiple of nothing: the maps are still ceil(H / stride)
    with torch.no_grad():
        feats = body(torch.rand(1, 3, H, W))
    real = [(k, v.shape[1], v.shape[2], v.shape[3]) for k, v in feats.items()]
    assert real == [(n, c, math.ceil(H / s), math.ceil(W / s)) for n, c, s in levels]


def test_info_of_an_unknown_backbone_is_one_error_line(capsys):
    with pytest.raises(SystemExit) as stop:  # the command line's one error line, exit 2
        main(["info", "no_such_backbone"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "no_such_backbone" in err[0]
