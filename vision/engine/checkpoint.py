"""Checkpoints: one atomic unit per save, resumed exactly, loaded for inference.

A run folder's ``weights/`` holds::

    ckpt/e0002-s00000022/      one save = one folder (a "unit"), complete once it carries its final name:
        weights.safetensors    the weights to use (the EMA weights when EMA is on), with metadata (model name,
                               epoch, step, class names) in the safetensors header
        state.pt               everything an exact resume needs (raw model and EMA weights, optimiser, scheduler,
                               grad-scaler, RNG states, epoch, batch position, best metric)
        manifest.json          written last: epoch, step, and the size and SHA-256 of each file above
    ckpt/.tmp-e0003-.../       a save in progress; one left by a killed run is ignored and removed by the next save
    last.safetensors           the newest unit's weights  } hard links to the unit's files (copies where the file
    last.state.pt              the newest unit's state    } system has none), each replaced atomically; what
    best.safetensors           the best epoch's weights   } ``tools/infer.py`` and :func:`vision.load_model` read
    last_finite.safetensors    only after a non-finite loss: the last weights that gave a finite loss

Design (a folder renamed into place, rather than a manifest beside fixed file names): a save serialises the weights
and the state in memory, writes them into ``ckpt/.tmp-<name>/`` with ``manifest.json`` last, fsyncs, and renames the
folder to ``ckpt/<name>`` in one atomic step; only then are the ``last``/``best`` views replaced and units older than
the newest two removed. So the previous complete unit is never touched while a new one is being written, and a kill
at any moment leaves at least one complete unit once the first save has finished.

Resume (:func:`locate_resume`) reads only units with their final name whose files match their manifest (size and
SHA-256), newest first; a damaged one is reported and the previous complete one used; when every unit is damaged,
resume refuses (starting again would overwrite the run's weights). A run killed before its first save finished has no
unit: resuming it starts it again from epoch 1 with its ``args.yaml``, saying so (except the fine-tuning of a model
written by ``vision prune``: its pruned weights exist only in its checkpoints, so that is refused). Run folders
written before units existed (a bare ``weights/last.state.pt``) still resume.

An ``OSError`` during a save (disk full, quota, permissions) raises :class:`CheckpointError`, naming the file and the
cause; the partial temporary folder or file is removed and the last complete unit, with the views pointing at it,
stays as it was.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vision.engine._rng import capture_rng, restore_rng
from vision.utils.pruning import checkpoint_pruned, pruned_restart_refused

__all__ = [
    "CheckpointError",
    "CheckpointUnit",
    "atomic_torch_save",
    "capture_rng",
    "find_resume_state",
    "load_resume_state",
    "locate_resume",
    "move_aside_old_run",
    "restore_rng",
    "restore_views",
    "resume_args",
    "save_weights",
    "write_checkpoint",
]

UNITS = "ckpt"
_UNIT_NAME = re.compile(r"e(\d+)-s(\d+)")
_FORMAT = "vision-zoo/checkpoint/1"

Log = Callable[[str], Any] | None


class CheckpointError(OSError):
    """A checkpoint file could not be written; the message names the file, the cause and what was kept."""


def where_in_run(epochs_done: int, batch_in_epoch: int) -> str:
    """``end of epoch 2`` or, mid-epoch, ``epoch 3, batch 5`` (1-based epoch, batches done in it)."""
    return f"epoch {epochs_done + 1}, batch {batch_in_epoch}" if batch_in_epoch else f"end of epoch {epochs_done}"


@dataclass(frozen=True)
class CheckpointUnit:
    """One complete save: ``path`` is its folder (``weights/ckpt/e<epoch>-s<step>``)."""

    path: Path
    epoch: int
    step: int
    batch_in_epoch: int = 0
    best: bool = False

    @property
    def weights(self) -> Path:
        return self.path / "weights.safetensors"

    @property
    def state(self) -> Path:
        return self.path / "state.pt"

    def describe(self) -> str:
        """``<folder> (end of epoch E, step S)`` or ``<folder> (epoch E, batch B, step S)``."""
        return f"{self.path} ({where_in_run(self.epoch, self.batch_in_epoch)}, step {self.step})"


# ------------------------------------------------------------------------------------------------ writing
def _write_file(path: Path, data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` and fsync it (the one place a checkpoint's bytes reach the disk)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":  # folders cannot be opened for fsync on Windows
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _why(err: OSError) -> str:
    code = errno.errorcode.get(err.errno or 0)
    return f"{err.strerror or err}" + (f" ({code})" if code else "")


def _remove(path: Path) -> None:
    """Remove a partial file or folder, ignoring errors (clean-up must not hide the failure being reported)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def _write_atomic(path: Path, data: bytes | memoryview) -> Path:
    """``data`` to ``path.tmp``, fsync, rename; an ``OSError`` becomes a :class:`CheckpointError` naming ``path``."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        _write_file(tmp, data)
        os.replace(tmp, path)
    except OSError as err:
        _remove(tmp)
        raise CheckpointError(
            err.errno, f"could not write {path}: {_why(err)}; the partial {tmp.name} was removed"
        ) from err
    return path


def _safetensors_bytes(state: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]) -> bytes:
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, value in state.items():
        t = value.detach().cpu().contiguous()
        ptr = t.untyped_storage().data_ptr() if t.numel() else -1
        if ptr in seen:  # safetensors refuses shared storage; tied weights are stored twice
            t = t.clone()
        elif ptr != -1:
            seen.add(ptr)
        tensors[key] = t
    return save(tensors, metadata={k: json.dumps(v) for k, v in metadata.items()})


def _torch_bytes(obj: Any) -> memoryview:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getbuffer()


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` to ``path.tmp``, fsync, rename (:class:`CheckpointError` naming the file on an ``OSError``)."""
    return _write_atomic(Path(path), _torch_bytes(obj))


def save_weights(path: str | os.PathLike[str], state: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]) -> Path:
    """Write a state dict as safetensors atomically; ``metadata`` values are stored as JSON strings."""
    return _write_atomic(Path(path), _safetensors_bytes(state, metadata))


def _place_view(source: Path, view: Path) -> None:
    """Make ``view`` a hard link to ``source`` (a copy where links are not possible), replaced atomically."""
    if view.exists() and os.path.samefile(source, view):
        return
    tmp = view.with_name(view.name + ".tmp")
    _remove(tmp)
    try:
        try:
            os.link(source, tmp)
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO):
                raise
            shutil.copyfile(source, tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, view)
    except OSError as err:
        _remove(tmp)
        raise CheckpointError(
            err.errno,
            f"could not write {view}: {_why(err)}; the partial {tmp.name} was removed (the checkpoint "
            f"{source.parent} itself is complete)",
        ) from err


def write_checkpoint(
    weights_dir: str | os.PathLike[str],
    *,
    weights: Mapping[str, torch.Tensor],
    metadata: Mapping[str, Any],
    state: Mapping[str, Any],
    epoch: int,
    step: int,
    batch_in_epoch: int = 0,
    best: bool = False,
    keep: int = 2,
) -> CheckpointUnit:
    """Write one checkpoint unit atomically, point ``last.*`` (and ``best.safetensors`` if ``best``) at it and keep
    the newest ``keep`` units.

    Raises:
        CheckpointError: an ``OSError`` while writing, naming the file and the cause; the partial temporary folder
            is removed and the previous complete unit kept.
    """
    root = Path(weights_dir)
    units = root / UNITS
    name = f"e{epoch:04d}-s{step:08d}"
    unit = CheckpointUnit(units / name, epoch, step, batch_in_epoch, best)
    tmp = units / f".tmp-{name}"
    files = {"weights.safetensors": _safetensors_bytes(weights, metadata), "state.pt": _torch_bytes(state)}
    manifest = {
        "format": _FORMAT,
        "epoch": epoch,
        "step": step,
        "batch_in_epoch": batch_in_epoch,
        "best": best,
        "files": {k: {"size": len(v), "sha256": hashlib.sha256(v).hexdigest()} for k, v in files.items()},
    }
    files["manifest.json"] = json.dumps(manifest, indent=1).encode()
    current = tmp
    try:
        units.mkdir(parents=True, exist_ok=True)
        _remove(tmp)
        tmp.mkdir()
        for file_name, data in files.items():
            current = tmp / file_name
            _write_file(current, data)
        current = tmp
        _fsync_dir(tmp)
        if unit.path.exists():  # a damaged unit of this step, resumed past by a fall-back: replaced
            shutil.rmtree(unit.path)
        current = unit.path
        os.rename(tmp, unit.path)
        _fsync_dir(units)
    except OSError as err:
        _remove(tmp)
        kept = next(iter(complete_units(root)), None)
        raise CheckpointError(
            err.errno,
            f"could not write checkpoint file {current}: {_why(err)}; removed the partial {tmp}; the last complete "
            f"checkpoint is kept: {kept.describe() if kept else 'none yet'}",
        ) from err
    _place_view(unit.weights, root / "last.safetensors")
    _place_view(unit.state, root / "last.state.pt")
    if best:
        _place_view(unit.weights, root / "best.safetensors")
    _prune(units, unit, keep)
    return unit


def _prune(units: Path, newest: CheckpointUnit, keep: int) -> None:
    """Remove interrupted saves, units of a discarded future (after a fall-back) and all but the newest ``keep``."""
    kept = 0
    for path in sorted(units.iterdir(), key=lambda p: _unit_key(p) or (-1, -1), reverse=True):
        key = _unit_key(path)
        if path.name.startswith(".tmp-") or (key is not None and key[0] > newest.step):
            _remove(path)
        elif key is not None:
            kept += 1
            if kept > keep:
                _remove(path)


# ------------------------------------------------------------------------------------------------ reading
def _unit_key(path: Path) -> tuple[int, int] | None:
    match = _UNIT_NAME.fullmatch(path.name)
    return (int(match[2]), int(match[1])) if match and path.is_dir() else None


def verify_unit(path: str | os.PathLike[str]) -> CheckpointUnit:
    """Check a unit's files against its manifest (size, SHA-256).

    Raises:
        ValueError: saying what does not match.
    """
    p = Path(path)
    try:
        manifest = json.loads((p / "manifest.json").read_text(encoding="utf-8"))
        entries = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"its manifest.json is missing or unreadable ({err})") from None
    for file_name, entry in entries.items():
        f = p / file_name
        if not f.is_file():
            raise ValueError(f"{file_name} is missing")
        size = f.stat().st_size
        if size != entry["size"]:
            raise ValueError(f"{file_name} holds {size} bytes, its manifest says {entry['size']}")
        digest = hashlib.sha256()
        with open(f, "rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                digest.update(chunk)
        if digest.hexdigest() != entry["sha256"]:
            raise ValueError(f"{file_name} does not match its SHA-256")
    return CheckpointUnit(
        p, int(manifest["epoch"]), int(manifest["step"]), int(manifest["batch_in_epoch"]), bool(manifest["best"])
    )


def complete_units(weights_dir: str | os.PathLike[str], *, log: Log = None) -> list[CheckpointUnit]:
    """The complete, undamaged units of a ``weights/`` folder, newest first (damaged ones reported to ``log``)."""
    units = Path(weights_dir) / UNITS
    if not units.is_dir():
        return []
    out: list[CheckpointUnit] = []
    candidates = sorted((p for p in units.iterdir() if _unit_key(p)), key=_unit_key, reverse=True)  # type: ignore[arg-type]
    for p in candidates:
        try:
            out.append(verify_unit(p))
        except ValueError as err:
            if log:
                log(f"resume: checkpoint {p} is damaged ({err}); falling back to the previous complete one")
    return out


def _damage(unit: Path) -> str:
    """What :func:`verify_unit` finds wrong with ``unit``."""
    try:
        verify_unit(unit)
    except ValueError as err:
        return str(err)
    return "intact"


def _run_of(state_file: Path) -> Path:
    parent = state_file.parent
    if parent.parent.name == UNITS:
        return parent.parents[2]
    return parent.parent if parent.name == "weights" else parent


def locate_resume(
    target: str | os.PathLike[str], *, log: Log = None, pruned: Mapping[str, Any] | None = None
) -> tuple[Path, Path | None]:
    """``(run folder, state file)`` to resume ``target`` (a run folder, a unit folder or a state/weights file).

    The state file is the newest complete unit's; ``None`` when the run stopped before its first save finished (it
    then starts again from epoch 1 with its ``args.yaml``). Messages (fall-backs, interrupted saves) go to ``log``.

    Raises:
        FileNotFoundError: nothing to resume: no complete checkpoint and no ``args.yaml``, or every checkpoint of the
            run is damaged (starting again would overwrite its weights), or no complete checkpoint of a run that
            fine-tunes a pruned model (``pruned``: its ``args["pruned"]``, written by ``vision prune``).
    """
    p = Path(target)
    if p.is_file():
        state = p.with_name("state.pt") if p.name == "weights.safetensors" else p
        state = state.with_name(state.name.replace(".safetensors", ".state.pt"))
        if not state.is_file():
            raise FileNotFoundError(f"resume={target}: {state} does not exist")
        return _run_of(state), state
    if _unit_key(p):
        try:
            return p.parents[2], verify_unit(p).state
        except ValueError as err:
            raise FileNotFoundError(f"resume={target}: the checkpoint is damaged ({err})") from None
    run = p.parent if p.name == "weights" and (p / UNITS).is_dir() else p
    weights = run / "weights"
    units = complete_units(weights, log=log)
    for tmp in sorted((weights / UNITS).glob(".tmp-*")) if log else []:
        log(f"resume: ignoring {tmp}, a save the run did not finish")
    if units:
        if log:
            log(f"resume: from checkpoint {units[0].describe()}")
        return run, units[0].state
    legacy = weights / "last.state.pt"
    if legacy.is_file() and not (weights / UNITS).is_dir():
        return run, legacy
    saved = [q for q in (weights / UNITS).iterdir() if _unit_key(q)] if (weights / UNITS).is_dir() else []
    if saved:  # checkpoints exist but none is intact: never start again over them
        newest = max(saved, key=_unit_key)  # type: ignore[arg-type]
        raise FileNotFoundError(
            f"resume={target}: all {len(saved)} checkpoints in {weights / UNITS} are damaged (newest, {newest.name}: "
            f"{_damage(newest)}); nothing resumed or overwritten: restore them, or train a new run without resume="
        )
    if pruned:
        raise pruned_restart_refused(target, run, pruned)
    if (run / "args.yaml").is_file():
        if log:
            log(
                f"resume: {run} has no complete checkpoint yet (the run stopped before its first save finished); "
                "starting it again from epoch 1 with its args.yaml"
            )
        return run, None
    raise FileNotFoundError(
        f"resume={target}: nothing to resume: no complete checkpoint in {weights / UNITS} and no args.yaml in {run}"
    )


def find_resume_state(target: str | os.PathLike[str], *, log: Log = None) -> Path:
    """The state file to resume ``target`` from (see :func:`locate_resume`).

    Raises:
        FileNotFoundError: the run has no complete checkpoint, naming what was looked for.
    """
    run, state = locate_resume(target, log=log)
    if state is None:
        raise FileNotFoundError(f"resume={target}: no complete checkpoint in {run / 'weights' / UNITS}")
    return state


def resume_args(target: str | os.PathLike[str]) -> dict[str, Any]:
    """The arguments of the run ``target`` resumes: from its newest complete checkpoint, else its ``args.yaml``.

    Raises:
        FileNotFoundError: as :func:`locate_resume`; also for a run without a complete checkpoint whose ``args.yaml``
            says it fine-tunes a pruned model (``pruned``).
    """
    import yaml

    run, state = locate_resume(target)
    if state is not None:
        args = dict(load_resume_state(state)["args"])
        if "pruned" not in args and (pruned := checkpoint_pruned(state)):  # saved before args kept it
            args["pruned"] = pruned
        return args
    args = dict(yaml.safe_load((run / "args.yaml").read_text(encoding="utf-8")) or {})
    if args.get("pruned"):
        raise pruned_restart_refused(target, run, args["pruned"])
    return args


def restore_views(state_file: str | os.PathLike[str]) -> None:
    """Point ``last.*`` (and ``best.safetensors`` when the unit was a best epoch) at the unit a resume starts from:
    a run killed between renaming a unit and replacing the views would otherwise keep stale ``last`` weights."""
    p = Path(state_file)
    if not _unit_key(p.parent) or p.parent.parent.name != UNITS:
        return
    unit = verify_unit(p.parent)
    weights_dir = p.parents[2]
    _place_view(unit.weights, weights_dir / "last.safetensors")
    _place_view(unit.state, weights_dir / "last.state.pt")
    if unit.best:
        _place_view(unit.weights, weights_dir / "best.safetensors")


def move_aside_old_run(path: str | os.PathLike[str], *, log: Log = print) -> Path | None:
    """Rename a run folder that already holds files to ``<name>.old-<timestamp>`` (``exist_ok=true`` then starts
    clean instead of mixing two runs or appending to the old ``metrics.csv``); returns the new name, if moved."""
    p = Path(path)
    if not p.is_dir() or not any(p.iterdir()):
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = p.with_name(f"{p.name}.old-{stamp}")
    for n in range(2, 10_000):
        if not aside.exists():
            break
        aside = p.with_name(f"{p.name}.old-{stamp}-{n}")
    os.rename(p, aside)
    if log:
        log(f"exist_ok=true: {p} held an earlier run; moved it to {aside}; this run starts clean")
    return aside


def load_resume_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a ``*.state.pt`` file safely (``weights_only=True``)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"resume state {path} could not be read (corrupt or not a vision-zoo state): {err}") from err
