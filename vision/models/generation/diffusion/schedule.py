"""The Gaussian noise schedule of DDPM/DDIM, in closed form, and the samplers built on it.

Papers: DDPM https://arxiv.org/abs/2006.11239 (forward process, posterior, ancestral sampling), improved DDPM
https://arxiv.org/abs/2102.09672 (cosine schedule, respacing), DDIM https://arxiv.org/abs/2010.02502 (the ``eta``
family of samplers), v-prediction https://arxiv.org/abs/2202.00512, trailing timestep spacing
https://arxiv.org/abs/2305.08891.

Conventions (all tested against their closed forms in ``tests/generation/test_schedule.py``):

- timesteps are integers ``t = 0 .. T-1``; ``beta_t`` is the variance added at step ``t``; ``alpha_t = 1 - beta_t``;
  ``alpha_bar_t = prod_{s <= t} alpha_s``; ``alpha_bar_{-1} = 1`` (clean data);
- forward process: ``x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps``;
- ``v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0``;
- the posterior between any two timesteps ``s < t`` (``s = t - 1`` for DDPM, ``s = -1`` for the last step):
  ``q(x_s | x_t, x_0) = N(c0 x_0 + ct x_t, var)`` with ``a = alpha_bar_t / alpha_bar_s``,
  ``c0 = sqrt(alpha_bar_s) (1 - a) / (1 - alpha_bar_t)``, ``ct = sqrt(a) (1 - alpha_bar_s) / (1 - alpha_bar_t)``,
  ``var = (1 - a) (1 - alpha_bar_s) / (1 - alpha_bar_t)``;
- DDIM step: ``x_s = sqrt(alpha_bar_s) x_0 + sqrt(1 - alpha_bar_s - sigma^2) eps + sigma z`` with
  ``sigma = eta sqrt(var)``. With ``eta = 1`` this *is* the posterior step above (same mean, same variance), so DDIM
  with every timestep and ``eta = 1`` is DDPM ancestral sampling; ``eta = 0`` is deterministic.

Everything is computed in float64 on the CPU once; per-step coefficients are Python floats, per-sample coefficients
(training) are gathered from float32 copies cached per device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["PREDICTIONS", "SAMPLERS", "SCHEDULES", "NoiseSchedule", "run_sampler"]

SCHEDULES = ("linear", "cosine")
PREDICTIONS = ("eps", "v", "x0")
SAMPLERS = ("ddpm", "ddim")


def _linear_betas(timesteps: int, beta_start: float, beta_end: float) -> np.ndarray:
    # DDPM's 1e-4 .. 0.02 over 1000 steps; scaled so that other lengths keep the same total noise
    scale = 1000.0 / timesteps
    return np.linspace(beta_start * scale, beta_end * scale, timesteps, dtype=np.float64)


def _cosine_betas(timesteps: int, s: float, max_beta: float) -> np.ndarray:
    steps = np.arange(timesteps + 1, dtype=np.float64) / timesteps
    f = np.cos((steps + s) / (1.0 + s) * math.pi / 2.0) ** 2
    alpha_bar = f / f[0]
    return np.clip(1.0 - alpha_bar[1:] / alpha_bar[:-1], 0.0, max_beta)


class NoiseSchedule:
    """A discrete variance schedule and its closed-form quantities.

    Args:
        timesteps: number of diffusion steps ``T``.
        schedule: ``"linear"`` (DDPM: ``beta`` from ``beta_start`` to ``beta_end``, scaled by ``1000 / T``) or
            ``"cosine"`` (improved DDPM: ``alpha_bar(t) = cos^2(((t / T) + s) / (1 + s) pi / 2)``, ``beta`` clipped
            to ``max_beta``).

    Attributes (float64 CPU tensors ``[T]``): ``betas``, ``alphas``, ``alphas_cumprod``, ``alphas_cumprod_prev``,
    ``sqrt_alphas_cumprod``, ``sqrt_one_minus_alphas_cumprod``, ``posterior_variance``,
    ``posterior_log_variance_clipped``, ``posterior_mean_coef1`` (of ``x_0``), ``posterior_mean_coef2`` (of ``x_t``).

    Example:
        >>> sched = NoiseSchedule(timesteps=1000, schedule="cosine")
        >>> x0, noise = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
        >>> x_t = sched.add_noise(x0, noise, torch.tensor([999, 999]))  # t: int or int64 [B]
        >>> x0_hat, eps_hat = sched.split_output("eps", noise, x_t, 999)  # from a denoiser's output (here: exact)
        >>> x_prev = sched.ddim_step(x_t, x0_hat, eps_hat, t=999, t_prev=979, eta=0.0)  # deterministic: no noise
        >>> x_prev.shape
        torch.Size([2, 1, 8, 8])
    """

    def __init__(
        self,
        *,
        timesteps: int = 1000,
        schedule: str = "linear",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        cosine_s: float = 0.008,
        max_beta: float = 0.999,
    ) -> None:
        if timesteps < 1:
            raise ValueError(f"timesteps must be >= 1, got {timesteps}")
        if schedule == "linear":
            betas = _linear_betas(timesteps, beta_start, beta_end)
        elif schedule == "cosine":
            betas = _cosine_betas(timesteps, cosine_s, max_beta)
        else:
            raise ValueError(f"schedule={schedule!r} is not one of {SCHEDULES}")
        if not (betas > 0).all() or not (betas < 1).all():
            raise ValueError(f"betas must lie in (0, 1); got [{betas.min()}, {betas.max()}] (too few timesteps?)")
        self.timesteps = int(timesteps)
        self.schedule = schedule
        alphas = 1.0 - betas
        alphas_cumprod = np.cumprod(alphas)
        prev = np.append(1.0, alphas_cumprod[:-1])
        posterior_variance = betas * (1.0 - prev) / (1.0 - alphas_cumprod)
        t64 = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))  # noqa: E731
        self.betas = t64(betas)
        self.alphas = t64(alphas)
        self.alphas_cumprod = t64(alphas_cumprod)
        self.alphas_cumprod_prev = t64(prev)
        self.sqrt_alphas_cumprod = t64(np.sqrt(alphas_cumprod))
        self.sqrt_one_minus_alphas_cumprod = t64(np.sqrt(1.0 - alphas_cumprod))
        self.posterior_variance = t64(posterior_variance)
        # the variance is 0 at t = 0: the log is clipped to the next value (as in DDPM's code)
        clipped = np.append(posterior_variance[1], posterior_variance[1:]) if timesteps > 1 else posterior_variance
        self.posterior_log_variance_clipped = t64(np.log(np.maximum(clipped, 1e-20)))
        self.posterior_mean_coef1 = t64(betas * np.sqrt(prev) / (1.0 - alphas_cumprod))
        self.posterior_mean_coef2 = t64((1.0 - prev) * np.sqrt(alphas) / (1.0 - alphas_cumprod))
        self._cache: dict[tuple[str, str], Tensor] = {}

    def __repr__(self) -> str:
        return f"NoiseSchedule(timesteps={self.timesteps}, schedule={self.schedule!r})"

    # ------------------------------------------------------------------------------------------------ scalars
    def alpha_bar(self, t: int) -> float:
        """``alpha_bar_t`` as a Python float; ``1.0`` for ``t < 0``."""
        return 1.0 if t < 0 else float(self.alphas_cumprod[t])

    def posterior_coefficients(self, t: int, t_prev: int) -> tuple[float, float, float]:
        """``(c0, ct, var)`` of ``q(x_{t_prev} | x_t, x_0) = N(c0 x_0 + ct x_t, var)`` for ``-1 <= t_prev < t``.

        For ``t_prev = t - 1`` these are ``posterior_mean_coef1[t]``, ``posterior_mean_coef2[t]`` and
        ``posterior_variance[t]``.
        """
        if not -1 <= t_prev < t < self.timesteps:
            raise ValueError(f"need -1 <= t_prev < t < {self.timesteps}, got t={t}, t_prev={t_prev}")
        ab_t, ab_s = self.alpha_bar(t), self.alpha_bar(t_prev)
        a = ab_t / ab_s
        c0 = math.sqrt(ab_s) * (1.0 - a) / (1.0 - ab_t)
        ct = math.sqrt(a) * (1.0 - ab_s) / (1.0 - ab_t)
        var = (1.0 - a) * (1.0 - ab_s) / (1.0 - ab_t)
        return c0, ct, var

    def ddim_sigma(self, t: int, t_prev: int, eta: float) -> float:
        """DDIM's ``sigma = eta * sqrt((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev))``."""
        return float(eta) * math.sqrt(self.posterior_coefficients(t, t_prev)[2])

    def sample_timesteps(self, steps: int | None = None) -> list[int]:
        """``steps`` timesteps from ``T - 1`` down, evenly spaced and trailing (the first is always ``T - 1``).

        ``steps = T`` (or ``None``) gives every timestep ``T - 1, ..., 0``; ``steps = 50`` with ``T = 1000`` gives
        ``999, 979, ..., 19`` (the sampler's last step then goes from 19 straight to clean data).
        """
        T = self.timesteps
        steps = T if steps is None else int(steps)
        if not 1 <= steps <= T:
            raise ValueError(
                f"steps={steps} is out of range: this schedule has T={T} timesteps, so steps must be in [1, {T}]"
            )
        ts = np.round(T - np.arange(steps) * (T / steps)).astype(np.int64) - 1
        return [int(t) for t in ts]

    # ------------------------------------------------------------------------------------------------ tensors
    def _gather(self, name: str, t: Tensor, like: Tensor) -> Tensor:
        key = (name, str(like.device))
        table = self._cache.get(key)
        if table is None:
            table = getattr(self, name).to(device=like.device, dtype=torch.float32)
            self._cache[key] = table
        return table[t].reshape(-1, *([1] * (like.dim() - 1)))

    def _coef(self, name: str, t: int | Tensor, like: Tensor) -> Tensor | float:
        if isinstance(t, Tensor):
            return self._gather(name, t.to(like.device).long(), like)
        return float(getattr(self, name)[int(t)])

    def add_noise(self, x0: Tensor, noise: Tensor, t: int | Tensor) -> Tensor:
        """``x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) noise``; ``t``: int or int64 ``[B]``."""
        return (
            self._coef("sqrt_alphas_cumprod", t, x0) * x0 + self._coef("sqrt_one_minus_alphas_cumprod", t, x0) * noise
        )

    def velocity(self, x0: Tensor, noise: Tensor, t: int | Tensor) -> Tensor:
        """The v-prediction target ``sqrt(alpha_bar_t) noise - sqrt(1 - alpha_bar_t) x_0``."""
        return (
            self._coef("sqrt_alphas_cumprod", t, x0) * noise - self._coef("sqrt_one_minus_alphas_cumprod", t, x0) * x0
        )

    def target(self, prediction: str, x0: Tensor, noise: Tensor, t: int | Tensor) -> Tensor:
        """The regression target of a denoiser predicting ``prediction`` (``"eps"``, ``"v"`` or ``"x0"``)."""
        if prediction == "eps":
            return noise
        if prediction == "v":
            return self.velocity(x0, noise, t)
        if prediction == "x0":
            return x0
        raise ValueError(f"prediction={prediction!r} is not one of {PREDICTIONS}")

    def split_output(self, prediction: str, output: Tensor, x_t: Tensor, t: int | Tensor) -> tuple[Tensor, Tensor]:
        """``(x0_hat, eps_hat)`` from a denoiser output of type ``prediction`` at ``x_t``."""
        sa = self._coef("sqrt_alphas_cumprod", t, x_t)
        so = self._coef("sqrt_one_minus_alphas_cumprod", t, x_t)
        if prediction == "eps":
            return (x_t - so * output) / sa, output
        if prediction == "v":
            return sa * x_t - so * output, so * x_t + sa * output
        if prediction == "x0":
            return output, (x_t - sa * output) / so
        raise ValueError(f"prediction={prediction!r} is not one of {PREDICTIONS}")

    def eps_from_x0(self, x0: Tensor, x_t: Tensor, t: int | Tensor) -> Tensor:
        """The noise consistent with ``x_t`` and ``x0``: ``(x_t - sqrt(ab_t) x0) / sqrt(1 - ab_t)``."""
        return (x_t - self._coef("sqrt_alphas_cumprod", t, x_t) * x0) / self._coef(
            "sqrt_one_minus_alphas_cumprod", t, x_t
        )

    def ddpm_step(self, x_t: Tensor, x0: Tensor, *, t: int, t_prev: int, noise: Tensor | None = None) -> Tensor:
        """One ancestral step: a sample of ``q(x_{t_prev} | x_t, x_0 = x0)`` (the mean when ``noise`` is None).

        ``x_t``, ``x0`` and ``noise`` (standard normal) are float ``[B, ...]`` of one shape; so is the result.
        """
        c0, ct, var = self.posterior_coefficients(t, t_prev)
        mean = c0 * x0 + ct * x_t
        if noise is None or var == 0.0:
            return mean
        return mean + math.sqrt(var) * noise

    def ddim_step(
        self, x_t: Tensor, x0: Tensor, eps: Tensor, *, t: int, t_prev: int, eta: float, noise: Tensor | None = None
    ) -> Tensor:
        """``x_prev = sqrt(ab_prev) x0 + sqrt(1 - ab_prev - sigma^2) eps + sigma noise`` (DDIM eq. 12).

        ``x_t``, ``x0``, ``eps`` and ``noise`` (standard normal) are float ``[B, ...]`` of one shape; so is the result.
        ``noise`` is only read when ``sigma > 0`` (``eta > 0`` and ``t_prev >= 0``); ``None`` (the default, all that
        ``eta = 0`` needs) leaves the ``sigma noise`` term out, giving the step's mean, as :meth:`ddpm_step` does.
        """
        ab_prev = self.alpha_bar(t_prev)
        sigma = self.ddim_sigma(t, t_prev, eta)
        out = math.sqrt(ab_prev) * x0 + math.sqrt(max(0.0, 1.0 - ab_prev - sigma**2)) * eps
        if sigma > 0.0 and noise is not None:
            out = out + sigma * noise
        return out


Denoiser = Callable[[Tensor, int], Tensor]


def run_sampler(
    denoise: Denoiser,
    x_T: Tensor,
    *,
    schedule: NoiseSchedule,
    prediction: str,
    sampler: str = "ddim",
    steps: int | None = None,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    clip: float | None = None,
    noise_fn: Callable[[Sequence[int]], Tensor] | None = None,
) -> Tensor:
    """Run a sampler from ``x_T`` (pure noise) down to ``x_0``.

    Args:
        denoise: ``(x_t, t) -> output`` of type ``prediction`` (the guided output for class-conditional models).
        x_T: starting noise, float ``[B, ...]`` on the device to sample on.
        sampler: ``"ddpm"`` (ancestral: a sample of the posterior at each step) or ``"ddim"`` (``eta`` in [0, 1]).
        steps: number of denoiser calls (default: ``T`` for ``ddpm``, ``min(50, T)`` for ``ddim``); any value in
            ``[1, T]`` (more is refused: there are only ``T`` timesteps to visit).
        generator: CPU generator the per-step noise is drawn from (then moved to ``x_T``'s device), so that the
            same seed gives the same noise on every device.
        clip: clip the predicted ``x_0`` to ``[-clip, clip]`` (``None``: no clipping); the noise estimate is then
            recomputed from the clipped ``x_0`` so that DDPM and DDIM(eta=1) stay the same update.
        noise_fn: ``shape -> noise`` override (tests); default ``torch.randn(shape, generator=generator)``.

    Returns:
        ``x_0`` samples, float ``[B, ...]``.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler={sampler!r} is not one of {SAMPLERS}")
    if sampler == "ddpm":
        eta = 1.0
        steps = schedule.timesteps if steps is None else steps
    elif not 0.0 <= float(eta) <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    timesteps = schedule.sample_timesteps(min(50, schedule.timesteps) if steps is None else int(steps))

    def draw(shape: Sequence[int]) -> Tensor:
        if noise_fn is not None:
            return noise_fn(shape).to(x_T.device, x_T.dtype)
        return torch.randn(tuple(shape), generator=generator, dtype=torch.float32).to(x_T.device, x_T.dtype)

    x = x_T
    for i, t in enumerate(timesteps):
        t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        output = denoise(x, t).to(x.dtype)
        x0, eps = schedule.split_output(prediction, output, x, t)
        if clip is not None:
            x0 = x0.clamp(-clip, clip)
            eps = schedule.eps_from_x0(x0, x, t)
        stochastic = eta > 0.0 and t_prev >= 0
        noise = draw(x.shape) if stochastic else None
        if sampler == "ddpm":
            x = schedule.ddpm_step(x, x0, t=t, t_prev=t_prev, noise=noise)
        else:
            x = schedule.ddim_step(x, x0, eps, t=t, t_prev=t_prev, eta=eta, noise=noise)
    return x
