"""Denoising diffusion: a class-conditional UNet trained with DDPM's objective, sampled with DDPM or DDIM.

Papers: DDPM https://arxiv.org/abs/2006.11239, improved DDPM https://arxiv.org/abs/2102.09672, DDIM
https://arxiv.org/abs/2010.02502, classifier-free guidance https://arxiv.org/abs/2207.12598, v-prediction
https://arxiv.org/abs/2202.00512.

- **Training** (:meth:`DiffusionModel.loss`): ``t ~ U{0..T-1}``, ``x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps``, mean
  squared error against the ``prediction`` target (``eps``, ``v`` or ``x0``). With probability ``cond_drop_prob``
  the label is replaced by the null label, so one network learns ``p(x | y)`` and ``p(x)``.
- **Sampling** (:meth:`DiffusionModel.sample`): ``sampler="ddpm"`` (ancestral, posterior variance) or ``"ddim"``
  with any number of ``steps`` and ``eta`` (``eta=1`` with every step is DDPM).
- **Guidance convention**: ``out = out_null + guidance_scale * (out_cond - out_null)``; ``guidance_scale=1.0`` is the
  plain conditional model (guidance off, one network call per step), ``0.0`` the unconditional model, ``> 1``
  sharper, less diverse samples (2 calls per step).
- **EMA**: the engine keeps an exponential moving average of the weights (``ema=true``, the default of the
  ``generation`` task) and saves *that* as ``best``/``last.safetensors``, evaluates it and samples grids from it, so a
  trained model samples with EMA weights by default.

The schedule (``vision/models/_diffusion_schedule.py``) is not part of the state dict: it is rebuilt from the
builder's keyword arguments, which a training run stores in its weights file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vision.hub.cards import WeightsCard
from vision.models._predict import generation_predict
from vision.models.generation.common import LabelsArg, images_to_uint8, resolve_labels, sampling_context
from vision.models.generation.diffusion.schedule import PREDICTIONS, SAMPLERS, NoiseSchedule, run_sampler
from vision.models.generation.diffusion.unet import UNet
from vision.registry import MODELS

__all__ = ["DiffusionModel"]


class DiffusionModel(nn.Module):
    """A denoiser plus its noise schedule.

    Args:
        denoiser: ``(x_t [B, C, H, W], t int64 [B], labels int64 [B] | None) -> [B, C, H, W]``.
        schedule: the :class:`~vision.models.generation.diffusion.schedule.NoiseSchedule`.
        prediction: what the denoiser predicts: ``"eps"``, ``"v"`` or ``"x0"``.
        image_channels, image_size: the images it makes.
        num_classes: classes of the conditional model (``0``: unconditional); label ``num_classes`` is the null label.
        cond_drop_prob: probability in ``[0, 1]`` of training on the null label; classifier-free guidance and
            unconditional samples need ``> 0`` (a model trained with 0 refuses them).
        sampler, steps, eta, guidance_scale: sampling defaults (``steps``: DDIM steps in ``[1, T]``, default
            ``min(50, T)``).

    Images in the training batch are float ``[B, C, H, W]`` in ``[-1, 1]``; :meth:`sample` returns
    ``uint8 [n, C, H, W]``.

    Example:
        >>> model = vision.create_model("ddpm_unet_s", image_channels=1, num_classes=10)
        >>> losses = model.loss({"images": x, "labels": y})          # x in [-1, 1]
        >>> images = model.sample(16, labels="balanced", seed=0, steps=50)   # uint8 [16, 1, 32, 32]
    """

    def __init__(
        self,
        denoiser: nn.Module,
        schedule: NoiseSchedule,
        *,
        prediction: str = "v",
        image_channels: int = 3,
        image_size: int = 32,
        num_classes: int = 0,
        cond_drop_prob: float = 0.1,
        sampler: str = "ddim",
        steps: int | None = None,
        eta: float = 0.0,
        guidance_scale: float = 1.0,
        card: WeightsCard | None = None,
        name: str = "",
    ) -> None:
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction={prediction!r} is not one of {PREDICTIONS}")
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler={sampler!r} is not one of {SAMPLERS}")
        if not 0.0 <= float(cond_drop_prob) <= 1.0:  # also refuses nan
            raise ValueError(
                f"cond_drop_prob={cond_drop_prob} is not a probability: it must be in [0, 1] (the share of training "
                "labels replaced by the null label; 0.1 is usual)"
            )
        self.denoiser = denoiser
        self.schedule = schedule
        self.prediction = prediction
        self.image_channels = int(image_channels)
        self.image_size = int(image_size)
        self.num_classes = int(num_classes)
        self.cond_drop_prob = float(cond_drop_prob) if self.num_classes > 0 else 0.0
        T = schedule.timesteps
        if steps is not None and not 1 <= int(steps) <= T:
            raise ValueError(
                f"steps={steps} is out of range: the schedule has T={T} timesteps, so steps must be in [1, {T}]"
            )
        self.default_steps = min(50, T) if steps is None else int(steps)
        self.default_sampler, self.default_eta = sampler, float(eta)
        self.default_guidance = float(guidance_scale)
        self._check_guidance(self.default_guidance, "guidance_scale")
        self.card = card
        self.name = name
        self.categories: list[str] | None = None

    @property
    def null_label(self) -> int:
        """The label index meaning "no class" (``num_classes``)."""
        return self.num_classes

    @property
    def guidable(self) -> bool:
        """Whether the model learnt the null label (class-conditional, trained with ``cond_drop_prob > 0``), which
        classifier-free guidance and unconditional samples (label ``-1``) need."""
        return self.num_classes > 0 and self.cond_drop_prob > 0

    @property
    def null_refusal(self) -> str | None:
        """Why ``labels=-1`` (an unconditional sample) cannot be asked of this model, or ``None`` when it can
        (:attr:`guidable`); see :func:`~vision.models.generation.common.resolve_labels`."""
        if self.guidable:
            return None
        return "it was trained with cond_drop_prob=0, so its null label is untrained"

    def _check_guidance(self, scale: float, key: str) -> None:
        if scale == 1.0 or self.guidable:
            return
        if self.num_classes <= 0:
            raise ValueError(
                f"{key} needs a class-conditional model (this one has num_classes=0): {key}={scale:g} is refused; "
                "use 1.0 (guidance off)"
            )
        raise ValueError(
            f"{key}={scale:g} needs a model trained with label dropout (cond_drop_prob > 0): this one was trained "
            "with cond_drop_prob=0, so its null-label embedding is untrained; use 1.0 (guidance off)"
        )

    def forward(self, x_t: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        """The denoiser output (of type ``prediction``) at noisy images ``x_t`` and timesteps ``t``."""
        return self.denoiser(x_t, t, labels if self.num_classes > 0 else None)

    # ------------------------------------------------------------------------------------------------ training
    def loss(self, batch: Mapping[str, Tensor] | Sequence[Tensor]) -> dict[str, Tensor]:
        """``{"mse": ...}`` for a batch ``{"images": float [B, C, H, W] in [-1, 1], "labels": int64 [B]}``."""
        images, labels = (batch["images"], batch.get("labels")) if isinstance(batch, Mapping) else batch
        B = images.shape[0]
        t = torch.randint(0, self.schedule.timesteps, (B,), device=images.device)
        noise = torch.randn_like(images)
        x_t = self.schedule.add_noise(images, noise, t)
        if self.num_classes > 0:
            if labels is None:
                raise ValueError("a class-conditional diffusion model needs labels in the batch")
            labels = labels.to(images.device).long()
            if self.training and self.cond_drop_prob > 0:
                drop = torch.rand(B, device=images.device) < self.cond_drop_prob
                labels = torch.where(drop, torch.full_like(labels, self.null_label), labels)
        else:
            labels = None
        out = self(x_t, t, labels)
        target = self.schedule.target(self.prediction, images, noise, t)
        return {"mse": F.mse_loss(out.float(), target.float())}

    # ------------------------------------------------------------------------------------------------ sampling
    def _guided(self, x: Tensor, t: int, labels: Tensor | None, scale: float, batch_size: int) -> Tensor:
        outs = []
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size]
            tb = torch.full((xb.shape[0],), t, device=x.device, dtype=torch.long)
            if labels is None:
                outs.append(self(xb, tb, None).float())
                continue
            lb = labels[start : start + batch_size]
            if scale == 1.0:
                outs.append(self(xb, tb, lb).float())
                continue
            null = torch.full_like(lb, self.null_label)
            both = self(torch.cat([xb, xb]), torch.cat([tb, tb]), torch.cat([lb, null])).float()
            cond, uncond = both.chunk(2)
            outs.append(uncond + scale * (cond - uncond))
        return torch.cat(outs)

    predict = generation_predict

    def sampling_settings(
        self,
        *,
        steps: int | None = None,
        guidance_scale: float | None = None,
        sampler: str | None = None,
        eta: float | None = None,
    ) -> dict[str, Any]:
        """What :meth:`sample` runs with for these arguments (``None``: the model's defaults), checked:
        ``{"sampler", "steps", "eta", "guidance_scale"}``. ``ddpm`` visits every timestep unless ``steps`` is given
        and is ``eta = 1`` (another ``eta`` is refused); ``steps`` above ``T`` are refused.

        Example:
            >>> model.sampling_settings(sampler="ddpm")     # {"sampler": "ddpm", "steps": 1000, "eta": 1.0, ...}
        """
        sampler = sampler or self.default_sampler
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler={sampler!r} is not one of {', '.join(SAMPLERS)}")
        T = self.schedule.timesteps
        if steps is None:
            steps = T if sampler == "ddpm" else self.default_steps
        if not 1 <= int(steps) <= T:
            raise ValueError(
                f"steps={steps} is out of range: this model has T={T} timesteps, so steps must be in [1, {T}]"
            )
        if sampler == "ddpm":
            if eta is not None and float(eta) != 1.0:
                raise ValueError(f"eta={eta} applies to sampler=ddim: ddpm samples the posterior (eta=1)")
            eta = 1.0
        eta = self.default_eta if eta is None else float(eta)
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta={eta} is out of range: eta must be in [0, 1]")
        scale = self.default_guidance if guidance_scale is None else float(guidance_scale)
        self._check_guidance(scale, "guidance_scale")
        return {"sampler": sampler, "steps": int(steps), "eta": eta, "guidance_scale": scale}

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        labels: LabelsArg = None,
        seed: int = 0,
        steps: int | None = None,
        guidance_scale: float | None = None,
        sampler: str | None = None,
        eta: float | None = None,
        batch_size: int = 256,
        device: torch.device | str | None = None,
        amp_dtype: torch.dtype | None = None,
        return_labels: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor | None]:
        """Generate ``n`` images.

        Args:
            n: number of images.
            labels: ``None`` (random classes), ``"balanced"`` (``0..K-1`` repeated), a class index, or ``n`` indices
                (``-1``: the null label, i.e. unconditional samples, for a model trained with ``cond_drop_prob > 0``).
                Must be ``None`` for an unconditional model.
            seed: every random number (labels, starting noise, per-step noise) comes from a CPU
                ``torch.Generator`` seeded with it and is then moved to the device, so a seed gives the same noise on
                every device (and the same images up to floating-point differences between devices).
            steps: denoiser evaluations in ``[1, T]``, more is refused (``None``: ``T`` for ``ddpm``, the model's
                default, ``min(50, T)``, for ``ddim``).
            guidance_scale: classifier-free guidance (``1.0``: off; see the module docstring); other values need a
                model trained with ``cond_drop_prob > 0``.
            sampler: ``"ddim"`` or ``"ddpm"``; eta: DDIM's noise scale in ``[0, 1]`` (0: deterministic).
            batch_size: images per denoiser call (the noise does not depend on it).
            device: where to run (default: the model's device).
            amp_dtype: autocast dtype on CUDA (``torch.bfloat16``) or ``None`` for float32.
            return_labels: also return the labels used (int64 ``[n]`` or ``None``).

        Returns:
            ``uint8 [n, C, H, W]`` on the CPU, values in ``[0, 255]`` (and the labels with ``return_labels``).
        """
        device = torch.device(device) if device is not None else next(self.parameters()).device
        run = self.sampling_settings(steps=steps, guidance_scale=guidance_scale, sampler=sampler, eta=eta)
        scale = run["guidance_scale"]
        generator = torch.Generator().manual_seed(int(seed))
        cpu_labels = resolve_labels(labels, n, self.num_classes, generator, null=self.null_refusal)
        shape = (n, self.image_channels, self.image_size, self.image_size)
        x_T = torch.randn(shape, generator=generator).to(device)
        lab = cpu_labels.to(device) if cpu_labels is not None else None
        was_training = self.training
        self.eval()
        try:
            with sampling_context(device, amp_dtype):
                x0 = run_sampler(
                    lambda x, t: self._guided(x, t, lab, scale, max(1, int(batch_size))),
                    x_T,
                    schedule=self.schedule,
                    prediction=self.prediction,
                    sampler=run["sampler"],
                    steps=run["steps"],
                    eta=run["eta"],
                    generator=generator,
                    clip=1.0,
                )
        finally:
            self.train(was_training)
        images = images_to_uint8(x0)
        return (images, cpu_labels) if return_labels else images


# ---------------------------------------------------------------------------------------------------- builders
_S = {"base_channels": 64, "channel_mult": (1, 2, 2), "num_res_blocks": 1, "attention_levels": (2,)}
_M = {"base_channels": 96, "channel_mult": (1, 2, 2), "num_res_blocks": 2, "attention_levels": (1, 2)}

_UNET_KEYS = ("base_channels", "channel_mult", "num_res_blocks", "attention_levels", "num_heads", "dropout")
_SCHEDULE_KEYS = ("timesteps", "schedule", "beta_start", "beta_end")


def _build(arch: dict[str, Any], name: str, card: WeightsCard | None, kwargs: dict[str, Any]) -> DiffusionModel:
    num_classes = int(kwargs.pop("num_classes", 10))
    channels = int(kwargs.pop("image_channels", 3))
    size = int(kwargs.pop("image_size", 32))
    unet_kwargs = {**arch, **{k: kwargs.pop(k) for k in _UNET_KEYS if k in kwargs}}
    sched_kwargs: dict[str, Any] = {"timesteps": 1000, "schedule": "cosine"}
    sched_kwargs.update({k: kwargs.pop(k) for k in _SCHEDULE_KEYS if k in kwargs})
    unet = UNet(in_channels=channels, num_classes=num_classes, **unet_kwargs)
    if size % unet.size_divisibility:
        raise ValueError(f"{name}: image_size={size} must be divisible by {unet.size_divisibility}")
    return DiffusionModel(
        unet,
        NoiseSchedule(**sched_kwargs),
        image_channels=channels,
        image_size=size,
        num_classes=num_classes,
        card=card,
        name=name,
        **kwargs,
    )


@MODELS.register("ddpm_unet_s", tags={"generation", "diffusion"}, task="generation")
def ddpm_unet_s(*, card: WeightsCard | None = None, **kwargs: Any) -> DiffusionModel:
    """Small class-conditional DDPM UNet (~4.7M parameters): 64 base channels, levels 32/16/8 px with multipliers
    (1, 2, 2), one residual block per level, attention at 8 px; cosine schedule, T = 1000, v-prediction.

    Keyword arguments: ``num_classes`` (10; 0 = unconditional), ``image_channels`` (3), ``image_size`` (32), UNet
    keys (``base_channels``, ``channel_mult``, ``num_res_blocks``, ``attention_levels``, ``num_heads``, ``dropout``),
    schedule keys (``timesteps``, ``schedule``, ``beta_start``, ``beta_end``), and :class:`DiffusionModel` keys
    (``prediction``, ``cond_drop_prob``, ``sampler``, ``steps``, ``eta``, ``guidance_scale``).
    """
    return _build(_S, "ddpm_unet_s", card, kwargs)


@MODELS.register("ddpm_unet_m", tags={"generation", "diffusion"}, task="generation")
def ddpm_unet_m(*, card: WeightsCard | None = None, **kwargs: Any) -> DiffusionModel:
    """Medium class-conditional DDPM UNet (~16M parameters): 96 base channels, multipliers (1, 2, 2), two residual
    blocks per level, attention at 16 and 8 px; otherwise as :func:`ddpm_unet_s`."""
    return _build(_M, "ddpm_unet_m", card, kwargs)
