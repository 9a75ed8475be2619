"""Task models. Importing this package registers the built-in task assemblies in ``MODELS``."""

from vision.models.classifier import ImageClassifier, TimmClassifier

__all__ = ["ImageClassifier", "TimmClassifier"]
