"""The training loop's guard against non-finite losses and weights.

:class:`NanGuard` keeps, in CPU memory, a rolling copy of the last *finite state*: the model's (and the EMA model's)
weights that were just used for a step whose loss was finite, copied before the optimiser applies that step. Two
slots alternate, so a copy in progress never overwrites the last good one (models that step their own optimisers,
GANs, are copied before their step and the copy is kept only once the step's losses turn out finite).

The run stops with :class:`NonFiniteLossError` at a non-finite loss (``nan_policy=stop``), after ``nan_skip_limit``
consecutive skipped steps (``nan_policy=skip``), or when the weights themselves are non-finite at the end of an epoch
or before a save (so a checkpoint never holds them). Rank 0 then writes the copy to
``weights/last_finite.safetensors`` (the raw model beside it as ``last_finite.raw.safetensors`` when EMA is on),
never weights from after the divergence, and the error names the epoch, step and path it wrote and the last complete
checkpoint that ``resume=`` continues from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vision.engine.checkpoint import save_weights, where_in_run

__all__ = ["NanGuard", "NonFiniteLossError", "nonfinite_tensors"]


class NonFiniteLossError(FloatingPointError):
    """The loss (or the weights) became NaN or infinite; the message names where and what was written."""


def nonfinite_tensors(states: Mapping[str, Mapping[str, torch.Tensor] | None], limit: int = 3) -> list[str]:
    """Names (``model.fc.weight``) of up to ``limit`` floating-point tensors of ``states`` holding NaN or inf."""
    bad: list[str] = []
    for prefix, state in states.items():
        for key, value in (state or {}).items():
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                bad.append(f"{prefix}.{key}")
                if len(bad) >= limit:
                    return bad
    return bad


class NanGuard:
    """Rolling copy of the last finite state, consecutive-skip counting and the stop message.

    Args:
        modules: the modules to guard, by name (``{"model": ..., "ema": ...}``; ``None`` entries are ignored).
        policy: ``stop`` (stop at the first non-finite loss) or ``skip`` (skip such steps).
        skip_limit: with ``skip``, stop after this many consecutive skipped steps.
        weights_dir: the run's ``weights/`` folder, where the copy is written when the run stops.
        writes: whether this process writes (rank 0 only).
        metadata: ``metadata(epoch)`` -> the safetensors metadata of a weights file.
        print_fn: prints warnings (rank 0's print).
        pin_memory: keep the copy in pinned memory (CUDA: the copy then runs asynchronously).
    """

    def __init__(
        self,
        modules: Mapping[str, nn.Module | None],
        *,
        policy: str,
        skip_limit: int,
        weights_dir: Path,
        writes: bool = True,
        metadata: Callable[[int], dict[str, Any]],
        print_fn: Callable[..., Any] = print,
        pin_memory: bool = False,
    ) -> None:
        if policy not in ("stop", "skip"):
            raise ValueError(f"nan_policy={policy!r} is not one of stop, skip")
        if int(skip_limit) < 1:
            raise ValueError(f"nan_skip_limit={skip_limit} must be an integer >= 1")
        self.modules = {k: m for k, m in modules.items() if m is not None}
        self.policy, self.skip_limit = policy, int(skip_limit)
        self.weights_dir, self.writes, self.metadata = Path(weights_dir), writes, metadata
        self.print_fn, self.pin_memory = print_fn, pin_memory
        self.consecutive = 0
        self.last_checkpoint: str | None = None
        self._slots: list[dict[str, dict[str, torch.Tensor]]] = [{}, {}]
        self._info: list[dict[str, int]] = [{}, {}]
        self._good: int | None = None

    # ------------------------------------------------------------------------------------------ the rolling copy
    def capture(self, *, epoch: int, iteration: int, step: int) -> None:
        """Copy the guarded weights into the spare slot: used at ``epoch``/``iteration`` (0-based), after ``step``
        optimiser steps."""
        spare = 0 if self._good is None else 1 - self._good
        slot = self._slots[spare]
        dst: list[torch.Tensor] = []
        src: list[torch.Tensor] = []
        for name, module in self.modules.items():
            held_all = slot.setdefault(name, {})
            for key, value in module.state_dict(keep_vars=True).items():
                held = held_all.get(key)
                if held is None or held.shape != value.shape or held.dtype != value.dtype:
                    held = held_all[key] = torch.empty(value.shape, dtype=value.dtype, pin_memory=self.pin_memory)
                dst.append(held)
                src.append(value.detach())
        if dst:  # one multi-tensor copy (hundreds of small tensors: the per-tensor loop cost ~15 ms a step on the CPU)
            torch._foreach_copy_(dst, src, non_blocking=self.pin_memory)
        self._info[spare] = {"epoch": epoch, "iteration": iteration, "step": step}

    def commit(self) -> None:
        """The captured copy is finite state (its step's losses were finite); ends a run of skipped steps."""
        self._good = 0 if self._good is None else 1 - self._good
        self.consecutive = 0

    def keep(self, *, epoch: int, iteration: int, step: int) -> None:
        """:meth:`capture` then :meth:`commit`: the loss of the current weights is already known to be finite."""
        self.capture(epoch=epoch, iteration=iteration, step=step)
        self.commit()

    # ------------------------------------------------------------------------------------------ the checks
    def nonfinite_loss(self, value: float, losses: Mapping[str, Any], *, epoch: int, iteration: int, step: int) -> None:
        """A step's loss is ``value`` (NaN or inf): returns if the step is to be skipped, else stops the run.

        Raises:
            NonFiniteLossError: ``nan_policy=stop``, or the ``skip_limit``-th consecutive skipped step.
        """
        detail = ", ".join(f"{k}={float(torch.as_tensor(v).detach()):.4g}" for k, v in losses.items())
        where = f"epoch {epoch + 1}, iteration {iteration + 1} (global step {step + 1}) ({detail})"
        if self.policy == "stop":
            raise NonFiniteLossError(self.stop_message(f"loss is {value} at {where}"))
        self.consecutive += 1
        if self.consecutive >= self.skip_limit:
            reason = f"nan_policy=skip: {self.consecutive} consecutive steps had non-finite losses, the last at {where}"
            raise NonFiniteLossError(self.stop_message(reason))
        self.print_fn(f"warning: non-finite loss at {where}; step skipped")

    def check_weights(self, step: int) -> None:
        """Stop the run if a guarded weight is NaN or inf (at the end of an epoch and before every save).

        Raises:
            NonFiniteLossError: naming the first such tensors.
        """
        bad = nonfinite_tensors({k: m.state_dict() for k, m in self.modules.items()})
        if bad:
            raise NonFiniteLossError(self.stop_message(f"the weights are non-finite ({', '.join(bad)}) at step {step}"))

    def note_checkpoint(self, *, epoch: int, batch_in_epoch: int, step: int) -> None:
        """Remember the last complete checkpoint (``weights/last.state.pt``) for the stop message."""
        where = where_in_run(epoch, batch_in_epoch)
        self.last_checkpoint = f"{self.weights_dir / 'last.state.pt'} ({where}, step {step})"

    # ------------------------------------------------------------------------------------------ stopping
    def write(self) -> str:
        """Write the last finite copy (rank 0); returns a sentence naming what was written, or why nothing was."""
        if not self.writes:
            return ""
        if self._good is None:
            return "No step had a finite loss, so no finite weights were written."
        if self.pin_memory and torch.cuda.is_available():
            torch.cuda.synchronize()  # the asynchronous copies must have landed
        slot, info = self._slots[self._good], self._info[self._good]
        if nonfinite_tensors(slot):
            return "The last copy kept in memory is not finite either, so no weights were written."
        meta = {**self.metadata(info["epoch"]), "step": info["step"], "last_finite": True}
        self.weights_dir.mkdir(parents=True, exist_ok=True)
        main = "ema" if "ema" in slot else next(iter(slot))  # the weights inference uses
        written = str(save_weights(self.weights_dir / "last_finite.safetensors", slot[main], meta))
        if main == "ema" and "model" in slot:
            raw = save_weights(self.weights_dir / "last_finite.raw.safetensors", slot["model"], meta)
            written += f" (EMA weights; the raw model in {raw.name})"
        return (
            f"Wrote the last finite weights (after global step {info['step']}; they gave a finite loss at epoch "
            f"{info['epoch'] + 1}, iteration {info['iteration'] + 1}) to {written}."
        )

    def stop_message(self, reason: str) -> str:
        """The error of a run the guard stops: the reason, what was written, where a resume starts."""
        wrote = self.write()
        hint = "nan_policy=skip skips such steps" if self.policy == "stop" else "a lower lr or clip_grad may help"
        resume = (
            f"The last complete checkpoint is {self.last_checkpoint}: resume= continues from it"
            if self.last_checkpoint
            else "No checkpoint was completed before this"
        )
        return f"{reason}; the run stops. {wrote}{' ' if wrote else ''}{resume} ({hint})."

    # ------------------------------------------------------------------------------------------ exact resume
    def state_dict(self) -> dict[str, int]:
        """What an exact resume needs (the consecutive-skip count)."""
        return {"consecutive_skips": self.consecutive}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""
        self.consecutive = int(state.get("consecutive_skips", 0))
