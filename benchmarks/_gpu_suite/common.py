"""What every part of the GPU suite shares: its context (device, sizes, budget, where results go), loading the
benchmark scripts of ``benchmarks/`` as modules, and the environment description of the report."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

BENCHMARKS = Path(__file__).resolve().parents[1]
ROOT = BENCHMARKS.parent

#: packages whose versions the report lists (distribution names)
VERSIONED = (
    "torch",
    "torchvision",
    "timm",
    "triton",
    "numpy",
    "opencv-python-headless",
    "pycocotools",
    "albumentations",
    "albucore",
    "kornia",
    "ultralytics",
    "polars",
    "scikit-image",
    "scikit-learn",
)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` through a temporary file and a rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


@dataclass
class PartContext:
    """What a part gets: the run's settings, and where it records what it measured.

    Attributes:
        name: the part's name (``nms``, ``augment``, ...).
        dry_run: toy sizes on the CPU.
        device: ``"cuda"`` or ``"cpu"``.
        deadline: ``time.monotonic()`` value after which the part is killed.
        workdir: a scratch folder of the part.
        result_path: the JSON file the part's numbers are written to after every :meth:`record`.
        bccd: the BCCD folder, or ``None`` when it was not found.
        numbers: what the part measured so far (nested dicts of plain values).
        errors: failed sub-measurements, ``name -> message``.
        skipped: reasons why sub-measurements (a missing peer package, no CUDA) were not made.
    """

    name: str
    dry_run: bool
    device: str
    deadline: float
    workdir: Path
    result_path: Path
    bccd: str | None = None
    numbers: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        """Whether the part runs on a CUDA device."""
        return self.device == "cuda"

    def remaining(self) -> float:
        """Seconds left before the part's deadline."""
        return self.deadline - time.monotonic()

    def record(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key`` (dots make nested dicts) and save the part's result file."""
        node = self.numbers
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
        self.save()

    def skip(self, key: str, reason: str) -> None:
        """Note that ``key`` was not measured, and why."""
        self.skipped[key] = reason
        self.save()

    def attempt(self, key: str, fn: Callable[[], Any]) -> Any:
        """Run ``fn``; on an exception record it under ``key`` in :attr:`errors` and return ``None``."""
        try:
            return fn()
        except Exception as err:  # one failed measurement never stops the part
            tail = "".join(traceback.format_exception(err)[-3:]).strip()
            self.errors[key] = f"{type(err).__name__}: {err}"[:2000] + f"\n{tail[-1500:]}"
            self.save()
            return None

    def as_dict(self) -> dict[str, Any]:
        """The part's result as written to :attr:`result_path`."""
        return {"numbers": self.numbers, "errors": self.errors, "skipped": self.skipped}

    def save(self) -> None:
        """Write :meth:`as_dict` to :attr:`result_path` (atomically: a kill never leaves half a file)."""
        write_json_atomic(self.result_path, self.as_dict())


def missing(*modules: str) -> str | None:
    """``None`` when every module can be imported, else a reason naming the first missing one."""
    for m in modules:
        if importlib.util.find_spec(m) is None:
            return f"peer package {m!r} is not installed (see benchmarks/wheels.txt)"
    return None


def load_bench(name: str) -> ModuleType:
    """Import ``benchmarks/<name>.py`` as the module ``bench_<name>`` (the scripts are no package)."""
    key = f"bench_{name}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, BENCHMARKS / f"{name}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load benchmarks/{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    spec.loader.exec_module(module)
    return module


def sync(device: str) -> None:
    """Wait for the device's queued work (no-op on the CPU)."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def versions() -> dict[str, str | None]:
    """Installed versions of :data:`VERSIONED` (``None`` when absent) and Python's."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in VERSIONED:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def device_info(dry_run: bool) -> dict[str, Any]:
    """The device the suite measures on: name, CUDA and driver versions, memory, CPU count."""
    import torch

    info: dict[str, Any] = {"cpu_count": os.cpu_count(), "cpu": platform.processor() or platform.machine()}
    if torch.cuda.is_available() and not dry_run:
        props = torch.cuda.get_device_properties(0)
        info.update(
            name=torch.cuda.get_device_name(0),
            cuda=torch.version.cuda,
            capability=f"{props.major}.{props.minor}",
            memory_gib=round(props.total_memory / 2**30, 1),
            multiprocessors=props.multi_processor_count,
        )
        try:
            smi = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
            )
            info["driver"] = smi.stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            info["driver"] = None
    else:
        info["name"] = f"CPU ({info['cpu']}, {info['cpu_count']} cores)"
    return info


def git_info() -> dict[str, Any]:
    """The checkout's commit and whether it has uncommitted changes (``None`` without git)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if head.returncode:
        return {"commit": None, "dirty": None}
    return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def now_iso() -> str:
    """The current UTC time, ISO 8601, to the second."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
