"""The training loop shared by every task.

:class:`Trainer` owns: device and DDP setup, seeds and deterministic mode, the data loaders (reproducible order and
augmentation, see :mod:`vision.engine.sampler`), mixed precision (bf16 autocast on CUDA; fp16 with a grad scaler on
request), channels_last, the CPU step's batch in parallel parts (:mod:`vision.engine.replicas`), gradient accumulation
and clipping, EMA, per-iteration warmup + cosine/step schedules, layer freezing, the non-finite-loss guard,
validation, ``last``/``best`` checkpoints written atomically, exact resume (a pruned model's fine-tuning too),
``metrics.csv``, TensorBoard, plots, a live progress bar and an end-of-epoch table. Only rank 0 prints and writes.

Example:
    >>> from vision.engine import Trainer
    >>> from vision.engine.config import resolve_args
    >>> run_dir = Trainer(resolve_args(["recipe=resnet18_digits", "epochs=2"])).fit()
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vision.engine import distributed as D
from vision.engine._loaders import build_loaders
from vision.engine._nan_guard import NanGuard, NonFiniteLossError
from vision.engine._parts import LossModule, amp_dtype, freeze_parameters, seed_everything
from vision.engine.checkpoint import (
    capture_rng,
    load_resume_state,
    locate_resume,
    move_aside_old_run,
    restore_rng,
    restore_views,
    write_checkpoint,
)
from vision.engine.config import check_resume_epochs
from vision.engine.optim import build_optimizer, build_scheduler
from vision.engine.replicas import make_replicas, refuse_one_image_steps
from vision.engine.reporting import MetricsLogger, closing_lines, format_table, is_better, plot_curves
from vision.engine.task import Task, get_task
from vision.utils import increment_dir, pick_device, save_yaml
from vision.utils.keys import ArgumentError
from vision.utils.pruning import reshape_to_state

__all__ = ["NonFiniteLossError", "Trainer"]


class Trainer:
    """Train ``args["model"]`` on ``args["data"]`` for the task ``args["task"]``.

    Args:
        args: the resolved arguments (:func:`vision.engine.config.resolve_args`).
        task: an already built task (default: built from ``args["task"]``).
    """

    def __init__(self, args: dict[str, Any], *, task: Task | None = None) -> None:
        self.args = copy.deepcopy(args)
        self.task = task or get_task(self.args["task"])(self.args)
        self.task.args = self.args
        self.run_dir: Path | None = None
        self.resume_state: dict[str, Any] | None = None
        self._resume_file: Path | None = None
        self._partial: tuple[dict[str, Any], int] = ({}, 0)  # loss sums and steps of the epoch so far (for resume)
        self._finished: str | None = None  # a resumed run with nothing left to train: the line that says so
        if self.args.get("resume"):
            self._prepare_resume(str(self.args["resume"]))

    # ------------------------------------------------------------------------------------------------ set-up
    def _prepare_resume(self, target: str) -> None:
        # only complete checkpoint units; a run stopped before its first save finished starts again from epoch 1
        notes: list[str] = []
        try:
            self.run_dir, self._resume_file = locate_resume(target, log=notes.append, pruned=self.args.get("pruned"))
            self.resume_state = load_resume_state(self._resume_file) if self._resume_file else None
            if self.resume_state is not None:  # before anything is written: a finished run is left as it is
                self._finished = check_resume_epochs(int(self.args["epochs"]), self.resume_state, self.run_dir)
                if self._finished:
                    notes.clear()  # one line says it
        except ArgumentError:
            notes.clear()  # nothing resumes: the one error line says why
            raise
        finally:
            for note in notes if int(os.environ.get("RANK", "0")) == 0 else ():
                print(note, flush=True)

    def _setup_device(self) -> None:
        device = pick_device(self.args["device"])
        self.dist, self.device = D.setup(device)
        self.is_main = self.dist.is_main
        cuda = self.device.type == "cuda"
        self.amp_dtype = amp_dtype(self.args["amp"], cuda=cuda)
        cl = self.args["channels_last"]
        # auto: on CUDA always; on the CPU for models that say they run faster so (``prefers_channels_last``)
        self.channels_last: bool | None = (True if cuda else None) if cl == "auto" else bool(cl)
        if self.args["deterministic"]:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        elif cuda:
            torch.backends.cudnn.benchmark = True

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _build_loaders(self) -> None:
        # each loader draws its workers' seeds from its own generator, seeded per epoch (vision.engine._loaders)
        self.loaders = build_loaders(self.task, self.args, rank=self.dist.rank, world_size=self.dist.world_size,
                                     device=self.device, log=self._print)  # fmt: skip
        self.train_set, self.sampler, self.local_batch = (
            self.loaders.train_set,
            self.loaders.sampler,
            self.loaders.local_batch,
        )
        self.train_loader, self.val_loader = self.loaders.train, self.loaders.val

    def _build_model(self) -> None:
        model = self.task.build_model()
        if self.args.get("pruned") and self.resume_state is not None:  # vision prune's fewer channels, then its weights
            reshape_to_state(model, self.resume_state["model"])
        freeze_parameters(self.args.get("freeze") or 0, model)
        model.to(self.device)
        if self.channels_last is None:
            self.channels_last = bool(getattr(model, "prefers_channels_last", False))
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        if self.args["sync_bn"] and self.dist.enabled:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model
        self.manual = hasattr(model, "train_step") and hasattr(model, "configure_optimizers")
        steps_per_epoch = max(1, self.sampler.batches_per_epoch() // int(self.args["accumulate"]))
        self.steps_per_epoch = steps_per_epoch
        total = steps_per_epoch * int(self.args["epochs"])
        sched = {
            "total_steps": total,
            "warmup_steps": round(float(self.args["warmup_epochs"]) * steps_per_epoch),
            "schedule": self.args["schedule"],
            "min_lr_ratio": float(self.args["min_lr_ratio"]),
        }
        head = tuple(getattr(model, "new_head_prefixes", ()) or ())  # fine-tuning: the body trains more slowly
        lr, mult = float(self.args["lr"]), float(self.args.get("backbone_lr_mult", 1.0)) if head else 1.0
        if self.manual:
            self.optimizers = dict(model.configure_optimizers(self.args))
        else:
            self.optimizers = {
                "main": build_optimizer(
                    model,
                    name=self.args["optimizer"],
                    lr=lr,
                    momentum=float(self.args["momentum"]),
                    weight_decay=float(self.args["weight_decay"]),
                    head_prefixes=head,
                    backbone_lr_mult=mult,
                )
            }
            if head:
                self._print(f"fine-tuning: new head {', '.join(head)} at lr {lr:g}, pretrained body at lr {lr * mult:g}"
                            f" (backbone_lr_mult={mult:g})")  # fmt: skip
        self.schedulers = {k: build_scheduler(opt, **sched) for k, opt in self.optimizers.items()}
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.ema = None
        if self.args["ema"]:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(model, decay=float(self.args["ema_decay"]), use_warmup=True)
        self.ddp_model: nn.Module | None = None
        if not self.manual:
            wrapped = LossModule(model, self.task)
            if self.dist.enabled:
                ids = [self.device.index] if self.device.type == "cuda" else None
                wrapped = nn.parallel.DistributedDataParallel(wrapped, device_ids=ids)
            if self.args["compile"]:
                wrapped = torch.compile(wrapped)
            self.ddp_model = wrapped

    def eval_model(self) -> nn.Module:
        """The model to evaluate and save: the EMA copy when EMA is on."""
        return self.ema.module if self.ema is not None else self.model

    # ------------------------------------------------------------------------------------------------ checkpoints
    def _state(self, epoch: int, batch_in_epoch: int) -> dict[str, Any]:
        return {
            "format": "vision-zoo/train-state/1",
            "args": self.args,
            "epoch": epoch,
            "batch_in_epoch": batch_in_epoch,
            "step": self.step,
            "model": self.model.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "scaler": self.scaler.state_dict(),
            "rng": self._rng_all_ranks[0] if self._rng_all_ranks else capture_rng(),
            "rng_ranks": self._rng_all_ranks,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "skipped_steps": self.skipped_steps,
            "nan_guard": self.guard.state_dict(),
            "epoch_losses": {"sums": {k: float(v) for k, v in self._partial[0].items()}, "count": self._partial[1]},
        }

    def _meta(self, epoch: int) -> dict[str, Any]:
        return {
            "model": self.args["model"],
            "model_kwargs": self.args["model_kwargs"],
            "task": self.args["task"],
            "epoch": epoch,
            "step": self.step,
            **self.task.metadata(),
            **({"pruned": self.args["pruned"]} if self.args.get("pruned") else {}),  # load_model rebuilds the shapes
        }

    def _save(self, epoch: int, batch_in_epoch: int, *, best: bool) -> None:
        self.guard.check_weights(self.step)  # a checkpoint never holds non-finite weights
        # every rank's random state goes into the checkpoint, so a resumed DDP run continues each rank exactly
        self._rng_all_ranks = D.all_gather_objects(capture_rng()) if self.dist.enabled else []
        if not self.is_main:
            return
        write_checkpoint(  # one atomic unit: weights, resume state, manifest (see vision.engine.checkpoint)
            self.run_dir / "weights",
            weights=self.eval_model().state_dict(),
            metadata=self._meta(epoch),
            state=self._state(epoch, batch_in_epoch),
            epoch=epoch,
            step=self.step,
            batch_in_epoch=batch_in_epoch,
            best=best,
        )
        self.guard.note_checkpoint(epoch=epoch, batch_in_epoch=batch_in_epoch, step=self.step)

    def _restore(self, state: dict[str, Any]) -> tuple[int, int]:
        self.model.load_state_dict(state["model"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.module.load_state_dict(state["ema"])
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in self.schedulers.items():
            s.load_state_dict(state["schedulers"][k])
        self.scaler.load_state_dict(state["scaler"])
        ranks = state.get("rng_ranks") or []
        restore_rng(ranks[self.dist.rank] if len(ranks) == self.dist.world_size else state["rng"])
        self.step = int(state["step"])
        self.best = state["best"]
        self.best_epoch = int(state["best_epoch"])
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.guard.load_state_dict(state.get("nan_guard") or {})
        partial = state.get("epoch_losses") or {}
        self._partial = (dict(partial.get("sums") or {}), int(partial.get("count", 0)))
        epoch, batch = int(state["epoch"]), int(state["batch_in_epoch"])
        self.guard.note_checkpoint(epoch=epoch, batch_in_epoch=batch, step=self.step)
        return epoch, batch

    # ------------------------------------------------------------------------------------------------ the loop
    def _print(self, *parts: Any) -> None:
        if self.is_main:
            print(*parts, flush=True)

    def _check_finite(self, loss: torch.Tensor, losses: dict[str, torch.Tensor], epoch: int, i: int) -> bool:
        value = D.reduce_mean(loss.detach().float())
        if torch.isfinite(value).item():
            return True
        self.skipped_steps += 1
        self.guard.nonfinite_loss(float(value), losses, epoch=epoch, iteration=i, step=self.step)  # stops unless skip
        return False

    def _optimizer_step(self) -> None:
        opt = self.optimizers["main"]
        clip = float(self.args["clip_grad"])
        if clip > 0:
            self.scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.scaler.step(opt)
        self.scaler.update()
        opt.zero_grad(set_to_none=True)
        self.schedulers["main"].step()
        self.step += 1
        if self.ema is not None:
            self.ema.update(self.model, step=self.step)

    def _forward_backward(self, batch: Any, accumulate: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        def backward(loss: torch.Tensor) -> None:
            self.scaler.scale(loss / accumulate).backward()

        if self.replicas is not None and (done := self.replicas.step(batch, backward, self.autocast)) is not None:
            return done
        with self.autocast():
            losses = self.ddp_model(batch)
        loss = sum(losses.values())
        backward(loss)
        return losses, loss

    def _train_epoch(self, epoch: int, start_batch: int) -> dict[str, float]:
        from tqdm.auto import tqdm

        self.model.train()
        self.task.on_epoch_start(epoch, self.model)
        self.sampler.set_epoch(epoch, start_batch=start_batch)
        self.train_set.set_epoch(epoch)
        self.loaders.seed_epoch(epoch)  # the loaders' draws never touch the random state a checkpoint restores
        accumulate = int(self.args["accumulate"])
        total_batches = self.sampler.batches_per_epoch()
        # a resumed epoch's means include the steps before the interruption (kept in the checkpoint)
        sums, count = (dict(self._partial[0]), self._partial[1]) if start_batch else ({}, 0)
        bar = tqdm(
            self.train_loader,
            total=total_batches,
            initial=start_batch,
            disable=not self.is_main,
            desc=f"epoch {epoch + 1}/{self.args['epochs']}",
            mininterval=0.5 if sys.stderr.isatty() else 30,
            dynamic_ncols=True,
            leave=False,
        )
        save_period = int(self.args["save_period"])
        opt = self.optimizers.get("main")
        last_step = self.step
        for i, batch in enumerate(bar, start=start_batch):
            batch = self.task.prepare_batch(batch, self.device, train=True)
            if self.manual:  # the copy is kept only if this step's losses are finite
                self.guard.capture(epoch=epoch, iteration=i, step=self.step)
                logs = self.model.train_step(batch, self.optimizers, step=self.step, autocast=self.autocast)
                for s in self.schedulers.values():
                    s.step()
                self.step += 1
                if self.ema is not None:
                    self.ema.update(self.model, step=self.step)
                values = {k: float(v) for k, v in logs.items()}
                if all(math.isfinite(v) for v in values.values()):
                    self.guard.commit()
                else:
                    self._check_finite(
                        torch.tensor(float("nan")), {k: torch.tensor(v) for k, v in values.items()}, epoch, i
                    )
            else:
                last_micro = (i + 1) % accumulate == 0 or i + 1 == total_batches
                sync = contextlib.nullcontext() if last_micro or not self.dist.enabled else self.ddp_model.no_sync()
                with sync:
                    losses, loss = self._forward_backward(batch, accumulate)
                # checked after the backward pass is queued, so the host waits for the GPU only once per step
                if not self._check_finite(loss, losses, epoch, i):
                    opt.zero_grad(set_to_none=True)
                    continue
                if last_micro:  # the weights that gave this finite loss: the last finite state
                    self.guard.keep(epoch=epoch, iteration=i, step=self.step)
                    self._optimizer_step()
                values = {k: v.detach() for k, v in losses.items()}
                values["loss"] = loss.detach()
            count += 1
            if self.is_main and self.step != last_step:
                self.task.on_step_end(self.run_dir, self.step, self.eval_model())
            last_step = self.step
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            if self.is_main and (i % 10 == 0 or i + 1 == total_batches):  # reading the sums syncs: not every step
                post = {k: f"{float(v) / count:.4g}" for k, v in sums.items()}
                lr = next(iter(self.optimizers.values())).param_groups[0]["lr"]
                post["lr"] = f"{lr:.3g}"
                if self.device.type == "cuda":
                    post["mem"] = f"{torch.cuda.max_memory_allocated(self.device) / 2**30:.1f}G"
                bar.set_postfix(post, refresh=False)
            if save_period and self.step % save_period == 0 and (i + 1) % accumulate == 0 and i + 1 < total_batches:
                self._partial = (sums, count)
                self._save(epoch, i + 1, best=False)
        bar.close()
        self._partial = ({}, 0)
        means = {f"train_{k}" if k != "loss" else "train_loss": float(v) / max(1, count) for k, v in sums.items()}
        return means

    def _validate(self) -> dict[str, Any]:
        if self.val_loader is None:
            return {}
        return self.task.evaluate(self.eval_model(), self.val_loader, self.device, autocast=self.autocast)

    def fit(self) -> Path:
        """Train; returns the run folder. The last line printed names it."""
        if self._finished is not None:  # resumed with nothing to train (e.g. killed after its last save)
            if int(os.environ.get("RANK", "0")) == 0:
                if self._resume_file is not None:
                    restore_views(self._resume_file)  # a kill while placing last/best views: placed now
                print(self._finished, flush=True)
            return self.run_dir
        self._setup_device()
        if self.resume_state is None:
            seed_everything(int(self.args["seed"]))
        try:
            return self._fit()
        finally:
            D.cleanup()

    def _make_run_dir(self) -> None:
        if self.run_dir is None:
            root = Path(self.args["project"]) / self.args["task"]
            if self.is_main:
                if self.args["exist_ok"]:  # a run folder holds one run: an earlier one is moved aside first
                    move_aside_old_run(root / self.args["name"], log=self._print)
                self.run_dir = increment_dir(root, self.args["name"], exist_ok=bool(self.args["exist_ok"]))
            names = D.all_gather_objects(str(self.run_dir) if self.is_main else None)
            self.run_dir = Path(names[0])
        if self.is_main:
            save_yaml(self.run_dir / "args.yaml", self.args)

    def setup(self) -> None:
        """Pre-flight checks, loaders, model, run folder (created last: a failed start leaves none), optimiser and NaN
        guard, ready for the first epoch (``fit`` calls it; a benchmark timing single epochs calls it directly)."""
        self.task.preflight()  # resources needed later (e.g. evaluation networks), before anything is written
        self._build_loaders()
        self._build_model()
        self.replicas = make_replicas(  # the CPU step's batch in parallel parts, where that is exact
            self.model, self.task, requested=self.args["cpu_replicas"], local_batch=self.local_batch, log=self._print,
            single_cpu_process=self.device.type == "cpu" and not self.dist.enabled, loader=self.train_loader,
            plain_step=not self.manual and not self.args["compile"], device=self.device)  # fmt: skip
        if self.replicas is None and not self.manual:  # batch norm cannot train on steps of one image
            refuse_one_image_steps(self.model, self.task, loader=self.train_loader, device=self.device,
                                   batch=int(self.args["batch"]), world_size=self.dist.world_size)  # fmt: skip
        self._make_run_dir()  # only once data and model are built: a failed start leaves no run folder
        self.step, self.best, self.best_epoch, self.skipped_steps = 0, None, -1, 0
        self.guard = NanGuard(
            {"model": self.model, "ema": self.ema.module if self.ema is not None else None},
            policy=str(self.args["nan_policy"]),
            skip_limit=self.args.get("nan_skip_limit", 5),
            weights_dir=self.run_dir / "weights",
            writes=self.is_main,
            metadata=self._meta,
            print_fn=self._print,
            pin_memory=self.device.type == "cuda",
        )

    def _fit(self) -> Path:
        self.setup()
        self._rng_all_ranks: list[Any] = []
        if self.dist.enabled and self.resume_state is None:
            # the model was initialised identically everywhere; from here on each rank draws its own noise
            seed_everything(int(self.args["seed"]) + 7919 * self.dist.rank)
        start_epoch, start_batch = 0, 0
        if self.resume_state is not None:
            start_epoch, start_batch = self._restore(self.resume_state)
            if self.is_main and self._resume_file is not None:
                restore_views(self._resume_file)  # last/best as of the unit resumed from
            self._print(f"resuming {self.run_dir} at epoch {start_epoch + 1}, batch {start_batch}")
        logger = MetricsLogger(self.run_dir, tensorboard=bool(self.args["tensorboard"])) if self.is_main else None
        if logger is not None and self.args.get("resume"):  # also a restart of a run that had no checkpoint yet
            logger.truncate(start_epoch)
        epochs = int(self.args["epochs"])
        self._print(
            f"training {self.args['model']} ({self.args['task']}) on {self.args['data'] or 'built-in data'}: "
            f"{len(self.train_set)} images, {epochs} epochs, batch {self.args['batch']}, "
            f"device {self.device}{f' x{self.dist.world_size}' if self.dist.enabled else ''}, "
            f"amp {self.amp_dtype or 'off'} -> {self.run_dir}"
        )
        for epoch in range(start_epoch, epochs):
            t0 = time.perf_counter()
            train_stats = self._train_epoch(epoch, start_batch)
            self.guard.check_weights(self.step)  # before validation: no metrics, plots or best of non-finite weights
            start_batch = 0
            metrics: dict[str, Any] = {}
            if (epoch + 1) % int(self.args["val_period"]) == 0 or epoch + 1 == epochs:
                metrics = self._validate()
            scalars = self.task.scalar_metrics(metrics)
            main = scalars.get(self.task.main_metric)
            better = bool(metrics) and is_better(main, self.best, maximize=self.task.maximize)
            if better:
                self.best, self.best_epoch = main, epoch
            lr = next(iter(self.optimizers.values())).param_groups[0]["lr"]
            row = {"epoch": epoch + 1, "lr": lr, **train_stats, **scalars, "time": time.perf_counter() - t0}
            if self.is_main:  # the row first: a kill before the save repeats the epoch and rewrites the row
                logger.log(row)
                self._print(format_table(row))
                if self.args["plots"]:
                    plot_curves(self.run_dir / "metrics.csv", self.run_dir)
                self.task.on_epoch_end(self.run_dir, epoch + 1, metrics, self.eval_model())
            self._save(epoch + 1, 0, best=better)
        if logger is not None:
            logger.close()
        for line in closing_lines(self.task, self.args, best=self.best, best_epoch=self.best_epoch,
                                  skipped=self.skipped_steps, run_dir=self.run_dir):  # fmt: skip
            self._print(line)
        return self.run_dir
