"""Generators: GANs (SN-GAN, DCGAN, projected GAN) and DDPM/DDIM diffusion, sharing :mod:`.common`."""
