"""Task models: ``classifier``, ``detection/{yolo, rcnn, ssd}``, ``generation/{gan, diffusion}``.

Importing this package imports every public module below it, so each registers its builders; a new model family is
a new file or folder here, nothing else to edit. Models stand alone: they import backbones, necks, ops and the hub,
never the data pipeline, the engine or a task.
"""

from vision.backbones.classifier import ImageClassifier, TimmClassifier
from vision.registry import import_submodules

import_submodules(__name__, __path__)

__all__ = ["ImageClassifier", "TimmClassifier"]
