"""vision-zoo: a computer-vision model zoo for PyTorch.

One registry of backbones (AlexNet, VGG, ResNet, Inception, EfficientNet, any timm model) and task models, weight
cards with verified downloads, and fast GPU hot paths.

Example:
    >>> import vision
    >>> vision.list_models("resnet*")
    >>> model = vision.create_model("resnet50", weights=True).eval()
    >>> backbone = vision.create_backbone("efficientnet_b0", out_indices=(2, 3, 4))
"""

import vision._heap  # heap thresholds for CPU work: see vision._heap
import vision._openmp  # noqa: F401  (before torch: it must run before torch loads its OpenMP runtime)
from vision._api import create_backbone, create_model, get_card, list_models, load_weights
from vision._loader import load_model
from vision.backbones._base import FeatureSpec
from vision.hub.cards import Preprocess, WeightsCard
from vision.registry import BACKBONES, DATASETS, MODELS, NECKS, TASKS, Registry

__version__ = "0.1.0"

__all__ = [
    "BACKBONES",
    "DATASETS",
    "MODELS",
    "NECKS",
    "TASKS",
    "FeatureSpec",
    "Preprocess",
    "Registry",
    "WeightsCard",
    "__version__",
    "create_backbone",
    "create_model",
    "get_card",
    "list_models",
    "load_model",
    "load_weights",
]
