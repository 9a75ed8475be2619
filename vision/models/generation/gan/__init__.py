"""GANs: generator and discriminator networks (:mod:`.networks`) and the training/sampling wrapper (:mod:`.model`)."""

from vision.models.generation.gan.model import GAN

__all__ = ["GAN"]
