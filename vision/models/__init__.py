"""Task models. Importing this package imports every public module in it, so each registers its builders (and any
training task or inference routine it defines); a new task model is a new file here, nothing else to edit."""

import importlib
import pkgutil

from vision.models.classifier import ImageClassifier, TimmClassifier

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["ImageClassifier", "TimmClassifier"]
