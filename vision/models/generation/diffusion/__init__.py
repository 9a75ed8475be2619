"""Diffusion: the UNet denoiser, noise schedules and samplers (DDPM, DDIM), and the registered models."""

from vision.models.generation.diffusion.model import DiffusionModel

__all__ = ["DiffusionModel"]
