"""Backbone families. Importing this package registers every built-in family in ``BACKBONES``."""

from vision.backbones import alexnet, csp_darknet, efficientnet, inception, resnet, timm, vgg  # noqa: F401  (registration)
from vision.backbones._base import FeatureExtractor, FeatureSpec, Stage

__all__ = ["FeatureExtractor", "FeatureSpec", "Stage"]
