"""Generative models on digits: train each recipe, sample, and print the quality table and the DDIM quality-vs-time
table.

For every recipe (``zoo/<name>.yaml``) the script trains through the engine (``Trainer``), reloads the run's saved
weights (the EMA weights), samples ``--samples`` class-balanced images (DDIM-50 without guidance for diffusion models)
and scores them with :class:`vision.tasks.generation.metrics.GenerationEvaluator`: ``fd_digits`` (Fréchet distance in
the shipped digits classifier's features — not FID) and its held-out-real floor at the same sample count, the class
accuracy of the samples, class coverage, and the nearest-neighbour distance to the training set relative to held-out
real images (memorisation). Diffusion models are then sampled with DDIM at ``--ddim-steps`` (10/25/50/100) steps:
seconds, images per second and quality per setting. ``--fid`` adds FID/KID with the standard Inception weights
(downloaded once into the cache, SHA-256 checked).

    python benchmarks/generation.py                                   # all recipes, full size (one GPU)
    python benchmarks/generation.py --recipes ddpm_digits,sngan_digits
    python benchmarks/generation.py --toy --device cpu                # a CPU smoke run at toy size (minutes)
    python benchmarks/generation.py --runs runs/generation/ddpm_digits   # evaluate finished runs, no training

Targets of issue 8 (one H100): ``ddpm_digits`` with DDIM-50, no guidance: fd_digits <= 1.5x the floor and class accuracy
>= 0.9, trained in under 3 minutes; ``sngan_digits``: fd_digits < 3.5x the floor with every class present (coverage
1.0), in under 2 minutes. The ``target`` column says whether a run met them.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

RECIPES = ("ddpm_digits", "sngan_digits", "dcgan_digits", "projected_gan_digits", "ddpm_m_digits")
TARGETS = {"ddpm_digits": (1.5, 0.9), "sngan_digits": (3.5, None)}  # (max fd ratio, min class accuracy)

# toy overrides: CPU-sized networks and schedules that still show learning
TOY = {
    "ddpm_digits": ["model_kwargs.base_channels=16", "epochs=3", "repeat=2", "batch=64", "lr=0.001", "val_period=3"],
    "ddpm_m_digits": ["model_kwargs.base_channels=16", "epochs=2", "repeat=1", "batch=64", "lr=0.001"],
    "sngan_digits": ["model_kwargs.g_channels=32", "model_kwargs.d_channels=32", "epochs=3", "repeat=2", "batch=64"],
    "dcgan_digits": ["model_kwargs.g_channels=16", "model_kwargs.d_channels=16", "epochs=3", "repeat=2", "batch=64"],
    "projected_gan_digits": [
        "model_kwargs.g_channels=32",
        "model_kwargs.proj_channels=[16,32,64,64]",
        "model_kwargs.input_size=32",
        "epochs=2",
        "repeat=1",
        "batch=32",
    ],
}
TOY_COMMON = ["workers=0", "eval_samples=200", "eval_steps=10", "sample_every=0", "val_period=100", "tensorboard=false"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _digits(channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    from vision.data import Digits

    train, val = Digits("train", size=32), Digits("val", size=32)
    pick = lambda ds: torch.stack([ds[i][0][:channels] for i in range(len(ds))])  # noqa: E731
    return pick(train), pick(val)


def train_recipe(recipe: str, args: argparse.Namespace) -> tuple[Path, float]:
    from vision.engine import Trainer
    from vision.engine.config import resolve_args

    argv = [f"recipe={recipe}", f"project={args.project}", f"name={recipe}", "exist_ok=true", f"device={args.device}"]
    if args.toy:
        argv += TOY_COMMON + TOY.get(recipe, [])
    argv += args.override
    t0 = time.perf_counter()
    run = Trainer(resolve_args(argv)).fit()
    return run, time.perf_counter() - t0


def _sample(model: Any, n: int, device: torch.device, **kwargs: Any) -> tuple[torch.Tensor, Any, float]:
    amp = torch.bfloat16 if device.type == "cuda" else None
    labels = "balanced" if getattr(model, "num_classes", 0) else None
    model.sample(min(n, 16), labels=labels, seed=1, device=device, amp_dtype=amp, **kwargs)  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    images, used = model.sample(
        n, labels=labels, seed=0, device=device, amp_dtype=amp, batch_size=500, return_labels=True, **kwargs
    )
    _sync(device)
    return images, used, time.perf_counter() - t0


def _fmt(value: Any, spec: str = ".3f") -> str:
    if value is None:
        return "-"
    return format(value, spec) if isinstance(value, float) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated zoo recipes")
    parser.add_argument("--runs", default="", help="comma-separated finished run folders to evaluate (no training)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--samples", type=int, default=1000, help="images per evaluation")
    parser.add_argument("--ddim-steps", default="10,25,50,100")
    parser.add_argument("--toy", action="store_true", help="tiny networks and schedules (CPU smoke run)")
    parser.add_argument("--fid", action="store_true", help="also FID/KID (downloads the Inception weights once)")
    parser.add_argument("--project", default="runs/bench_generation")
    parser.add_argument("--override", nargs="*", default=[], help="extra key=value for every training run")
    args = parser.parse_args()
    if args.toy:
        args.samples = min(args.samples, 200)

    from vision import load_model
    from vision.tasks.generation.metrics import GenerationEvaluator, fid_inception_v3

    device = torch.device(args.device)
    runs: list[tuple[str, Path, float | None]] = []
    if args.runs:
        runs = [(Path(r).name, Path(r), None) for r in args.runs.split(",") if r]
    else:
        for recipe in [r for r in args.recipes.split(",") if r]:
            run, seconds = train_recipe(recipe, args)
            runs.append((recipe, run, seconds))

    evaluators: dict[int, GenerationEvaluator] = {}
    fid_net = fid_inception_v3(device=device) if args.fid else None
    rows, ddim_rows = [], []
    for recipe, run, seconds in runs:
        model = load_model(run).to(device).eval()
        channels = int(model.image_channels)
        if channels not in evaluators:
            evaluators[channels] = GenerationEvaluator(*_digits(channels), fid_net=fid_net, device=device)
        ev = evaluators[channels]
        diffusion = hasattr(model, "schedule")
        kwargs = {"sampler": "ddim", "steps": 50, "eta": 0.0, "guidance_scale": 1.0} if diffusion else {}
        images, labels, t_sample = _sample(model, args.samples, device, **kwargs)
        m = ev(images, labels)
        ratio_max, acc_min = TARGETS.get(recipe, (None, None))
        target = "-"
        if ratio_max is not None:
            ok = m["fd_digits_ratio"] <= ratio_max and m.get("class_coverage", 1.0) == 1.0
            ok = ok and (acc_min is None or m.get("class_acc", 0.0) >= acc_min)
            target = "met" if ok else "NOT met"
        rows.append(
            [
                recipe,
                f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M",
                _fmt(seconds, ".0f"),
                _fmt(m["fd_digits"], ".4f"),
                _fmt(m["fd_digits_floor"], ".4f"),
                _fmt(m["fd_digits_ratio"], ".2f"),
                _fmt(m.get("class_acc")),
                _fmt(m.get("class_coverage"), ".2f"),
                _fmt(min(m["class_fractions"]) if "class_fractions" in m else None, ".3f"),
                _fmt(m["nn_ratio"], ".2f"),
                f"{t_sample:.2f}",
                _fmt(m.get("fid"), ".2f"),
                _fmt(m.get("kid"), ".4f"),
                target,
            ]
        )
        if diffusion:
            for steps in [int(s) for s in args.ddim_steps.split(",") if s]:
                kw = {**kwargs, "steps": steps}
                images, labels, t = _sample(model, args.samples, device, **kw)
                q = ev(images, labels)
                ddim_rows.append(
                    [
                        recipe,
                        str(steps),
                        f"{t:.2f}",
                        f"{args.samples / t:.1f}",
                        f"{q['fd_digits']:.4f}",
                        f"{q['fd_digits_ratio']:.2f}",
                        _fmt(q.get("class_acc")),
                    ]
                )

    print(f"\ngeneration on digits: {args.samples} class-balanced samples per model, device {device}", end="")
    print(" (TOY settings: tiny networks, short schedules)" if args.toy else "")
    print(f"held-out floor: fd_digits of the {len(next(iter(evaluators.values())).heldout_images)} real val images")
    _table(
        [
            "model",
            "params",
            "train s",
            "fd_digits",
            "floor",
            "ratio",
            "class acc",
            "coverage",
            "min frac",
            "nn ratio",
            "sample s",
            "FID",
            "KID",
            "target",
        ],
        rows,
    )
    if ddim_rows:
        print("\nDDIM steps: quality vs time (eta 0, no guidance)")
        _table(["model", "steps", "seconds", "images/s", "fd_digits", "ratio", "class acc"], ddim_rows)


def _table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))


if __name__ == "__main__":
    main()
