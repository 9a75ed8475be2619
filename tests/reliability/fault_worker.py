"""Fault-injection worker of ``test_fault_injection.py`` (run as a script, never imported by pytest).

One process imports torch and vision once and installs counting hooks: one event per optimiser step and metrics
row, and several per checkpoint write (before a file, after half its bytes, after it, before each rename, view and
prune). Each training attempt is a forked child, so every attempt starts from the same imports and the parent never
runs torch itself. An uninterrupted run records the events and gives the reference weights; then each trial starts a
run that SIGKILLs itself at a chosen event (a half-written file is left behind) or when a timer fires, and resumes the
leftover folder (sometimes killing the resume too) to the end. Prints one JSON line: the reference events and a
record per trial.

Usage: ``python fault_worker.py '<json config>'`` with ``plugin``, ``project``, ``args``, ``seed``, ``writer_kills``,
``step_kills``, ``timer_kills``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

STATE: dict[str, Any] = {"n": 0, "target": -1, "events": None}


def tick(label: str, partial: Callable[[], None] | None = None) -> None:
    """Count an event; SIGKILL this process at the target one (after ``partial``, e.g. writing half a file)."""
    STATE["n"] += 1
    if STATE["events"] is not None:
        STATE["events"].append(label)
    if STATE["n"] == STATE["target"]:
        if partial is not None:
            partial()
        os.kill(os.getpid(), signal.SIGKILL)


def install_hooks() -> None:
    from vision.engine import checkpoint as C
    from vision.engine.reporting import MetricsLogger
    from vision.engine.trainer import Trainer

    write_file, place_view, prune, rename = C._write_file, C._place_view, C._prune, os.rename
    step, log = Trainer._optimizer_step, MetricsLogger.log

    def hooked_write(path: Path, data: bytes | memoryview) -> None:
        def half() -> None:
            with open(path, "wb") as f:
                f.write(bytes(data[: len(data) // 2]))

        tick(f"write {path.name}")
        tick(f"half {path.name}", half)
        write_file(path, data)
        tick(f"wrote {path.name}")

    def hooked_rename(src: Any, dst: Any) -> None:
        tick(f"rename {Path(dst).name}")
        rename(src, dst)

    def hooked_view(source: Path, view: Path) -> None:
        tick(f"view {view.name}")
        place_view(source, view)

    def hooked_prune(*args: Any) -> None:
        tick("prune")
        prune(*args)

    def hooked_step(self: Any) -> None:
        step(self)
        tick("step")

    def hooked_log(self: Any, row: Any) -> None:
        log(self, row)
        tick("metrics row")

    C._write_file, C._place_view, C._prune, os.rename = hooked_write, hooked_view, hooked_prune, hooked_rename
    Trainer._optimizer_step, MetricsLogger.log = hooked_step, hooked_log


def attempt(argv: list[str], log: Path, *, target: int = -1, alarm: float = 0.0, record: Path | None = None) -> int:
    """Train in a forked child; its exit code (-9: killed). ``record``: write the child's event labels there."""
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            STATE.update(n=0, target=target, events=[] if record else None)
            if alarm:
                signal.signal(signal.SIGALRM, lambda *_: os.kill(os.getpid(), signal.SIGKILL))
                signal.setitimer(signal.ITIMER_REAL, alarm)
            from vision.engine.config import resolve_args
            from vision.engine.trainer import Trainer

            Trainer(resolve_args(argv)).fit()
            if record is not None:
                record.write_text(json.dumps(STATE["events"]))
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def compare(reference: Path, run: Path) -> list[str]:
    """Differences between a finished run and the reference run (empty: bit-identical)."""
    import csv

    import torch
    from safetensors.torch import load_file

    problems = []
    for name in ("last.safetensors", "best.safetensors"):
        try:
            a, b = load_file(reference / "weights" / name), load_file(run / "weights" / name)
        except Exception as err:
            problems.append(f"{name}: {err}")
            continue
        if a.keys() != b.keys() or any(not torch.equal(a[k], b[k]) for k in a):
            problems.append(f"{name} differs from the uninterrupted run")
    try:
        rows = list(csv.DictReader((run / "metrics.csv").read_text().splitlines()))
        ref_rows = list(csv.DictReader((reference / "metrics.csv").read_text().splitlines()))
        if [r["epoch"] for r in rows] != [r["epoch"] for r in ref_rows]:
            problems.append(f"metrics.csv epochs {[r['epoch'] for r in rows]}")
    except OSError as err:
        problems.append(f"metrics.csv: {err}")
    leftovers = [str(p.relative_to(run)) for p in (run / "weights").rglob("*") if ".tmp" in p.name]
    if leftovers:
        problems.append(f"leftovers {leftovers}")
    return problems


def main() -> None:
    cfg = json.loads(sys.argv[1])
    sys.path.insert(0, cfg["plugin"])
    import vz_testmodels  # noqa: F401  (registers tiny_convnet)
    from sklearn.datasets import load_digits

    load_digits()  # warm the data once, before any fork
    install_hooks()
    project = Path(cfg["project"])
    logs = project / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    base = [*cfg["args"], f"project={project}"]
    root = project / "classification"

    t0 = time.perf_counter()
    code = attempt([*base, "name=ref"], logs / "ref.log", record=logs / "events.json")
    ref_seconds = time.perf_counter() - t0
    if code != 0:
        print(json.dumps({"error": f"reference run failed ({code}): {(logs / 'ref.log').read_text()[-3000:]}"}))
        return
    labels = json.loads((logs / "events.json").read_text())
    rng = random.Random(cfg["seed"])
    in_writer = [i + 1 for i, label in enumerate(labels) if label not in ("step", "metrics row")]
    elsewhere = [i + 1 for i, label in enumerate(labels) if label in ("step", "metrics row")]
    between = [i + 1 for i, label in enumerate(labels) if label == "wrote weights.safetensors"]
    chosen = {between[0], between[len(between) // 2]}  # killed between the weights and the state file
    chosen |= set(rng.sample([i for i in in_writer if i not in chosen], cfg["writer_kills"] - len(chosen)))
    chosen |= set(rng.sample(elsewhere, cfg["step_kills"]))
    trials: list[dict[str, Any]] = [{"event": t, "label": labels[t - 1]} for t in sorted(chosen)]
    trials += [{"alarm": round(rng.uniform(0.3, 1.0) * ref_seconds, 3)} for _ in range(cfg["timer_kills"])]

    results = []
    for k, trial in enumerate(trials):
        name = f"t{k:02d}"
        run, log = root / name, logs / f"{name}.log"
        first = attempt([*base, f"name={name}"], log, target=trial.get("event", -1), alarm=trial.get("alarm", 0.0))
        record = {**trial, "name": name, "exit": first, "kills": int(first == -signal.SIGKILL), "problems": []}
        if "event" in trial and first != -signal.SIGKILL:
            record["problems"].append(f"the run was not killed at event {trial['event']} (exit {first})")
        if not (run / "args.yaml").is_file():  # killed before the run folder was written: nothing to resume
            record["fresh_start"] = True
            code = attempt([*base, f"name={name}", "exist_ok=true"], log)
        else:
            code = -signal.SIGKILL
            for _ in range(3):  # sometimes the resume is killed too, at a random early event
                target = rng.randint(1, 40) if rng.random() < 0.25 else -1
                code = attempt([f"resume={run}"], log, target=target)
                if code != -signal.SIGKILL:
                    break
                record["kills"] += 1
        if code != 0:
            record["problems"].append(f"resume exited {code}: {log.read_text()[-2000:]}")
        else:
            record["problems"] += compare(root / "ref", run)
        said = [line[line.index("resume:") :] for line in log.read_text().splitlines() if "resume:" in line]
        record["resume_said"] = said[:3]
        results.append(record)
    print(json.dumps({"events": len(labels), "ref_seconds": ref_seconds, "trials": results}))


if __name__ == "__main__":
    main()
