"""Classification: training hooks, data (ImageFolder, digits), top-k inference on files, metrics (top-1/top-5,
precision/recall/F1, AUC, confusion matrix)."""

from vision.tasks.classification.task import ClassificationTask

__all__ = ["ClassificationTask"]
