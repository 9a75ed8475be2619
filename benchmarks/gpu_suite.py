#!/usr/bin/env python
"""The GPU proof of issue 18 in one command: every hot-path claim measured side by side on one GPU, one JSON and one
Markdown table written to ``--out``.

Parts, in order, each in its own subprocess with its own time budget under a hard overall limit (a part that runs out
of time is recorded as timed out and the suite goes on; a part whose peer package is missing is skipped with the
reason, and whatever of ours it could measure is kept):

1. ``pytest``  -- ``pytest -m gpu`` (Triton NMS on the device, GPU augmentation, bf16 against fp32);
2. ``nms``     -- ours against torchvision ``batched_nms`` / ``nms``: 16 x 8,400 x 80, 8 x 30,000 x 80, one class 20k
   and 100k; kept sets identical; ours captured in a CUDA graph;
3. ``augment`` -- GpuAugment at 640 px, batch 256, boxes + masks, against kornia's AugmentationSequential (same ops)
   and one albumentations CPU core;
4. ``rcnn``    -- Faster / Mask R-CNN R50-FPN against torchvision with the same seeded weights, batch 8 at 800 px;
5. ``yolo``    -- YOLO-n/s forward + NMS at batch 1 and 32 against ultralytics YOLOv8n/s; training images/s on BCCD;
6. ``engine``  -- the engine's ResNet-50 bf16 channels_last training step against a bare loop;
7. ``quality`` -- YOLO-n from scratch on BCCD (30 epochs, 640 px: mAP50-95 and time) and DDPM-s on digits (Fréchet
   distance against its held-out floor), both through ``tools/train.py``.

The exit code is 0 only when every target of the issue held (with ``--dry-run``: when every part ran or was skipped
with a reason; targets are not judged).

Usage::

    python benchmarks/gpu_suite.py --out results/ --dry-run              # toy sizes on the CPU (about 2 minutes)
    python benchmarks/gpu_suite.py --out results/ --parts nms augment --part-budget nms=60

On the GPU machine (no internet there): first, here, ``bash benchmarks/fetch_wheels.sh`` (wheels of
``benchmarks/wheels.txt`` into ``.whl/``) and ``mkdir -p .gpu_data && cp -r ../shared/data/bccd .gpu_data/`` (both
folders are git-ignored: carry them), then there::

    python3 benchmarks/gpu_suite.py --install-wheels .whl --bccd .gpu_data/bccd --out $OUT

``--install-wheels`` runs ``pip install --no-index --no-deps --target /tmp/gpu-suite-site .whl/*.whl`` and puts that
folder on every part's ``PYTHONPATH``; the overall limit (540 s) counts the install.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _gpu_suite
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # vision

from _gpu_suite import common, targets
from _gpu_suite.report import markdown

#: ``name -> (title, module, function, GPU budget s, dry-run budget s)``; the order is the run order
PARTS: dict[str, tuple[str, str, str, float, float]] = {
    "pytest": ("pytest -m gpu", "parts_a", "part_pytest", 30, 40),
    "nms": ("NMS vs torchvision batched_nms", "parts_a", "part_nms", 40, 30),
    "augment": ("Augmentation vs kornia / albumentations", "parts_a", "part_augment", 35, 30),
    "rcnn": ("Faster / Mask R-CNN vs torchvision", "parts_b", "part_rcnn", 40, 60),
    "yolo": ("YOLO-n/s vs ultralytics", "parts_b", "part_yolo", 80, 60),
    "engine": ("Engine step vs bare loop", "parts_b", "part_engine", 15, 30),
    "quality": ("Quality: YOLO-n on BCCD, DDPM-s on digits", "parts_b", "part_quality", 300, 90),
}
SCHEMA = "vision-zoo/gpu-suite/1"
DEFAULT_SITE = "/tmp/gpu-suite-site"


# ------------------------------------------------------------------------------------------------------------ child
def run_child(config_path: str) -> int:
    """Run one part in this process (the suite starts one process per part); its numbers go to the result file."""
    import importlib

    cfg = json.loads(Path(config_path).read_text(encoding="utf-8"))
    ctx = common.PartContext(
        name=cfg["name"], dry_run=cfg["dry_run"], device=cfg["device"],
        deadline=time.monotonic() + float(cfg["budget"]), workdir=Path(cfg["workdir"]),
        result_path=Path(cfg["result_path"]), bccd=cfg.get("bccd"),
    )  # fmt: skip
    ctx.save()
    _, module, function, *_ = PARTS[ctx.name]
    try:
        getattr(importlib.import_module(f"_gpu_suite.{module}"), function)(ctx)
    except Exception as err:  # the part as a whole failed: recorded, the suite goes on
        trace = traceback.format_exc()
        print(trace, flush=True)
        ctx.errors["part"] = f"{type(err).__name__}: {err}"[:2000] + "\n" + trace[-1500:]
        ctx.save()
        return 1
    return 0


# ------------------------------------------------------------------------------------------------------------ parent
def install_wheels(folder: str, site: str, log: Any) -> dict[str, Any]:
    """``pip install --no-index --no-deps --target site folder/*.whl``; the site then goes first on the path."""
    wheels = sorted(str(p) for p in Path(folder).glob("*.whl"))
    if not wheels:
        return {"folder": folder, "installed": 0, "error": f"no wheels in {folder}"}
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
           "--upgrade", "--target", site, *wheels]  # fmt: skip
    proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=300)
    if proc.returncode:
        return {"folder": folder, "installed": 0, "error": f"pip exited {proc.returncode} (see the log)"}
    sys.path.insert(0, site)
    return {"folder": folder, "installed": len(wheels), "site": site}


def child_env(args: argparse.Namespace, site: str | None) -> dict[str, str]:
    """The environment of every part: this checkout (and the wheel site) first on PYTHONPATH, nothing downloaded."""
    env = dict(os.environ)
    paths = [str(common.ROOT)] + ([site] if site else []) + [p for p in env.get("PYTHONPATH", "").split(":") if p]
    env.update(PYTHONPATH=":".join(paths), PYTHONUNBUFFERED="1", VISION_OFFLINE="1", YOLO_OFFLINE="1",
               NO_ALBUMENTATIONS_UPDATE="1", YOLO_VERBOSE="false")  # fmt: skip
    if args.bccd:
        env["VISION_BCCD"] = str(Path(args.bccd).resolve())
    if args.dry_run:  # the CPU, one thread per process: the dry run must not stall a shared CI machine
        env.update(CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def run_part(name: str, budget: float, args: argparse.Namespace, workdir: Path, env: dict, log: Any) -> dict:
    """Run part ``name`` in a subprocess killed after ``budget`` seconds; its record for the report."""
    title = PARTS[name][0]
    record: dict[str, Any] = {"name": name, "title": title, "budget_s": budget, "seconds": 0.0, "status": "ran",
                              "reason": None, "numbers": {}, "errors": {}, "skipped": {}}  # fmt: skip
    if budget < 5:
        record.update(status="timeout", reason="not started: no time left in the overall budget")
        return record
    part_dir = workdir / name
    part_dir.mkdir(parents=True, exist_ok=True)
    result_path = part_dir / "result.json"
    config = {"name": name, "dry_run": args.dry_run, "device": args.device, "budget": budget - 2,
              "workdir": str(part_dir), "result_path": str(result_path), "bccd": env.get("VISION_BCCD")}  # fmt: skip
    (part_dir / "config.json").write_text(json.dumps(config), encoding="utf-8")
    log.write(f"\n===== part {name}: {title} (budget {budget:.0f} s) =====\n")
    log.flush()
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, __file__, "--child", str(part_dir / "config.json")], cwd=common.ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    timed_out = False
    try:
        rc = proc.wait(timeout=budget)
    except subprocess.TimeoutExpired:
        timed_out = True
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)  # the part's own process group: its training subprocesses too
                rc = proc.wait(timeout=wait)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                rc = -9
    record["seconds"] = time.monotonic() - t0
    if result_path.is_file():
        try:
            record.update(json.loads(result_path.read_text(encoding="utf-8")))
        except json.JSONDecodeError as err:
            record["errors"]["result"] = f"unreadable result file: {err}"
    if timed_out:
        record.update(status="timeout", reason=f"ran out of its {budget:.0f} s budget (numbers so far are kept)")
    elif record["errors"] or rc:
        first = next(iter(record["errors"].items()), ("part", f"exited {rc} without a result (see the log)"))
        record["errors"].setdefault(*first)
        record.update(status="error", reason=f"{first[0]}: {first[1].splitlines()[0]}")
    elif record["skipped"]:
        record.update(status="skipped", reason="; ".join(f"{k}: {v}" for k, v in record["skipped"].items()))
    log.write(f"===== part {name}: {record['status']} in {record['seconds']:.1f} s =====\n")
    log.flush()
    return record


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (``--child CONFIG`` is the internal per-part entry)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="folder for gpu_suite.json, gpu_suite.md and gpu_suite.log")
    parser.add_argument("--dry-run", action="store_true", help="every part at toy sizes on the CPU")
    parser.add_argument("--budget", type=float, default=None, help="hard overall limit, s (540; dry run 240)")
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS), help="parts to run, in order")
    parser.add_argument("--part-budget", action="append", default=[], metavar="NAME=S", help="a part's budget, s")
    parser.add_argument("--install-wheels", metavar="DIR", help="first pip-install DIR/*.whl (--no-index) into --site")
    parser.add_argument("--site", default=DEFAULT_SITE, help="where --install-wheels installs")
    parser.add_argument("--bccd", default=None, help="the BCCD folder (default: found like vision.data.find_bccd)")
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one, removed after)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.child and not args.out:
        parser.error("--out is required")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the suite; the exit code says whether every target held (dry run: whether every part ran or skipped)."""
    args = parse_args(argv)
    if args.child:
        return run_child(args.child)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started, t0 = common.now_iso(), time.monotonic()
    overall = args.budget or (240.0 if args.dry_run else 540.0)
    budgets = {name: float(spec[4 if args.dry_run else 3]) for name, spec in PARTS.items()}
    for item in args.part_budget:
        name, _, value = item.partition("=")
        if name not in PARTS:
            raise SystemExit(f"--part-budget: unknown part {name!r}")
        budgets[name] = float(value)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="gpu-suite-"))
    with open(out / "gpu_suite.log", "w", encoding="utf-8") as log:
        wheels = install_wheels(args.install_wheels, args.site, log) if args.install_wheels else None
        site = wheels.get("site") if wheels else None
        import torch

        args.device = "cuda" if torch.cuda.is_available() and not args.dry_run else "cpu"
        if args.bccd is None:
            try:
                from vision.data import find_bccd

                args.bccd = str(find_bccd())
            except FileNotFoundError:
                args.bccd = None
        env = child_env(args, site)
        parts = []
        for name in args.parts:
            left = overall - (time.monotonic() - t0)
            record = run_part(name, min(budgets[name], left), args, workdir, env, log)
            parts.append(record)
            print(f"[{name}] {record['status']} in {record['seconds']:.1f} s"
                  + (f": {record['reason']}" if record["reason"] else ""), flush=True)  # fmt: skip
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    selected = tuple(t for t in targets.TARGETS if t.part in args.parts)
    rows = targets.judge({p["name"]: p["numbers"] for p in parts}, dry_run=args.dry_run, targets=selected)
    if args.dry_run:
        ok = all(p["status"] == "ran" or (p["status"] == "skipped" and p["reason"]) for p in parts)
        summary = "every part ran or was skipped with a reason" if ok else "a part failed or timed out"
    else:
        ok = targets.all_held(rows)
        held = sum(r["held"] is True for r in rows)
        summary = f"{held} of {len(rows)} targets held"
    report = {
        "schema": SCHEMA, "dry_run": args.dry_run, "date": started, "device": common.device_info(args.dry_run),
        "versions": common.versions(), "git": common.git_info(), "wheels": wheels, "bccd": args.bccd,
        "budget_s": overall, "wall_s": time.monotonic() - t0, "parts": parts, "targets": rows,
        "all_held": None if args.dry_run else ok, "exit_code": 0 if ok else 1, "summary": summary,
    }  # fmt: skip
    common.write_json_atomic(out / "gpu_suite.json", report)
    (out / "gpu_suite.md").write_text(markdown(report), encoding="utf-8")
    print(f"{summary}; wrote {out / 'gpu_suite.json'} and {out / 'gpu_suite.md'}", flush=True)
    return report["exit_code"]


if __name__ == "__main__":
    raise SystemExit(main())
