"""A benchmark side in its own Python process (:class:`_timing.Remote`, :func:`_timing.call_in_process`).

Run as ``python _worker.py``: the first line on stdin is a JSON spec ``{"module", "function", "kwargs", "threads",
"first", "once"}``: the modules named in ``first`` are imported before anything else (``vision`` for our side, so
that its OpenMP and heap settings apply as they do for a user), then ``torch.set_num_threads(threads)``, then
``module.function(**kwargs)`` runs. With ``once`` its JSON result is the answer and the worker ends. Otherwise it
returns the call to time: the worker answers ``ready``, each later ``run`` line calls it once and answers the seconds
it took (``time.perf_counter``, after a CUDA synchronisation when CUDA is in use), and any other line or the end of
stdin ends it. Whatever the side prints goes to stderr, so stdout carries only answers.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import sys
import time


def main() -> None:
    spec = json.loads(sys.stdin.readline())
    for name in spec.get("first", []):
        importlib.import_module(name)
    import torch

    torch.set_num_threads(int(spec["threads"]))
    answer = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):
        fn = getattr(importlib.import_module(spec["module"]), spec["function"])(**spec.get("kwargs", {}))
        if spec.get("once"):
            print(json.dumps(fn), file=answer, flush=True)
            return
        sync = torch.cuda.synchronize if torch.cuda.is_available() and torch.cuda.is_initialized() else (lambda: None)
        print("ready", file=answer, flush=True)
        for line in sys.stdin:
            if line.strip() != "run":
                break
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            print(time.perf_counter() - t0, file=answer, flush=True)


if __name__ == "__main__":
    main()
