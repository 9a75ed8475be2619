"""Generation: training hooks, image data sets, sampling to files, FID/KID and the digits Fréchet distance."""

from vision.tasks.generation.task import GenerationTask

__all__ = ["GenerationTask"]
