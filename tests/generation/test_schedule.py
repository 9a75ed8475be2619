"""The noise schedule against its closed forms, and the samplers on a toy problem with an exact denoiser."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vision.models.generation.diffusion.schedule import NoiseSchedule, run_sampler


@pytest.fixture(scope="module", params=["linear", "cosine"])
def sched(request) -> NoiseSchedule:
    return NoiseSchedule(timesteps=1000, schedule=request.param)


def test_linear_betas_and_cumulative_products():
    s = NoiseSchedule(timesteps=1000, schedule="linear")
    np.testing.assert_allclose(s.betas.numpy(), np.linspace(1e-4, 0.02, 1000), rtol=0, atol=1e-15)
    np.testing.assert_allclose(s.alphas.numpy(), 1 - s.betas.numpy(), rtol=0, atol=0)
    np.testing.assert_allclose(s.alphas_cumprod.numpy(), np.cumprod(1 - np.linspace(1e-4, 0.02, 1000)), rtol=1e-12)
    # 500 steps keep the same total noise: the betas are scaled by 1000 / T
    half = NoiseSchedule(timesteps=500, schedule="linear")
    assert half.betas[0].item() == pytest.approx(2e-4) and half.betas[-1].item() == pytest.approx(0.04)


def test_cosine_alpha_bar_is_the_squared_cosine():
    s = NoiseSchedule(timesteps=1000, schedule="cosine")
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 1, 10, 250, 500, 900):  # before the beta clip at 0.999 kicks in
        assert s.alphas_cumprod[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-10)
    assert s.betas.max().item() <= 0.999


def test_posterior_quantities_match_the_closed_forms(sched):
    b = sched.betas.numpy()
    ab = sched.alphas_cumprod.numpy()
    prev = np.append(1.0, ab[:-1])
    np.testing.assert_allclose(sched.alphas_cumprod_prev.numpy(), prev, rtol=0, atol=0)
    np.testing.assert_allclose(sched.posterior_variance.numpy(), b * (1 - prev) / (1 - ab), rtol=1e-12)
    assert sched.posterior_variance[0].item() == 0.0
    np.testing.assert_allclose(sched.posterior_mean_coef1.numpy(), b * np.sqrt(prev) / (1 - ab), rtol=1e-12)
    np.testing.assert_allclose(sched.posterior_mean_coef2.numpy(), (1 - prev) * np.sqrt(1 - b) / (1 - ab), rtol=1e-12)
    np.testing.assert_allclose(
        sched.posterior_log_variance_clipped.numpy()[1:], np.log(sched.posterior_variance.numpy()[1:]), rtol=1e-12
    )
    for t in (1, 7, 500, 999):  # the general two-timestep posterior reduces to DDPM's for t_prev = t - 1
        c0, ct, var = sched.posterior_coefficients(t, t - 1)
        assert c0 == pytest.approx(sched.posterior_mean_coef1[t].item(), rel=1e-12)
        assert ct == pytest.approx(sched.posterior_mean_coef2[t].item(), rel=1e-12)
        assert var == pytest.approx(sched.posterior_variance[t].item(), rel=1e-12)
        assert sched.ddim_sigma(t, t - 1, 1.0) == pytest.approx(math.sqrt(var), rel=1e-12)


def test_posterior_is_the_conditional_of_the_joint_gaussian(sched):
    # q(x_s | x_t, x_0) from the joint Gaussian of (x_s, x_t) given x_0, for a jump s < t - 1
    t, s = 700, 400
    ab_t, ab_s = sched.alpha_bar(t), sched.alpha_bar(s)
    cov_st = math.sqrt(ab_t / ab_s) * (1 - ab_s)  # Cov(x_s, x_t | x_0)
    ct = cov_st / (1 - ab_t)
    c0 = math.sqrt(ab_s) - ct * math.sqrt(ab_t)
    var = (1 - ab_s) - cov_st**2 / (1 - ab_t)
    got = sched.posterior_coefficients(t, s)
    assert got == pytest.approx((c0, ct, var), rel=1e-9)


def test_noise_targets_and_their_inversion(sched):
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(6, 2, 4, 4, generator=g), torch.randn(6, 2, 4, 4, generator=g)
    t = torch.tensor([0, 1, 10, 400, 800, 999])
    x_t = sched.add_noise(x0, eps, t)
    sa = sched.sqrt_alphas_cumprod[t].float().view(-1, 1, 1, 1)
    so = sched.sqrt_one_minus_alphas_cumprod[t].float().view(-1, 1, 1, 1)
    torch.testing.assert_close(x_t, sa * x0 + so * eps)
    torch.testing.assert_close(sched.velocity(x0, eps, t), sa * eps - so * x0)
    for prediction in ("eps", "v", "x0"):
        x0_hat, eps_hat = sched.split_output(prediction, sched.target(prediction, x0, eps, t), x_t, t)
        keep = slice(0, 5) if prediction == "eps" else slice(None)  # eps -> x0 divides by sqrt(ab_999) ~ 0 (cosine)
        torch.testing.assert_close(x0_hat[keep], x0[keep], atol=2e-3, rtol=2e-3)
        keep = slice(1, None) if prediction == "x0" else slice(None)  # x0 -> eps divides by sqrt(1 - ab_0) ~ 0.01
        torch.testing.assert_close(eps_hat[keep], eps[keep], atol=2e-3, rtol=2e-3)


def test_ddim_step_closed_form(sched):
    g = torch.Generator().manual_seed(1)
    x_t, x0, eps, z = (torch.randn(3, 5, generator=g) for _ in range(4))
    t, s = 600, 580
    ab_t, ab_s = sched.alpha_bar(t), sched.alpha_bar(s)
    out = sched.ddim_step(x_t, x0, eps, t=t, t_prev=s, eta=0.0, noise=z)
    torch.testing.assert_close(out, math.sqrt(ab_s) * x0 + math.sqrt(1 - ab_s) * eps)
    eta = 0.5
    sigma = eta * math.sqrt((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s))
    assert sched.ddim_sigma(t, s, eta) == pytest.approx(sigma, rel=1e-12)
    out = sched.ddim_step(x_t, x0, eps, t=t, t_prev=s, eta=eta, noise=z)
    torch.testing.assert_close(out, math.sqrt(ab_s) * x0 + math.sqrt(1 - ab_s - sigma**2) * eps + sigma * z)
    # eta = 1 with the noise consistent with (x_t, x0) is exactly the ancestral (posterior) step
    eps_c = sched.eps_from_x0(x0, x_t, t)
    ddim = sched.ddim_step(x_t, x0, eps_c, t=t, t_prev=s, eta=1.0, noise=z)
    torch.testing.assert_close(ddim, sched.ddpm_step(x_t, x0, t=t, t_prev=s, noise=z), atol=1e-5, rtol=1e-5)
    # the last step lands on the predicted clean sample
    torch.testing.assert_close(sched.ddim_step(x_t, x0, eps, t=19, t_prev=-1, eta=1.0, noise=z), x0)


def test_sample_timesteps_are_trailing_and_exact():
    s = NoiseSchedule(timesteps=1000)
    assert s.sample_timesteps(None) == list(range(999, -1, -1))
    ts = s.sample_timesteps(50)
    assert ts[0] == 999 and ts[-1] == 19 and len(ts) == 50 and len(set(ts)) == 50
    assert (np.diff(ts) == -20).all()
    assert s.sample_timesteps(1) == [999]
    for n in (7, 10, 25, 33, 100, 999):
        ts = s.sample_timesteps(n)
        assert len(ts) == len(set(ts)) == n and ts == sorted(ts, reverse=True) and ts[0] == 999
    with pytest.raises(ValueError, match="steps"):
        s.sample_timesteps(1001)


# ---------------------------------------------------------------------------------------------------- toy problem
# Data: a 1-D two-component Gaussian mixture. The noised marginal at every t is again a mixture, so the optimal
# (minimum-MSE) noise prediction is known exactly: eps*(x_t) = -sqrt(1 - ab_t) * d/dx log p_t(x_t).
WEIGHTS, MEANS, STDS = np.array([0.3, 0.7]), np.array([-2.0, 1.5]), np.array([0.3, 0.5])


def _exact_eps(s: NoiseSchedule):
    w, mu, sd = (torch.tensor(a, dtype=torch.float64) for a in (WEIGHTS, MEANS, STDS))

    def denoise(x: torch.Tensor, t: int) -> torch.Tensor:
        ab = s.alpha_bar(t)
        m, v = math.sqrt(ab) * mu, ab * sd**2 + (1 - ab)
        xd = x.double().unsqueeze(-1)
        logp = torch.log(w) - 0.5 * torch.log(2 * math.pi * v) - 0.5 * (xd - m) ** 2 / v
        resp = torch.softmax(logp, dim=-1)
        score = (resp * (-(xd - m) / v)).sum(-1)
        return (-math.sqrt(1 - ab) * score).to(x.dtype)

    return denoise


def _moments(x: torch.Tensor) -> np.ndarray:
    x = x.double().flatten()
    return np.array([x.mean().item(), x.var().item(), (x > 0).double().mean().item()])


def _data_moments() -> np.ndarray:
    mean = float((WEIGHTS * MEANS).sum())
    var = float((WEIGHTS * (STDS**2 + MEANS**2)).sum() - mean**2)
    return np.array([mean, var, WEIGHTS[1]])  # the components barely overlap 0


def test_ddim_full_steps_eta1_is_ddpm_step_by_step():
    s = NoiseSchedule(timesteps=100, schedule="linear")
    denoise = _exact_eps(s)
    x_T = torch.randn(64, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def run(sampler, clip=None, **kw):
        g = torch.Generator().manual_seed(1)
        noise = lambda shape: torch.randn(tuple(shape), generator=g, dtype=torch.float64)  # noqa: E731
        return run_sampler(denoise, x_T, schedule=s, prediction="eps", sampler=sampler, clip=clip, noise_fn=noise, **kw)

    torch.testing.assert_close(run("ddpm"), run("ddim", steps=100, eta=1.0), atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(run("ddpm", 2.5), run("ddim", 2.5, steps=100, eta=1.0), atol=1e-9, rtol=1e-9)
    # with fewer steps the ancestral sampler is DDIM(eta=1) on the sub-sequence
    torch.testing.assert_close(run("ddpm", steps=20), run("ddim", steps=20, eta=1.0), atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize(
    ("sampler", "steps", "eta"),
    [("ddpm", None, 1.0), ("ddim", 250, 1.0), ("ddim", 50, 0.0), ("ddim", 100, 0.5)],
)
def test_samplers_reproduce_the_data_distribution(sampler, steps, eta):
    s = NoiseSchedule(timesteps=250, schedule="linear")
    g = torch.Generator().manual_seed(123)
    x_T = torch.randn(10000, 1, generator=g, dtype=torch.float64)
    out = run_sampler(
        _exact_eps(s), x_T, schedule=s, prediction="eps", sampler=sampler, steps=steps, eta=eta, generator=g
    )
    got, want = _moments(out), _data_moments()
    # 10000 samples: standard errors ~0.017 (mean), ~0.03 (variance), ~0.005 (weight of the right mode); the
    # discretisation of 250 (or fewer) steps shrinks the variance by up to ~0.08
    assert got[0] == pytest.approx(want[0], abs=0.07), (got, want)
    assert got[1] == pytest.approx(want[1], abs=0.15), (got, want)
    assert got[2] == pytest.approx(want[2], abs=0.02), (got, want)
    # and the modes keep their widths: the spread inside the right component
    right = out[out > 0]
    assert right.std().item() == pytest.approx(STDS[1], abs=0.05)


def test_v_prediction_sampler_matches_eps_sampler():
    s = NoiseSchedule(timesteps=1000, schedule="cosine")
    eps_fn = _exact_eps(s)

    def v_fn(x, t):  # the same exact denoiser expressed as v
        ab = s.alpha_bar(t)
        eps = eps_fn(x, t)
        x0 = (x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
        return math.sqrt(ab) * eps - math.sqrt(1 - ab) * x0

    x_T = torch.randn(512, 1, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    a = run_sampler(eps_fn, x_T, schedule=s, prediction="eps", sampler="ddim", steps=25)
    b = run_sampler(v_fn, x_T, schedule=s, prediction="v", sampler="ddim", steps=25)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
